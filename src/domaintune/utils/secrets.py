"""Secrets never reach a file DomainTune or Hydra writes: saved configs, logs, reports, W&B/CSV config.

Two kinds are recognised: config keys whose name says they hold one (`api_key`, `hf_token`, `password`...),
and the values of environment variables named like one (`WANDB_API_KEY`, `HF_TOKEN`, any `*_TOKEN`,
`*_KEY`, `*_SECRET`, `*_PASSWORD`), wherever such a value turns up in text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

REDACTED = "***"
SECRET_NAME = re.compile(r"(^|_)(token|key|secret|password|passwd)$", re.IGNORECASE)
SECRET_ENV = re.compile(r"(_|^)(TOKEN|KEY|SECRET|PASSWORD)$|^WANDB_API_KEY$|^HF_TOKEN$")
_NAMES = r"(?:token|key|secret|password|passwd)"
# the secret word must start the key or follow `_` / `.` (so `monkey:` is not a key)
KEY_LINE = re.compile(rf"^(\s*-?\s*(?:[\w.+~]*[_.])?{_NAMES}\s*:\s*)(\S.*)$", re.IGNORECASE | re.MULTILINE)
KEY_OVERRIDE = re.compile(rf"((?<![\w])[+~]?(?:[\w.]*[_.])?{_NAMES}=)([^\s'\",\]]+)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8  # shorter env values (flags like "1") would redact ordinary text


def secret_values() -> list[str]:
    """Values of secret-named environment variables, longest first (so no secret is half-replaced)."""
    found = {v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(found, key=len, reverse=True)


def scrub_text(text: str, values: list[str] | None = None) -> str:
    for value in secret_values() if values is None else values:
        text = text.replace(value, REDACTED)
    return text


def redact(obj: Any, values: list[str] | None = None) -> Any:
    """A copy of a plain config (dicts, lists, scalars) with secret-named keys and secret values masked."""
    values = secret_values() if values is None else values
    if isinstance(obj, dict):
        return {k: REDACTED if SECRET_NAME.search(str(k)) and obj[k] else redact(v, values) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, values) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, values)
    return obj


def scrub_saved_config(folder: Path) -> None:
    """Rewrite Hydra's saved config files (.hydra/*.yaml) without secrets: Hydra writes them before any task
    code runs, verbatim, CLI overrides (`+hf_token=...`) included."""
    values = secret_values()
    for path in (folder / ".hydra").glob("*.yaml"):
        text = path.read_text()
        clean = scrub_text(text, values)
        # `key: value` lines and `key=value` overrides whose key names a secret
        clean = KEY_LINE.sub(rf"\g<1>{REDACTED}", clean)
        clean = KEY_OVERRIDE.sub(rf"\g<1>{REDACTED}", clean)
        if clean != text:
            path.write_text(clean)
