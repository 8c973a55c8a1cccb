"""The `optim` group's object: the optimizer and learning-rate schedule a run trains with."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Optimization:
    """The `optim` group, built by `hydra.utils.instantiate` (conf/optim/_base.yaml documents the keys):
    the optimizer and schedule arrive as partials still waiting for parameters, step counts."""

    optimizer: Callable[..., torch.optim.Optimizer]
    scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler]
    lr: float
    weight_decay: float
    warmup_ratio: float
    warmup_steps: int | None

    def describe(self) -> str:
        """In words for the model card: the optimizer and schedule as built (partials name their targets)."""

        def name(part: Callable[..., Any]) -> str:
            func = getattr(part, "func", part)
            return f"{func.__module__}.{func.__qualname__}"

        schedule = getattr(self.scheduler, "keywords", {}).get("name", name(self.scheduler))
        return f"{name(self.optimizer)}, lr {self.lr}, weight decay {self.weight_decay}, {schedule} schedule"

    def warmup(self, total: int) -> int:
        """warmup_steps, or warmup_ratio of the total steps (rounded up)."""
        return int(self.warmup_steps or math.ceil(float(self.warmup_ratio) * total))

    def build(self, model: nn.Module, total: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Optimizer over the trainable weights (weight decay on matrices only: biases and norms never decay)
        and its schedule over `total` steps."""
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": float(self.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer(groups, lr=float(self.lr))
        scheduler = self.scheduler(optimizer=optimizer, num_warmup_steps=self.warmup(total), num_training_steps=total)
        return optimizer, scheduler
