"""One place for user-facing errors.

Every problem a user can fix (a bad file, a wrong field name, an unknown option, a model that cannot be
loaded offline) is raised as a :class:`DomainTuneError` whose message is one paragraph saying what is
wrong and how to fix it. Entry points print that paragraph instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainTuneError(Exception):
    """An error the user can fix; the message names the problem and the fix."""

    def __init__(self, what: str, fix: str | None = None):
        self.what = what.strip()
        self.fix = fix.strip() if fix else None
        super().__init__(self.what + (f" {self.fix}" if self.fix else ""))

    def paragraph(self) -> str:
        """The message as one unwrapped paragraph (terminals wrap it; paths and options stay greppable)."""
        return " ".join(str(self).split())


def choices(options: Iterable[str]) -> str:
    return ", ".join(f"'{o}'" for o in sorted(options))


def unknown_option(kind: str, value: str, options: Iterable[str], how: str) -> DomainTuneError:
    return DomainTuneError(
        f"Unknown {kind} '{value}'. Known {kind}s: {choices(options)}.",
        how,
    )


def unread_keys(where: str, unknown: Iterable[str], known: Iterable[str]) -> DomainTuneError:
    """A config node holds keys no class reads (a misspelling, a stale key): named with the keys it takes."""
    return DomainTuneError(
        f"{where} has keys that nothing reads: {choices(unknown)}.",
        f"Remove them or fix their spelling; {where} takes {choices(known)} (conf/ documents each key).",
    )
