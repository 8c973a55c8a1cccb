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
from collections.abc import Callable, Iterator
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
    # the tuned evaluation's time as the last plan expected it (eval_estimate_s, scaled by the process's slowdown)
    eval_planned_s: float | None = None


class TimeBudget(pl.Callback):
    """Sets the trainer's `max_steps` so that training and the tuned evaluation fit `budget_s` seconds.

    The step time is measured over the steps after `warmup_steps` (the first steps pay for allocator and kernel
    warm-up); a validation check's time is measured at each check (until the first one, it is estimated from the
    step time). The plan is made after `measure_steps` measured steps and revised after each validation check.
    The configured `max_steps` stays an upper bound.

    Steps differ in cost with their batches' sizes (length-grouped batches: a real marketing run's steps took 8 s
    in its first 20 and 11 s in its last 17, and a plan from the mean overshot by 41 s). When the training
    loader's batch sampler can list an epoch's batches ahead (`batches_of(epoch)`, as DomainTune's does: the order
    is a function of seed and epoch), each step still to come is costed by its own batch's tokens (rows x the
    longest row) at the measured seconds per token; otherwise at the mean measured step time.
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
        # tokens (rows x longest row) of each timed step's batch, and of the batches still to come (None: not
        # known); the seconds the last plan expects its remaining steps to take
        self._step_tokens: list[int] = []
        self._upcoming: Callable[[int, int], list[int]] | None = None
        self._planned_cost_s: float | None = None
        self._by_tokens = False
        self._batch_started: float | None = None
        self._val_started: float | None = None
        self._val_times: list[float] = []
        self._cap: int | None = None
        self._resumed = False

    # ------------------------------------------------------------------ measuring
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._cap = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._upcoming = upcoming_batch_tokens(trainer)
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
            # the batch's size as the sampler sees it (rows x longest row), the same measure as the steps ahead
            self._step_tokens.append(self._upcoming(trainer.global_step - 1, 1)[0] if self._upcoming else 0)
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
        budget is lost to rounding down to the previous check). Each step to come costs its batch's tokens at
        the measured seconds per token when the batches ahead are known, else the mean measured step time.
        Pure arithmetic on measured times (tests check it with planted values)."""
        window = slice(self.warmup_steps, None) if len(self._step_times) > self.warmup_steps else slice(None)
        measured = self._step_times[window]
        step_s = sum(measured) / len(measured)
        # a validation batch is a forward pass: about a third of a training step's work; measured once one ran
        val_s = sum(self._val_times) / len(self._val_times) if self._val_times else 0.4 * step_s * val_batches
        val_share = val_s / val_interval if val_interval else 0.0
        left = self.plan.budget_s - self.margin_s - elapsed_s - self.eval_estimate_now() - (val_s if val_interval else 0.0)
        self.plan.step_s, self.plan.validation_s = step_s, val_s
        costs = self._step_costs(now_step, window)
        self._by_tokens = costs is not None
        if costs is None:
            return now_step + max(0, math.floor(left / (step_s + val_share)))
        steps, spent = 0, 0.0
        for cost in costs:
            if spent + cost + val_share > left or (self._cap is not None and now_step + steps >= self._cap):
                break
            spent += cost + val_share
            steps += 1
        self._planned_cost_s = spent
        return now_step + steps

    def eval_estimate_now(self) -> float:
        """The tuned evaluation's expected time: the estimate from the base evaluation, scaled by how much slower
        this process has become since training began: its steps' seconds per token now against its first
        measured steps', or its latest validation check against its first (the same batches each time), the
        larger. The tuned evaluation runs after training, and on real runs the process slowed as it trained:
        healthcare's checks took 19.7 s, later 25.3 s, and its tuned evaluation 434 s against the 354 s planned
        from the base evaluation, timed at the process's start."""
        checks = self._val_times[-1] / self._val_times[0] if len(self._val_times) > 1 and self._val_times[0] > 0 else 1.0
        return self.plan.eval_estimate_s * max(1.0, checks, self._steps_slower())

    def _per_token(self, steps: slice) -> float | None:
        """Seconds per token over the timed steps in `steps` (None without their tokens)."""
        times, tokens = self._step_times[steps], self._step_tokens[steps]
        if not times or len(tokens) != len(times) or not all(tokens):
            return None
        return sum(times) / sum(tokens)

    def _recent_per_token(self) -> float | None:
        """Seconds per token of the latest 2 x `measure_steps` steps, once they no longer overlap the first."""
        if len(self._step_times) < self.warmup_steps + 3 * self.measure_steps:
            return None
        return self._per_token(slice(-2 * self.measure_steps, None))

    def _steps_slower(self) -> float:
        """Seconds per token of the latest steps over those of the first measured ones (1.0 until both known)."""
        first = self._per_token(slice(self.warmup_steps, self.warmup_steps + self.measure_steps))
        recent = self._recent_per_token()
        return recent / first if first and recent else 1.0

    def _step_costs(self, now_step: int, window: slice) -> Iterator[float] | None:
        """Seconds of each step after `now_step` (its batch's tokens x the seconds per token of the measured steps
        in `window`, or of the latest steps when those are slower), or None when the batches ahead or the measured
        steps' tokens are not known."""
        whole = self._per_token(window)
        if self._upcoming is None or whole is None:
            return None
        per_token = max(whole, self._recent_per_token() or 0.0)
        upcoming = self._upcoming

        def costs() -> Iterator[float]:
            # endless (epochs repeat); steps_for stops at the time left or max_steps
            step = now_step
            while True:
                for t in upcoming(step, 256):
                    yield t * per_token
                step += 256

        return costs()

    def _replan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.plan.train_started is not None
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
        val_batches = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        elapsed = time.time() - self.plan.train_started + self.plan.setup_s
        self._planned_cost_s = None
        planned = self.steps_for(trainer.global_step, elapsed, interval, val_batches)
        if self._cap is not None and planned > self._cap:
            planned, self._planned_cost_s = self._cap, None
        if planned == self.plan.planned_steps:
            return
        self.plan.planned_steps = planned
        # what training will have spent at its end: the steps left and the validation check at the last step
        # (comparable with the spent training time the report puts beside it)
        last_check = (self.plan.validation_s or 0.0) if interval else 0.0
        steps_left = planned - trainer.global_step
        ahead = self._planned_cost_s if self._planned_cost_s is not None else steps_left * (self.plan.step_s or 0.0)
        self.plan.planned_train_s = time.time() - self.plan.train_started + ahead + last_check
        self.plan.history.append(planned)
        self.plan.eval_planned_s = self.eval_estimate_now()
        log.info(
            f"trainer.budget: {self.plan.step_s:.2f} s a step, {self.plan.validation_s:.1f} s a validation check, tuned "
            f"evaluation ~{self.eval_estimate_now():.0f} s -> training to step {planned}"
            + (" (each step costed by its batch's tokens)" if self._by_tokens else "")
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
            f"{planned} + tuned evaluation ~{p.eval_planned_s or p.eval_estimate_s:.0f} s; "
            f"spent: setup {p.setup_s:.0f} s, {spent}{tuned} "
            f"= {total:.0f} s"
        )


