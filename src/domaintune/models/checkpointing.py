"""Gradient checkpointing for the batches that need it (`model.gradient_checkpointing: auto`).

Why: the memory a training step needs grows with the positions in its batch (rows x padded length), and a
length-grouped epoch holds a few batches of the longest records. With fact_checking_cited's whole abstracts
(up to 1,024 tokens, batch 8) the longest batches took a default run past 23 GiB and the kernel killed it on a
24 GiB machine, while its median batch needs less than half of that. Checkpointing every step would cost every
step a recomputed forward (~30% of its time); `auto` checkpoints only a batch with more positions than
`model.checkpoint_above_tokens`, so short batches run as fast as before and the long ones fit. The loss and
gradients are the same either way (checkpointing recomputes, it does not approximate).

How: a forward pre-hook on the transformers model switches its layers' checkpointing on or off, through
transformers' own `gradient_checkpointing_enable/disable`, before each training forward whose size asks for
the other state. Evaluation forwards (no gradient) are left alone; transformers checkpoints only in training
mode anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from domaintune.utils.config import count_below
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

# non-reentrant checkpointing: needs no `requires_grad` on the (frozen) embeddings' output, and restores the
# random state for the recomputed forward (dropout masks come out the same)
CHECKPOINT_KWARGS = {"use_reentrant": False}


@dataclass(frozen=True)
class Checkpointing:
    """`model.gradient_checkpointing` (true | false | auto) and `model.checkpoint_above_tokens`."""

    mode: bool | str
    above_tokens: int

    @classmethod
    def from_config(cls, model_cfg: Any) -> Checkpointing:
        mode = model_cfg["gradient_checkpointing"]
        above = model_cfg.get("checkpoint_above_tokens")
        if mode not in (True, False, "auto"):
            raise DomainTuneError(
                f"model.gradient_checkpointing={mode!r} is not one of true, false, auto.",
                "Use auto (checkpoint the batches above model.checkpoint_above_tokens positions), true (every "
                "batch: least memory) or false (none: fastest).",
            )
        if mode == "auto" and count_below(above, 1):
            raise DomainTuneError(
                f"model.gradient_checkpointing=auto needs model.checkpoint_above_tokens, a whole number of positions "
                f"(rows x padded length) of at least 1; it is {above!r}.",
                "Set e.g. model.checkpoint_above_tokens=6144, or model.gradient_checkpointing=true/false.",
            )
        return cls(mode, int(above) if mode == "auto" else 0)


def apply_checkpointing(model: nn.Module, settings: Checkpointing) -> LongBatchCheckpointing | None:
    """Set up `settings` on `model` (the transformers model, under any PEFT wrapper). `true`: every training
    forward checkpointed; `auto`: the returned callback's hook decides per forward (add it to the trainer's
    callbacks: it logs how many were checkpointed); `false`: nothing."""
    if settings.mode is True:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    return LongBatchCheckpointing(model, settings.above_tokens) if settings.mode == "auto" else None


class LongBatchCheckpointing(pl.Callback):
    """The `auto` mode's hook on `model`: checkpoint a training forward of more than `above_tokens` positions, run
    the others without. A callback only to log, when training ends, how many forwards were checkpointed."""

    def __init__(self, model: nn.Module, above_tokens: int) -> None:
        self.model, self.above_tokens = model, above_tokens
        self.on = False
        self.forwards = self.checkpointed = 0
        self.handle = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None:
            return
        want = tokens.shape[0] * tokens.shape[1] > self.above_tokens
        self.forwards += 1
        self.checkpointed += want
        if want != self.on:
            if want:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
            else:
                self.model.gradient_checkpointing_disable()
            self.on = want

    def summary(self) -> str:
        return (
            f"model.gradient_checkpointing=auto: {self.checkpointed} of {self.forwards} training forwards had more than "
            f"{self.above_tokens} positions and ran with checkpointing"
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log.info(self.summary())
