"""Lightning callbacks specific to DomainTune."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class TokenThroughput(pl.Callback):
    """Logs tokens/s (non-padding tokens per wall-clock second of a whole optimisation step) to the bar."""

    def __init__(self) -> None:
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            tokens = int(batch["n_real"].sum()) * trainer.world_size
            pl_module.log("train/tokens_per_s", tokens / max(now - self._last, 1e-9), prog_bar=True, batch_size=1)
        self._last = now


class GenerationMetrics(pl.Callback):
    """Scores generations on the eval subset every N training epochs (the same Evaluator as before/after)."""

    def __init__(self, evaluator: Any, every_n_epochs: int):
        self.evaluator = evaluator
        self.every = max(1, every_n_epochs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every or not trainer.is_global_zero:
            return
        scores, _ = self.evaluator.generation(pl_module.model)
        for lg in trainer.loggers:
            lg.log_metrics({f"val/{k}": v for k, v in scores.items()}, step=trainer.global_step)


class Stopwatch:
    """Named laps from the start of a run (model load, data, base evaluation...), for the time-to-first-step line."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


class FirstStepTime(pl.Callback):
    """Prints and logs how long a run took to reach its first training step, and where that time went.

    With warm model and data caches this is what every experiment pays before learning starts."""

    def __init__(self, clock: Stopwatch) -> None:
        self.clock = clock
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.seconds is not None:
            return
        self.clock.lap("trainer setup")
        self.seconds = time.perf_counter() - self.clock.started
        if trainer.is_global_zero:
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.clock.laps.items())
            print(f"Time to first training step: {self.seconds:.1f} s ({parts})", flush=True)
        for lg in trainer.loggers:
            lg.log_metrics({"time/first_step_s": self.seconds}, step=trainer.global_step)
