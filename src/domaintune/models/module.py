"""The LightningModule: trains a (PEFT-wrapped) causal LM on answer tokens only (the loss is in loss.py)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import FSDPStrategy
from torch import nn
from torchmetrics import SumMetric

from domaintune.models.loss import LossOptions
from domaintune.models.objectives import Objective
from domaintune.models.optim import Optimization
from domaintune.utils.errors import DomainTuneError


class CausalLMModule(pl.LightningModule):
    """Wraps the model to train; checkpoints hold only its trainable weights."""

    def __init__(self, model: nn.Module, optim: Optimization, loss: LossOptions, identity: dict[str, str], objective: Objective):
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
        self.objective = objective
        # Frozen base weights are not in our checkpoints (see on_save_checkpoint), so loading is partial.
        self.strict_loading = False
        # val/loss = the objective's validation sum / its weight (SFT: summed answer-token NLL / tokens; DPO and
        # ORPO: summed pair losses / pairs), accumulated over the whole validation set
        self.val_sum = SumMetric()
        self.val_weight = SumMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.objective.training_loss(self.model, batch, self.loss)
        # Checked when the loss is logged anyway, not every step: `if` on a device tensor is a host sync.
        if self._logs_now() and not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.global_step}. "
                "Lower optim.lr, keep trainer.gradient_clip_val set, or use fp32 (trainer.precision=32-true)."
            )
        # batch_size only weighs the epoch mean: the collated row count is a host int (no sync), unlike n_tokens
        rows = int(batch["input_ids"].shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=rows)
        for name, value in metrics.items():  # preference objectives: rewards, margins, log-probabilities
            self.log(f"train/{name}", value, prog_bar=name == "rewards/accuracy", batch_size=rows)
        return loss

    def _logs_now(self) -> bool:
        every = getattr(self.trainer, "log_every_n_steps", 1) if self._trainer is not None else 1
        return self.global_step % max(every, 1) == 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, weight = self.objective.validation(self.model, batch, self.loss)
        self.val_sum.update(total)
        self.val_weight.update(weight)

    def on_validation_epoch_end(self) -> None:
        weight = self.val_weight.compute()
        if weight > 0:
            mean = self.val_sum.compute() / weight
            self.log("val/loss", mean, prog_bar=True, sync_dist=False)
            if self.objective.token_nll:  # a token NLL: its perplexity means something
                self.log("val/perplexity", torch.exp(mean), sync_dist=False)
        self.val_sum.reset()
        self.val_weight.reset()

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
