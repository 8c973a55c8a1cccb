"""The LightningModule: trains a (PEFT-wrapped) causal LM on answer tokens only."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from peft import PeftModel
from pytorch_lightning.strategies import FSDPStrategy
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from torchmetrics import SumMetric
from transformers import modeling_utils as hf_modeling

from domaintune.models.adapters import is_prompt_learning
from domaintune.utils.errors import DomainTuneError

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")
# the loss's own ignore index (-100): collate pads labels with the same value (data.chat.IGNORE)
IGNORE = nn.CrossEntropyLoss().ignore_index


# transformers 5.2x taught `logits_to_keep` to take a boolean (batch, seq) mask (`slice_logits_to_keep`);
# earlier 5.x releases (e.g. 5.17, still in GPU images) index `hidden[:, keep, :]` and fail on a 2-D mask.
# Detected once, so one code path serves both (a module attribute so tests can force the fallback).
BOOLEAN_LOGITS_TO_KEEP = hasattr(hf_modeling, "slice_logits_to_keep")


def logits_at(model: nn.Module, inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """The model's output (logits, or the hidden states if the head is removed) at the True positions of the
    boolean (batch, seq) `keep`, flattened row-major to (n_kept, features): the head never runs elsewhere.

    With a transformers that lacks boolean masks, the head runs at the union over the batch of the kept
    positions (a 1-D `logits_to_keep`, supported by every 5.x release) and the rows are then picked, in
    the same order: the same values, a little more head work on ragged batches.
    """
    if BOOLEAN_LOGITS_TO_KEEP:
        out = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    else:
        cols = keep.any(0).nonzero().squeeze(1)
        out = model(**inputs, use_cache=False, logits_to_keep=cols).logits
        if out.dim() == 3 and out.shape[1] == len(cols):
            out = out[keep[:, cols]]
    n_kept = int(keep.sum())
    if out.dim() != 2 or out.shape[0] != n_kept:
        raise DomainTuneError(
            f"{type(model).__name__} does not accept logits_to_keep (it returned logits of shape {tuple(out.shape)} "
            f"for {n_kept} kept positions).",
            "Set model.answer_only_logits=false for this architecture.",
        )
    return out


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of the positions whose *next* token is trained (labels[:, t + 1] != -100)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


@dataclass(frozen=True)
class LossOptions:
    """How the loss is computed (model.answer_only_logits, model.loss_chunk_size): same value, less work or memory."""

    answer_only_logits: bool
    chunk_size: int | None

    @classmethod
    def from_config(cls, model_cfg: DictConfig | dict[str, Any]) -> LossOptions:
        chunk = model_cfg["loss_chunk_size"]
        return cls(bool(model_cfg["answer_only_logits"]), int(chunk) if chunk else None)


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over the answer tokens (labels != -100) and how many tokens it averages.

    With `answer_only_logits` the LM head runs only at the positions that predict a trained token (the
    model's own `logits_to_keep` (see `logits_at`), so any architecture's head, softcapping included,
    is applied as the model defines it): the full-vocabulary logits of prompt and padding positions are
    never materialised. That is about half of the head's matmul work and of the logits' memory on
    typical SFT data, for the same loss (tests/models/test_models.py checks it to 1e-5 in fp32).
    With `chunk_size` as well, the head and cross-entropy run over chunks of that many positions, each
    recomputed in the backward pass, so the full (answer tokens x vocabulary) logits never exist at once.
    PEFT prompt methods prepend virtual tokens, so they keep the model's own loss on full logits.
    `loss * n_tokens` is the summed NLL that token-weighted perplexity needs.
    """
    labels = batch["labels"]
    inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
    n_tokens = (labels[:, 1:] != IGNORE).sum()
    if not opts.answer_only_logits or is_prompt_learning(model):
        return model(**inputs, labels=labels, use_cache=False).loss, n_tokens
    keep = trained_positions(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    if opts.chunk_size:
        with _head_removed(model) as head:
            hidden = logits_at(model, inputs, keep)
        return _chunked_cross_entropy(head, hidden, targets, opts.chunk_size), n_tokens
    logits = logits_at(model, inputs, keep)
    return F.cross_entropy(logits.float(), targets, reduction="mean"), n_tokens


# Config attributes of architectures that transform the head's output (softcapping, scaling): chunking
# calls the head itself, so it would skip that transformation.
HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@contextlib.contextmanager
def _head_removed(model: nn.Module) -> Iterator[nn.Module]:
    """The model's forward with its output head replaced by identity (so it returns the normed hidden states
    at the kept positions); yields the head, restored on exit."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    found = [k for k in HEAD_TRANSFORMS if getattr(base.config, k, None) not in (None, 1, 1.0)]
    if found:
        raise DomainTuneError(
            f"model.loss_chunk_size does not work with {type(base).__name__}: its head output is transformed ({found[0]}).",
            "Set model.loss_chunk_size=null.",
        )
    head = base.get_output_embeddings()
    name = next(n for n, m in base.named_children() if m is head)
    setattr(base, name, nn.Identity())
    try:
        yield head
    finally:
        setattr(base, name, head)


def example_nll(model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL over each row's answer tokens and how many there are, per row (unpacked rows:
    one example each). Evaluation keeps these per example, so intervals can resample examples; their
    token-weighted mean is exactly the loss `forward_loss` averages."""
    labels = batch["labels"]
    inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
    keep = trained_positions(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    if opts.answer_only_logits and not is_prompt_learning(model):
        logits = logits_at(model, inputs, keep)
    else:
        full = model(**inputs, use_cache=False).logits
        full = full[:, full.shape[1] - labels.shape[1] :]  # prompt tuning prepends virtual-token positions
        logits = full[keep]
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    rows = keep.nonzero()[:, 0]
    per_row = torch.zeros(labels.shape[0], dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
    return per_row, keep.sum(dim=1)


def _chunked_cross_entropy(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    def nll(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        part = (hidden[i : i + chunk], targets[i : i + chunk])
        total = total + (checkpoint(nll, *part, use_reentrant=False) if torch.is_grad_enabled() else nll(*part))
    return total / targets.numel()


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


class CausalLMModule(pl.LightningModule):
    """Wraps the model to train; checkpoints hold only its trainable weights."""

    def __init__(self, model: nn.Module, optim: Optimization, loss: LossOptions, identity: dict[str, str]):
        """Built by `hydra.utils.instantiate(cfg.module, ...)` (conf/train.yaml): `optim` from the config; the
        adapted model, loss options and identity from the run."""
        super().__init__()
        # what the checkpoint was trained on (model, adapter config, data fingerprint): resuming elsewhere is refused
        self.identity = dict(identity)
        # from_pretrained returns models in eval mode and Lightning keeps modules' modes as they are:
        # without this, dropout (e.g. LoRA's) would silently be off during training.
        self.model = model.train()
        self.optim = optim
        self.loss = loss
        # Frozen base weights are not in our checkpoints (see on_save_checkpoint), so loading is partial.
        self.strict_loading = False
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = forward_loss(self.model, batch, self.loss)
        # Checked when the loss is logged anyway, not every step: `if` on a device tensor is a host sync.
        if self._logs_now() and not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.global_step}. "
                "Lower optim.lr, keep trainer.gradient_clip_val set, or use fp32 (trainer.precision=32-true)."
            )
        # batch_size only weighs the epoch mean: the collated row count is a host int (no sync), unlike n_tokens
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["labels"].shape[0]))
        return loss

    def _logs_now(self) -> bool:
        every = getattr(self.trainer, "log_every_n_steps", 1) if self._trainer is not None else 1
        return self.global_step % max(every, 1) == 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, n_tokens = forward_loss(self.model, batch, self.loss)
        self.val_nll.update(loss.float() * n_tokens)
        self.val_tokens.update(n_tokens)

    def on_validation_epoch_end(self) -> None:
        tokens = self.val_tokens.compute()
        if tokens > 0:
            mean = self.val_nll.compute() / tokens
            self.log("val/loss", mean, prog_bar=True, sync_dist=False)
            self.log("val/perplexity", torch.exp(mean), sync_dist=False)
        self.val_nll.reset()
        self.val_tokens.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = self.optim.build(self.model, max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip by global norm under FSDP too.

        FSDP shards the gradients, so only the root sharded module can compute their global norm; Lightning's
        FSDP precision plugin refuses norm clipping for that reason and the shipped `trainer=fsdp` (which keeps
        the default `gradient_clip_val: 1.0`) crashed at its first step. The root module's own
        `clip_grad_norm_` is the documented way (torch FSDP docs, "Gradient Clipping")."""
        by_norm = (gradient_clip_algorithm or "norm") == "norm"
        if gradient_clip_val and by_norm and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable weights: a LoRA checkpoint is a few MB instead of the whole base model."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["domaintune"] = {**self.identity, "trainable": sorted(trainable)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another model, adapter or data set (loading is partial by design, so a
        mismatch would otherwise load some tensors and silently skip the rest)."""
        saved = checkpoint.get("domaintune")
        if saved is None:
            raise DomainTuneError(
                "This checkpoint was not written by DomainTune (it records no model, adapter or data identity).",
                "Resume only from a DomainTune run's checkpoints/last.ckpt, or start a new run.",
            )
        trainable = sorted(name for name, p in self.named_parameters() if p.requires_grad)
        differ = [k for k in (*self.identity, "trainable") if saved.get(k) != {**self.identity, "trainable": trainable}[k]]
        if differ:
            what = ", ".join("trainable weights" if k == "trainable" else k for k in differ)
            raise DomainTuneError(
                f"The checkpoint was trained with a different {what} than this run (checkpoint: "
                + "; ".join(f"{k}={str(saved.get(k))[:120]}" for k in differ if k != "trainable")
                + ").",
                "Resume with the same model, adapter and data overrides as the run that wrote it (its .hydra/overrides.yaml), "
                "or start a new run without ckpt_path.",
            )
