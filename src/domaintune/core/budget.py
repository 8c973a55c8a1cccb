"""A wall-clock budget for a run with its base results cached (`trainer.budget`).

A fixed `max_steps` fits one machine: the same run takes 10 minutes on a CPU with native bf16 and an hour
on one without. With a budget, the run times its own steps after a warm-up, estimates the tuned evaluation
from the base evaluation's measured time, and sets `max_steps` so that its setup (imports, model and data
loading: measured), training and the tuned evaluation end within the budget. The base evaluation is left out:
it runs once per model, data and evaluation config and is cached after that, so "15 minutes" means the wall
time of every run after the first. The learning
rate schedule is re-planned for the new total, so a budgeted run decays its rate to the end as a run with
that `max_steps` would. Lightning's own `max_time` only stops a run (mid-schedule, before the evaluation),
which is why this is written here.

The plan depends on the machine's speed: the report records the planned steps, so
`trainer.max_steps=<planned> trainer.budget=null` repeats the run exactly elsewhere.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch

from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(value: str | int | float | None) -> float | None:
    """`15m`, `90s`, `1.5h`, `1h30m` or a number of seconds -> seconds (None: no budget)."""
    if value in (None, "", "null"):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise DomainTuneError(
                    f"trainer.budget={value!r} is not a duration.", "Write it like 15m, 90s, 1h30m or a number of seconds."
                ) from None
        else:
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise DomainTuneError(f"trainer.budget={value!r} is not a positive duration.", "E.g. trainer.budget=15m.")
    return seconds


@dataclass
class Plan:
    """What the budget decided and what was spent (the report shows both)."""

    budget_s: float
    eval_estimate_s: float
    # the run's wall time before training began, less the base evaluation (counted against the budget)
    setup_s: float = 0.0
    step_s: float | None = None
    validation_s: float | None = None
    planned_steps: int | None = None
    planned_train_s: float | None = None
    train_started: float | None = None
    spent_train_s: float | None = None
    history: list[int] = field(default_factory=list)


class TimeBudget(pl.Callback):
    """Sets the trainer's `max_steps` so that training and the tuned evaluation fit `budget_s` seconds.

    The step time is the mean over `measure_steps` steps after `warmup_steps` (the first steps pay for
    allocator and kernel warm-up); a validation check's time is measured at each check (until the first one,
    it is estimated from the step time). The plan is made after the measured steps and revised after each
    validation check. The configured `max_steps` stays an upper bound.
    """

    def __init__(
        self,
        budget_s: float,
        eval_estimate_s: float,
        warmup_steps: int = 2,
        measure_steps: int = 4,
        run_started: float | None = None,
        excluded_s: float = 0.0,
        margin_s: float = 0.0,
    ):
        """`run_started` (a `time.time()`): when the run began, so its setup until the first step counts
        against the budget; `excluded_s`: time before training that does not count (the base evaluation);
        `margin_s`: kept free at the end (the report written after the tuned evaluation, the scatter of step
        times after the last plan)."""
        self.plan = Plan(budget_s, eval_estimate_s)
        self.run_started, self.excluded_s, self.margin_s = run_started, excluded_s, margin_s
        self.warmup_steps, self.measure_steps = warmup_steps, measure_steps
        self._step_times: list[float] = []
        self._batch_started: float | None = None
        self._val_started: float | None = None
        self._val_times: list[float] = []
        self._cap: int | None = None
        self._resumed = False

    # ------------------------------------------------------------------ measuring
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._cap = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if self.plan.train_started is None or not self._resumed:
            self.plan.train_started = time.time()
            if self.run_started is not None:
                self.plan.setup_s = max(0.0, self.plan.train_started - self.run_started - self.excluded_s)
        if self._resumed and self.plan.planned_steps is not None:
            self._apply(trainer, pl_module, self.plan.planned_steps)  # a resumed run keeps its plan

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_started is not None and not self._resumed:
            self._step_times.append(time.perf_counter() - self._batch_started)
            if len(self._step_times) == self.warmup_steps + self.measure_steps and self.plan.planned_steps is None:
                self._replan(trainer, pl_module)
        if self.plan.planned_steps is not None and trainer.global_step >= self.plan.planned_steps:
            # Lightning validates when a stop is requested (and StepCheckpoint then saves that check): the last
            # planned step is a validation check even between `val_check_interval`s
            trainer.should_stop = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._val_started is None:
            return
        self._val_times.append(time.perf_counter() - self._val_started)
        if not self._resumed and len(self._step_times) > self.warmup_steps:
            self._replan(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.plan.train_started is not None:
            self.plan.spent_train_s = time.time() - self.plan.train_started

    # ------------------------------------------------------------------ planning
    def steps_for(self, now_step: int, elapsed_s: float, val_interval: int | None, val_batches: int) -> int:
        """The step to stop at: the current one plus as many as the time left holds, each step paying its share
        of the validation checks, after keeping time for the one validation check the run makes at its last
        step (`on_train_batch_end` asks for it, so the last step can be chosen as the best weights and no
        budget is lost to rounding down to the previous check). Pure arithmetic on measured times (tests check
        it with planted values)."""
        measured = self._step_times[self.warmup_steps :] or self._step_times
        step_s = sum(measured) / len(measured)
        # a validation batch is a forward pass: about a third of a training step's work; measured once one ran
        val_s = sum(self._val_times) / len(self._val_times) if self._val_times else 0.4 * step_s * val_batches
        per_step = step_s + (val_s / val_interval if val_interval else 0.0)
        left = self.plan.budget_s - self.margin_s - elapsed_s - self.plan.eval_estimate_s - (val_s if val_interval else 0.0)
        self.plan.step_s, self.plan.validation_s = step_s, val_s
        return now_step + max(0, math.floor(left / per_step))

    def _replan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.plan.train_started is not None
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
        val_batches = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        elapsed = time.time() - self.plan.train_started + self.plan.setup_s
        planned = self.steps_for(trainer.global_step, elapsed, interval, val_batches)
        if self._cap is not None:
            planned = min(planned, self._cap)
        if planned == self.plan.planned_steps:
            return
        self.plan.planned_steps = planned
        # what training will have spent at its end: the steps left and the validation check at the last step
        # (comparable with the spent training time the report puts beside it)
        last_check = (self.plan.validation_s or 0.0) if interval else 0.0
        self.plan.planned_train_s = (
            time.time() - self.plan.train_started + (planned - trainer.global_step) * (self.plan.step_s or 0.0) + last_check
        )
        self.plan.history.append(planned)
        log.info(
            f"trainer.budget: {self.plan.step_s:.2f} s a step, {self.plan.validation_s:.1f} s a validation check, tuned "
            f"evaluation ~{self.plan.eval_estimate_s:.0f} s -> training to step {planned}"
        )
        self._apply(trainer, pl_module, planned)

    @staticmethod
    def _apply(trainer: pl.Trainer, pl_module: pl.LightningModule, steps: int) -> None:
        """Set max_steps and give the running schedule the lambdas of a schedule planned for `steps` steps."""
        trainer.fit_loop.epoch_loop.max_steps = steps
        optim = getattr(pl_module, "optim", None)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if optim is None or not hasattr(scheduler, "lr_lambdas"):
                continue
            groups = len(scheduler.optimizer.param_groups)
            dummy = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)], lr=1.0)
            fresh = optim.scheduler(optimizer=dummy, num_warmup_steps=optim.warmup(steps), num_training_steps=steps)
            scheduler.lr_lambdas = list(fresh.lr_lambdas)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return asdict(self.plan)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan = Plan(**state)
        self._resumed = True

    def summary(self, eval_spent_s: float | None) -> str:
        """One line for the report: planned against spent."""
        p = self.plan
        planned = f"training to step {p.planned_steps} (~{p.planned_train_s:.0f} s)" if p.planned_steps else "no plan made"
        spent = f"training {p.spent_train_s:.0f} s" if p.spent_train_s is not None else "training -"
        tuned = f", tuned evaluation {eval_spent_s:.0f} s" if eval_spent_s is not None else ""
        total = p.setup_s + (p.spent_train_s or 0) + (eval_spent_s or 0)
        return (
            f"{p.budget_s:.0f} s for setup + training + tuned evaluation (the base evaluation not counted); planned: "
            f"{planned} + tuned evaluation ~{p.eval_estimate_s:.0f} s; spent: setup {p.setup_s:.0f} s, {spent}{tuned} "
            f"= {total:.0f} s"
        )
