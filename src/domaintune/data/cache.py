"""Stage: the prepared-data cache, one JSON file per fingerprint (never pickle: a cache file from elsewhere
must not be able to run code). Written atomically under a file lock by the DataModule; a damaged file is
reported and rebuilt, never trusted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domaintune.data.audit_report import Audit
from domaintune.utils.files import write_atomic
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

Splits = dict[str, list[dict[str, Any]]]


def read_prepared(cache: Path) -> tuple[Splits, Splits, Audit] | None:
    """(records, examples, audit) from the cache file, or None (and the file removed) when it is damaged."""
    try:
        state = json.loads(cache.read_text())
        return state["records"], state["examples"], Audit.from_dict(state["audit"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(f"The data cache {cache} is damaged ({type(exc).__name__}: {exc}); rebuilding it")
        cache.unlink()
        return None


def write_prepared(cache: Path, records: Splits, examples: Splits, audit: Audit) -> None:
    write_atomic(cache, json.dumps({"records": records, "examples": examples, "audit": audit.to_dict()}))
