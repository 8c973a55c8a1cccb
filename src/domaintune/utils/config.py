"""Config helpers shared by every entry point: resolvers, config location, Hydra/rank checks."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from domaintune.utils.errors import DomainTuneError, unread_keys

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = PACKAGE_DIR / "data" / "samples"
# conf/ ships inside the package (the top-level conf/ is a link to it), so `pip install .` carries it
CONFIG_DIR = PACKAGE_DIR / "conf"


def _sweep_name() -> str | None:
    """`<date>/<time>` of the running multirun sweep, or None outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def _wandb_group(single_run_group: str) -> str:
    """Jobs of one sweep share a W&B group (the sweep); a single run is grouped by its data name."""
    sweep = _sweep_name()
    return f"sweep-{sweep.replace('/', '_')}" if sweep else single_run_group


def _wandb_name(single_run_name: str) -> str:
    """In a sweep a W&B run is named by its job's overrides (e.g. `adapter=ia3,data=marketing`)."""
    from hydra.core.hydra_config import HydraConfig

    if _sweep_name() and HydraConfig.get().job.override_dirname:
        return f"{HydraConfig.get().job.num}:{HydraConfig.get().job.override_dirname}"
    return single_run_name


def _run_label(run_dir: str | None, fallback: str) -> str:
    """Name of a run folder an inference script works on (`12-00-00_education_lora` -> `education_lora`),
    so `outputs/evaluate/...` says which run it evaluated; `fallback` when no run is given."""
    if not run_dir:
        return fallback
    return re.sub(r"^(\d{2}-\d{2}-\d{2}|\d+)_", "", Path(str(run_dir)).name) or fallback


def register_resolvers() -> None:
    """Resolvers used by conf/: `${dt.samples:}` is the illustrative data shipped inside the package;
    `${dt.wandb_group:x}` / `${dt.wandb_name:x}` group and name W&B runs by sweep and job;
    `${dt.run_label:run_dir,x}` names an evaluate/chat/generate folder after the run it used;
    `${dt.mul:a,b}` multiplies (presets scale a default instead of restating it)."""
    resolvers = {
        "dt.samples": lambda: str(SAMPLES_DIR),
        "dt.wandb_group": _wandb_group,
        "dt.wandb_name": _wandb_name,
        "dt.run_label": _run_label,
        "dt.mul": lambda a, b: float(a) * float(b),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def fill_missing(node: DictConfig, today: DictConfig) -> DictConfig:
    """A config saved by an older version (a run folder, a lineage entry), completed in place with today's keys
    it lacks; a value it has is never changed. Nested object configs (nodes with a `_target_`, such as
    data.preprocess) are completed the same way; other nested dicts are not (today's data.task.fields would be
    wrong for another task)."""
    with open_dict(node):
        for key in today:
            if key not in node:
                node[key] = today[key]
            elif isinstance(node[key], DictConfig) and isinstance(today[key], DictConfig) and "_target_" in today[key]:
                fill_missing(node[key], today[key])
    return node


MIXTURE_KEYS = ("components", "weights", "size")


def fill_data(node: DictConfig, today: DictConfig) -> DictConfig:
    """`fill_missing` for a data config saved by an older version (a run's, or one lineage domain): each mixture
    component is completed from today's single-source keys, and a single-source config never gets today's
    mixture keys (that would turn it into a mixture). A task block gets the task keys added since, with their
    defaults from conf/data/_base.yaml (not today's domain: its values belong to another task)."""
    single = OmegaConf.create({k: v for k, v in to_dict(today).items() if k not in MIXTURE_KEYS})
    parts = node.get("components") or {}
    task_defaults = OmegaConf.load(CONFIG_DIR / "data" / "_base.yaml").task
    for name in parts:
        fill_missing(parts[name], single)
    filled = fill_missing(node, today if parts else single)
    for source in [parts[name] for name in parts] or [filled]:  # each component, or the single source
        if "task" in source:
            fill_missing(source.task, task_defaults)
    return filled


def fill_eval(node: DictConfig, today: DictConfig) -> DictConfig:
    """`fill_missing` for an eval config saved by an older version: besides today's new blocks, each settings block
    it has (generation, memorisation, choices...) gets the keys that block has gained since (e.g.
    memorisation.min_tokens: eval's blocks are the evaluation's own settings, not per-domain content, so today's
    defaults are right for them); each benchmark it names gets the keys benchmarks have gained since (e.g. `kind`)
    from today's benchmark of the same name, and today's benchmarks it does not name are added (available to
    eval.general)."""
    fill_missing(node, today)
    for key, block in today.items():
        if key != "benchmarks" and isinstance(block, DictConfig) and isinstance(node.get(key), DictConfig):
            fill_missing(node[key], block)
    saved, current = node.get("benchmarks"), today.get("benchmarks")
    if saved is not None and current is not None:
        with open_dict(saved):
            for name, spec in current.items():
                if name in saved:
                    fill_missing(saved[name], spec)
                else:
                    saved[name] = spec
    return node


def to_dict(cfg: DictConfig | dict | None) -> dict[str, Any]:
    """A plain, resolved dict of a config node or of a dict that holds nodes (what Hydra passes as keyword
    arguments when it does not recurse)."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v for k, v in cfg.items()}


T = TypeVar("T")


def count_below(value: Any, least: int) -> bool:
    """True unless `value` is a whole number (not a bool, which Python counts as one) of at least `least`: the
    check behind every typed settings block's counts (eval.calibration.folds, model.checkpoint_above_tokens...)."""
    return isinstance(value, bool) or not isinstance(value, int) or value < least


def settings(cls: type[T], values: Mapping[str, Any] | T, where: str) -> T:
    """A config block (a plain dict or DictConfig, e.g. `eval.bootstrap`) as its typed dataclass `cls`, whose
    `__post_init__` validates the values next to the fields they concern. A key the class lacks or a missing
    key is a clear error naming the block, so a nested block is as strict as a top-level object config."""
    if isinstance(values, cls):
        return values
    values = to_dict(values) if isinstance(values, DictConfig) else dict(values)  # type: ignore[arg-type]
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise unread_keys(where, unknown, names)
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise DomainTuneError(
            f"{where} lacks {', '.join(missing)}.",
            f"Set them (conf/ documents each key of {where}) or start from the shipped config.",
        )
    return cls(**values)


register_resolvers()
