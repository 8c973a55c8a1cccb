"""Preprocessing steps and the audit that accounts for every record.

Each step takes the records of one split and returns the ones it keeps; the `Audit` records, per split
and step, how many went in and out, why each removed record was removed, how many were changed, and a few
examples. `Audit.check()` proves the counts add up, so nothing leaves the pipeline unaccounted for.
"""

from __future__ import annotations

import html
import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ftfy
from omegaconf import DictConfig

from domaintune.data.formats import RecordProblem, Task
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError, unknown_option

Record = dict[str, Any]
MAX_EXAMPLES = 3


@dataclass
class StepReport:
    step: str
    records_in: int
    records_out: int
    removed: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "in": self.records_in,
            "out": self.records_out,
            "removed": dict(self.removed),
            "changed": self.changed,
            "examples": self.examples,
        }


class Audit:
    """Per split, the ordered list of steps with their counts."""

    def __init__(self) -> None:
        self.splits: dict[str, list[StepReport]] = {}
        self.notes: list[str] = []

    def add(self, split: str, report: StepReport) -> None:
        self.splits.setdefault(split, []).append(report)

    def check(self) -> None:
        """Raise if any step's counts do not add up (a bug, never a user error)."""
        for split, steps in self.splits.items():
            for prev, cur in itertools.pairwise(steps):
                assert prev.records_out == cur.records_in, f"{split}: {prev.step} -> {cur.step} count mismatch"
            for s in steps:
                assert s.records_in - sum(s.removed.values()) == s.records_out, f"{split}/{s.step} does not add up"

    def summary(self) -> dict[str, dict[str, int]]:
        return {split: {"in": steps[0].records_in, "out": steps[-1].records_out} for split, steps in self.splits.items() if steps}

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": {split: [s.to_dict() for s in steps] for split, steps in self.splits.items()},
            "summary": self.summary(),
            "notes": self.notes,
        }


def run_step(
    audit: Audit,
    split: str,
    step: str,
    records: list[Record],
    fn: Callable[[Record], Record],
    track_changes: bool = True,
) -> list[Record]:
    """Apply a per-record step. `fn` returns the (possibly new) record, or raises RecordProblem to drop it.

    With `track_changes`, records that come back different are counted as changed (with examples).
    """
    report = StepReport(step, len(records), 0)
    removed: Counter[str] = Counter()
    kept = []
    for rec in records:
        try:
            new = fn(rec)
        except RecordProblem as problem:
            removed[problem.reason] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append({"record": rec.get("_src", "?"), "removed": f"{problem.reason}: {problem}"})
            continue
        if track_changes and new is not rec and _visible(new) != _visible(rec):
            report.changed += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append({"record": rec.get("_src", "?"), "changed": _diff(rec, new)})
        kept.append(new)
    report.removed = dict(removed)
    report.records_out = len(kept)
    audit.add(split, report)
    return kept


def _visible(rec: Record) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _diff(old: Record, new: Record, width: int = 100) -> str:
    for key in new:
        if not key.startswith("_") and old.get(key) != new.get(key):
            return f"{key}: {str(old.get(key))[:width]!r} -> {str(new.get(key))[:width]!r}"
    return ""


# ---------------------------------------------------------------------------------------------- cleaning
# Only real HTML tag names are stripped: a generic `<...>` pattern or an HTML parser would also eat text
# such as "<N layers" in scientific abstracts, so this small whitelist is written by hand on purpose.
_BREAK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6]|hr)\s*/?\s*>", re.IGNORECASE)
_HTML_TAGS = re.compile(
    r"</?\s*(?:a|abbr|b|big|blockquote|br|center|code|div|em|font|h[1-6]|hr|i|img|li|ol|p|pre|small|span|strong|"
    r"sub|sup|table|tbody|td|th|thead|tr|u|ul)(?:\s[^<>]*)?/?\s*>",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str, unicode: bool, html_markup: bool, whitespace: bool) -> str:
    if unicode:
        text = ftfy.fix_text(text, unescape_html=False)
    if html_markup:
        text = _HTML_TAGS.sub(" ", _BREAK_TAGS.sub("\n", text))
        text = html.unescape(text)
    if whitespace:
        lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        text = _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    return text


