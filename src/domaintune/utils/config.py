"""Config helpers shared by every entry point: resolvers, config location, Hydra/rank checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = PACKAGE_DIR / "data" / "samples"
CONFIG_DIR = PACKAGE_DIR.parents[1] / "conf"


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


def register_resolvers() -> None:
    """Resolvers used by conf/: `${dt.samples:}` is the illustrative data shipped inside the package;
    `${dt.wandb_group:x}` / `${dt.wandb_name:x}` group and name W&B runs by sweep and job."""
    for name, fn in (("dt.samples", lambda: str(SAMPLES_DIR)), ("dt.wandb_group", _wandb_group), ("dt.wandb_name", _wandb_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def to_dict(cfg: DictConfig | dict | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


register_resolvers()
