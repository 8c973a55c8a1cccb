"""Config helpers shared by every entry point: resolvers, config location, Hydra/rank checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = PACKAGE_DIR / "data" / "samples"
CONFIG_DIR = PACKAGE_DIR.parents[1] / "conf"


def register_resolvers() -> None:
    """Resolvers used by conf/: `${dt.samples:}` is the illustrative data shipped inside the package."""
    if not OmegaConf.has_resolver("dt.samples"):
        OmegaConf.register_new_resolver("dt.samples", lambda: str(SAMPLES_DIR))


def to_dict(cfg: DictConfig | dict | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


register_resolvers()
