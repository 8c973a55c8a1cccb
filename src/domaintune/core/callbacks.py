"""Lightning callbacks specific to DomainTune."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint


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
    """Scores generations on the validation subset every N training epochs (the same Evaluator as before/after)."""

    def __init__(self, evaluator: Any, every_n_epochs: int):
        self.evaluator = evaluator
        self.every = max(1, every_n_epochs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every or not trainer.is_global_zero:
            return
        # on the validation split: watching the test split during training would make it a selection set
        speed, evidence, _, _ = self.evaluator.generation(pl_module.model, "validation")
        scores = {**speed, **{k: e.value() for k, e in evidence.items()}}
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


class BestWeights(pl.Callback):
    """Keeps a CPU copy of the trainable weights from the best validation check (`eval.weights: best`),
    so the after-evaluation and the saved adapter use them instead of whatever the last step left.

    In memory rather than through a checkpoint file: it works the same under every strategy (each rank
    keeps and restores its own shard under FSDP), and a checkpoint saved between validations cannot
    pair weights with a score measured at another step. Its state (value, step, weights) is part of each
    checkpoint, so a resumed run keeps the best from before the interruption.
    """

    def __init__(self, monitor: str, mode: str):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.value: float | None = None
        self.step: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        return self.value is None or (value < self.value if self.mode == "min" else value > self.value)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or found is None or not math.isfinite(float(found)):
            return
        if self._better(float(found)):
            self.value, self.step = float(found), trainer.global_step
            self.weights = {n: p.detach().to("cpu", copy=True) for n, p in pl_module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def restore(self, pl_module: pl.LightningModule) -> bool:
        """Copy the best weights back into the module; False if no validation check has run."""
        if self.weights is None:
            return False
        params = dict(pl_module.named_parameters())
        for name, w in self.weights.items():
            params[name].copy_(w.to(params[name].device))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.step, self.weights = state["value"], state["step"], state["weights"]


class LearningCurves(pl.Callback):
    """Records the training loss at logging steps and every validation loss, and writes them to
    `curves.json` when fitting ends, whatever the logger (the refinement report diagnoses from it)."""

    def __init__(self, path: str | Path, monitor: str):
        self.path, self.monitor = Path(path), monitor
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0 and "train/loss" in trainer.callback_metrics:
            self.train.append((trainer.global_step, float(trainer.callback_metrics["train/loss"])))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and found is not None:
            self.val.append((trainer.global_step, float(found)))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"train/loss": self.train, self.monitor: self.val, "max_steps": trainer.max_steps}))

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train, self.val = [tuple(x) for x in state["train"]], [tuple(x) for x in state["val"]]


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose step checkpoints wait for a validation that runs right after the same step.

    Lightning saves `every_n_train_steps` checkpoints at the end of the training batch, before that step's
    validation. Resuming from such a checkpoint, Lightning fast-forwards past the validation instead of
    running it, so the resumed run never sees that check: best weights, early stopping and the learning
    curve miss a point, and the saved adapter could be another step's (found by the kill-and-resume test:
    some resumed runs ended ~1e-4 from the uninterrupted weights). Deferring the save to the end of that
    validation (Lightning's own deferral path, used for its last-batch case) makes the checkpoint hold the
    check's results, and a resume skips it correctly as already run.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # a requested stop (the time budget's last step) validates now: keep that check's checkpoint too
        due = trainer.should_stop or (self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0)
        if due and pl_module.automatic_optimization and self._validates_after_this_batch(trainer):
            self._defer_save_until_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @staticmethod
    def _validates_after_this_batch(trainer: pl.Trainer) -> bool:
        # Lightning's own decision (the epoch loop asks the same question right after this hook); private API,
        # so a Lightning release without it falls back to saving before validation, as stock ModelCheckpoint does
        loop = trainer.fit_loop.epoch_loop
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        check = getattr(loop, "_should_check_val_fx", None)
        return bool(trainer.enable_validation and check is not None and fetcher is not None and check(fetcher))


class RandomState(pl.Callback):
    """Checkpoints the random number generators (torch CPU and CUDA, Python, NumPy), so a resumed run draws
    the same dropout masks as an uninterrupted one (Lightning restores weights, optimizer, scheduler and
    loader position, but not these). The state is put back at the first training step after the restore,
    so whatever the restart itself draws (building loaders) does not shift the stream."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        py = random.getstate()
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # plain lists: checkpoints load with weights_only=True, which refuses arbitrary Python objects
            "python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


class SaveOnInterrupt(pl.Callback):
    """On SIGTERM (a scheduler's pre-emption, `kill`) or Ctrl+C, Lightning stops after the current step;
    this writes `last.ckpt` at that step (atomically) so `ckpt_path=<it>` resumes without losing work."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.saved_step: int | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.global_step == 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            tmp.replace(self.path)
        self.saved_step = trainer.global_step