def _map_text(rec: Record, names: list[str], fn: Callable[[str], str]) -> Record:
    """Apply fn to every text a record carries in `names` (strings, lists of strings, dicts, messages)."""
    out = dict(rec)
    for name in names:
        value = rec.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
        elif isinstance(value, dict):
            out[name] = {k: fn(v) for k, v in value.items()}
        elif isinstance(value, list):
            out[name] = [{**m, "content": fn(m["content"])} if isinstance(m, dict) else fn(m) for m in value]
    return out


def _all_text_fields(task: Task) -> list[str]:
    return [n for n in task.fields if n != "label"]


def _check_not_empty(task: Task) -> Callable[[Record], Record]:
    def check(rec: Record) -> Record:
        for name in task.spec.required:
            value = rec.get(name)
            if value in (None, "", [], {}) or (isinstance(value, dict) and not any(value.values())):
                raise RecordProblem(f"empty_{name}", f"'{name}' is empty after cleaning")
            if name == "messages" and any(not m["content"].strip() for m in value if m["role"] == "assistant"):
                raise RecordProblem("empty_messages", "an assistant turn is empty after cleaning")
        return rec

    return check


# ---------------------------------------------------------------------------------------------- dedup
def dedup_key(rec: Record) -> str:
    """What makes two records the same example: all their visible fields, case- and space-folded."""
    parts = []
    for k in sorted(rec):
        if k.startswith("_") or k == "references":
            continue
        v = rec[k]
        parts.append(f"{k}={v if isinstance(v, str) else repr(v)}")
    return " ".join("\n".join(parts).lower().split())


def _exact_dedup(
    audit: Audit, split: str, records: list[Record], seen: set[str] | None = None, step: str = "dedup_exact"
) -> list[Record]:
    local: set[str] = set()

    def check(rec: Record) -> Record:
        key = dedup_key(rec)
        if seen is not None and key in seen:
            raise RecordProblem("duplicate_of_train", "the same example is in the training split")
        if seen is None:
            if key in local:
                raise RecordProblem("exact_duplicate", "an identical example came earlier in this split")
            local.add(key)
        return rec

    return run_step(audit, split, step, records, check)


# ---------------------------------------------------------------------------------------------- pipeline
TOO_LONG = ("truncate", "drop")


class Preprocessor:
    """Runs the configured steps over all splits, in order, recording each in the audit."""

    def __init__(self, cfg: DictConfig | dict[str, Any], task: Task):
        self.cfg = to_dict(cfg)
        self.task = task
        if self.cfg.get("too_long", "truncate") not in TOO_LONG:
            raise unknown_option("data.preprocess.too_long", self.cfg["too_long"], TOO_LONG, "Use truncate or drop.")

    def run(self, splits: dict[str, list[Record]], audit: Audit, on_error: str = "raise") -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for split, records in splits.items():
            out[split] = self._per_split(split, records, audit, on_error)
        if self.cfg.get("leakage", True) and "train" in out:
            train_keys = {dedup_key(r) for r in out["train"]}
            for split in out:
                if split != "train":
                    out[split] = _exact_dedup(audit, split, out[split], seen=train_keys, step="leakage")
        for split, records in out.items():
            if not records:
                raise DomainTuneError(
                    f"The {split} split is empty after preprocessing (see the audit above for what removed its records).",
                    "Check data.task.fields and the data files, or relax data.preprocess (dedup, drop steps).",
                )
        return out

    def _per_split(self, split: str, records: list[Record], audit: Audit, on_error: str) -> list[Record]:
        cfg, task = self.cfg, self.task

        def select(rec: Record) -> Record:
            try:
                return task.select(rec)
            except RecordProblem as problem:
                if on_error == "raise" and problem.reason in ("wrong_type", "label_not_in_set", "no_assistant_turn"):
                    raise DomainTuneError(
                        f"Record {rec.get('_src', '?')} cannot be used: {problem}.",
                        "Fix the record, map the right column with data.task.fields, or set data.on_error=skip "
                        "to skip such records (they are counted in the audit).",
                    ) from None
                raise

        records = run_step(audit, split, "fields", records, select, track_changes=False)
        names = _all_text_fields(task)
        if cfg.get("unicode", True) or cfg.get("html", True) or cfg.get("whitespace", True):
            clean = lambda text: clean_text(text, cfg.get("unicode", True), cfg.get("html", True), cfg.get("whitespace", True))
            records = run_step(audit, split, "clean", records, lambda r: _map_text(r, names, clean))
        records = run_step(audit, split, "drop_empty", records, _check_not_empty(task))
        if cfg.get("dedup", True):
            records = _exact_dedup(audit, split, records)
        return records