def upcoming_batch_tokens(trainer: pl.Trainer) -> Callable[[int, int], list[int]] | None:
    """For a training loader whose batch sampler lists an epoch's batches ahead (`batches_of(epoch)`) over rows
    with `input_ids`, one step per batch: a function (index, n) -> the tokens (rows x longest row) of the n
    batches from the index-th (0-based, counted across epochs). A proxy of a step's work, used alike for the
    measured steps and the steps ahead (a collate that reshapes rows, e.g. objective=choice's shared rows, scales
    both). None for any other loader: the budget then plans with the mean step time."""
    loader = getattr(trainer, "train_dataloader", None)
    sampler = getattr(loader, "batch_sampler", None)
    rows = getattr(loader, "dataset", None)
    if not hasattr(sampler, "batches_of") or not isinstance(rows, list) or getattr(trainer, "accumulate_grad_batches", 1) != 1:
        return None
    per_epoch = len(sampler)
    if not per_epoch or not (isinstance(rows[0], dict) and "input_ids" in rows[0]):
        return None
    lengths = [len(r["input_ids"]) for r in rows]
    epochs: dict[int, list[int]] = {}

    def tokens(step: int, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            epoch, index = divmod(step + len(out), per_epoch)
            if epoch not in epochs:
                epochs.clear()  # one epoch's sizes kept at a time
                epochs[epoch] = [len(b) * max(lengths[i] for i in b) for b in sampler.batches_of(epoch)]
            out += epochs[epoch][index : index + n - len(out)]
        return out

    return tokens
