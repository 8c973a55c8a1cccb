"""The LightningModule: trains a (PEFT-wrapped) causal LM on answer tokens only."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn
from torchmetrics import SumMetric
from transformers import get_scheduler

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "labels")


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over the answer tokens (labels != -100) and how many tokens it averages.

    The model computes the loss itself (so PEFT prompt methods that prepend virtual tokens stay correct);
    `loss * n_tokens` is the summed NLL that token-weighted perplexity needs.
    """
    out = model(**{k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}, use_cache=False)
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    return out.loss, n_tokens


class CausalLMModule(pl.LightningModule):
    """Wraps the model to train; checkpoints hold only its trainable weights."""

    def __init__(self, model: nn.Module, optim: DictConfig | dict[str, Any]):
        super().__init__()
        # from_pretrained returns models in eval mode and Lightning keeps modules' modes as they are:
        # without this, dropout (e.g. LoRA's) would silently be off during training.
        self.model = model.train()
        self.optim = dict(optim)
        # Frozen base weights are not in our checkpoints (see on_save_checkpoint), so loading is partial.
        self.strict_loading = False
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n_tokens = forward_loss(self.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.global_step}. "
                "Lower optim.lr, keep trainer.gradient_clip_val set, or use fp32 (trainer.precision=32-true)."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=int(n_tokens))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, n_tokens = forward_loss(self.model, batch)
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
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(self.optim.get("weight_decay", 0.0))},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(self.optim["lr"]),
            betas=tuple(self.optim.get("betas", (0.9, 0.999))),
            eps=float(self.optim.get("eps", 1e-8)),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.optim.get("warmup_steps") or math.ceil(float(self.optim.get("warmup_ratio", 0.0)) * total))
        scheduler = get_scheduler(
            self.optim.get("scheduler", "cosine"),
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=dict(self.optim.get("scheduler_kwargs") or {}),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable weights: a LoRA checkpoint is a few MB instead of the whole base model."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
