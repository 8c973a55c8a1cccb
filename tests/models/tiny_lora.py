"""The setup the bf16-precision tests share: the tiny Llama with LoRA on one real training batch, and how far a
step's gradients are from a reference step's."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig


def tiny_lora_batch(cfg: DictConfig, tokenizer: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(the model with cfg's adapter in training mode, the first training batch). The trainable weights are drawn
    from N(0, 0.05), so LoRA's B is not zero and every gradient is non-trivial."""
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loading import load_model
    from domaintune.utils.hydra import build

    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).train()
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    return model, batch


def trainable_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters' gradients, in float64 copies."""
    return {k: p.grad.double().clone() for k, p in model.named_parameters() if p.requires_grad}


def grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """The relative distance of all gradients together from the reference's."""
    return float(sum((grads[k] - ref[k]).norm() ** 2 for k in ref) ** 0.5 / sum(r.norm() ** 2 for r in ref.values()) ** 0.5)
