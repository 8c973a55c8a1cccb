"""Logging that works the same under Hydra, Lightning and plain scripts."""

from __future__ import annotations

import logging

from pytorch_lightning.utilities import rank_zero_only


def get_logger(name: str) -> logging.Logger:
    """A logger whose info/warning calls only fire on global rank zero (one line per run, not per process)."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger
