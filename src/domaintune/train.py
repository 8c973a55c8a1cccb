"""Hydra entry point: evaluate the base model, fine-tune, evaluate again, write the report.

python train.py data=healthcare adapter=lora
python -m domaintune.train data=education trainer=gpu

Only Hydra and the config helpers are imported here; torch, Lightning and transformers (about 5 s) load
with `domaintune.core.pipeline` once a run starts, so `--help`, `--cfg job` and config errors answer at once.
"""

from __future__ import annotations

import sys
import time

import hydra
from omegaconf import DictConfig

import domaintune
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task

# the process's start, for the first run only: a multirun's later jobs start when they start
_PROCESS_START = [domaintune.STARTED]


def train(cfg: DictConfig) -> dict[str, float] | None:
    """One run; returns flat metrics such as `tuned/perplexity` and `change/loss` for sweepers (None off rank 0).
    The run's start (for `trainer.budget`) is the process's for its first run: its imports are its setup too."""
    started = _PROCESS_START.pop() if _PROCESS_START else time.time()
    from domaintune.core.pipeline import fit_and_evaluate

    run = fit_and_evaluate(cfg, started=started)
    return run.flat if run else None


def finish_loggers() -> None:
    """Close the W&B run so each multirun job gets its own (and offline files are flushed).

    W&B is looked up, not imported: a run that never used it (e.g. `logger=csv`) has no W&B run to close,
    and should neither pay for nor need the import.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return run_task(train, cfg)
    finally:
        finish_loggers()


if __name__ == "__main__":
    main()
