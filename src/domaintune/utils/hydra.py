"""Glue between Hydra and the rest: instantiate config lists, run a task with friendly failures."""

from __future__ import annotations

import json
import math
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger
from domaintune.utils.secrets import scrub_saved_config

log = get_logger(__name__)


def build(cfg: DictConfig | dict[str, Any], **runtime: Any) -> Any:
    """`instantiate(cfg)` completed with what only the run has (a model, a tokenizer, loss options).

    The runtime objects go to the partial, not to `instantiate`: Hydra merges instantiate's keyword
    arguments into the config first, which turns a dataclass such as `LossOptions` into a DictConfig.
    """
    target = str(cfg.get("_target_"))
    try:
        return instantiate(cfg, _partial_=True)(**runtime)
    except TypeError as exc:  # a key the class does not take (a typo, a stale key) or one the config lacks
        if not re.search(r"unexpected keyword argument|missing \d+ required", str(exc)):
            raise
        key = getattr(cfg, "_get_full_key", lambda _: "")(None) or target.rsplit(".", 1)[-1]
        raise DomainTuneError(
            f"The config `{key}` does not fit {target}: {str(exc).replace('.__init__()', '')}.",
            "Remove or correct that key (conf/ documents each one), or add the missing one.",
        ) from None


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a `_target_` (loggers, callbacks)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], dict[str, Any] | None], cfg: DictConfig) -> float | None:
    """Run `task` and return the metric named by cfg.optimized_metric (for sweepers).

    A user-fixable error prints its paragraph, not a traceback. In a multirun, a failing job writes
    `failure.json` in its folder and returns NaN, so the sweep goes on to the next job.
    """
    out_dir = Path(cfg.paths.output_dir)
    scrub_saved_config(out_dir)  # Hydra saved the config verbatim before this code ran
    try:
        metrics = task(cfg)
    except Exception as exc:
        friendly = isinstance(exc, DomainTuneError)
        message = exc.paragraph() if friendly else f"{type(exc).__name__}: {exc}"
        log.error(message)
        if is_multirun():
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "failure.json").write_text(
                json.dumps({"error": message, "type": type(exc).__name__, "traceback": traceback.format_exc()}, indent=2)
            )
            return math.nan
        if friendly:
            raise SystemExit(1) from None
        raise
    name = cfg.get("optimized_metric")
    if not name or metrics is None:  # metrics is None on non-zero DDP ranks
        return None
    if name not in metrics:
        raise DomainTuneError(f"optimized_metric={name!r} is not a metric of this run.", f"Use one of {sorted(metrics)}.")
    return metrics[name]
