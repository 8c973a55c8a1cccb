"""Experiment loggers built from config (W&B offline unless the user has set it up)."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

from domaintune.utils.logging import get_logger
from domaintune.utils.secrets import KEY_OVERRIDE

log = get_logger(__name__)


def wandb_has_credentials() -> bool:
    """True when W&B can log online: an API key in the environment or in ~/.netrc (`wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """The W&B mode of every run DomainTune starts: WANDB_MODE when set, else online only with credentials."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")


def wandb_logger(offline: bool | str = "auto", **kwargs: Any) -> WandbLogger:
    """WandbLogger that goes offline by itself when no API key is configured (WANDB_MODE still wins)."""
    if offline == "auto":
        mode = wandb_mode()
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_has_credentials())
    if offline:
        log.info("W&B runs offline (no API key configured); upload the run folder's wandb/offline-run-* with `wandb sync <dir>`")
    if any(KEY_OVERRIDE.search(arg) for arg in sys.argv):
        # W&B's run metadata records the command line verbatim; it must not carry a token or key
        import wandb

        log.info("The command line holds a secret-named key: W&B's system metadata (which records it) is off for this run")
        kwargs["settings"] = wandb.Settings(x_disable_meta=True)
    return WandbLogger(offline=bool(offline), **kwargs)


def log_to_wandb(
    loggers: list[Any],
    tables: dict[str, tuple[list[str], list[list[Any]]]] | None = None,
    images: dict[str, Any] | None = None,
) -> None:
    """Send tables and images to every W&B logger of a trainer (other loggers have no place for them)."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            for key, (columns, rows) in (tables or {}).items():
                lg.log_table(key=key, columns=columns, data=rows)
            for key, path in (images or {}).items():
                lg.log_image(key=key, images=[str(path)])


def log_artifacts(loggers: list[Any], artifacts: dict[str, tuple[str, list[Path], dict[str, Any]]]) -> None:
    """Log files to every W&B logger as versioned artifacts: {name: (type, files or folders, metadata)}.

    Offline runs keep them in the run folder; `wandb sync` uploads them with the run.
    """
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        for name, (kind, paths, metadata) in artifacts.items():
            artifact = wandb.Artifact(name=name, type=kind, metadata=metadata)
            for path in paths:
                if path.is_dir():
                    artifact.add_dir(str(path))
                elif path.exists():
                    artifact.add_file(str(path))
            lg.experiment.log_artifact(artifact)
