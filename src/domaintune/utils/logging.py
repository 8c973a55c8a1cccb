"""Logging that works the same under Hydra, Lightning and plain scripts."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any


def _on_rank_zero(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Call `fn` only on global rank zero. Lightning is imported at the first log call, not at import time:
    the entry points (train.py, the scripts) then start without torch and Lightning, so `--help`, `--cfg` and
    config errors answer at once. Lightning sets `rank_zero_only.rank` when its processes start."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        from pytorch_lightning.utilities import rank_zero_only

        return fn(*args, **kwargs) if rank_zero_only.rank == 0 else None

    return call


def get_logger(name: str) -> logging.Logger:
    """A logger whose info/warning calls only fire on global rank zero (one line per run, not per process)."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "critical"):
        setattr(logger, level, _on_rank_zero(getattr(logger, level)))
    return logger
