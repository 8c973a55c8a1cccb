"""LoRA with its scales applied to the rank-r activations (`adapter.fold_scales`): the same function, two fewer
passes over a layer's activations each way.

Why this file exists: PEFT computes a LoRA layer as `result + lora_B(lora_A(dropout(x))) * scaling`, so the
scaling (alpha / r) multiplies the layer's whole output, and the dropout's 1 / (1 - p) its whole input, in the
forward and again in the backward. Both are scalars in front of linear maps, so they can multiply the rank-r
activations between A and B instead (16 numbers per position instead of 576-1536 for SmolLM2): on a 2-core
Xeon in fp32 those scalar multiplies were about a tenth of a LoRA step (issue 23's profile, RESULTS.md).

How: PEFT's own extension point for LoRA variants (`LoraLayer.lora_variant`, as DoRA uses it): a layer whose
adapter has a variant hands its forward and its merges to it. `FoldedScales` computes
`result + lora_B(lora_A(mask(x)) * scaling / (1 - p))` with `FastDropout`'s mask applied unscaled (or PEFT's
own dropout applied as it is, when `adapter.fast_dropout=false`), and merges and unmerges exactly as vanilla LoRA
(`get_delta_weight`). It adds no parameters and changes no saved file: a saved adapter loads and runs as plain
LoRA anywhere. Only plain LoRA linears take it (no other variant such as DoRA, no `lora_bias`, whose bias sits
after B and must not be scaled twice). PEFT calls the variant API private and prone to change; the versions are
pinned in constraints.txt, and tests/models/test_lora_fold.py checks outputs, gradients and merges against
PEFT's own path.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from torch import nn

from domaintune.models.dropout import FastDropout, apply_mask


class FoldedScales(LoraVariant):
    """Vanilla LoRA whose scalar factors multiply the rank-r activations (see the module docstring)."""

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, **kwargs: Any) -> None:
        """Nothing to initialise: no parameters beyond vanilla LoRA's."""

    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight + _delta(module, active_adapter, orig_weight)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data += _delta(module, active_adapter, orig_weight)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight - _delta(module, active_adapter, orig_weight)

    @staticmethod
    def forward(module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        dropout = module.lora_dropout[active_adapter]
        factor = module.scaling[active_adapter]
        if isinstance(dropout, FastDropout) and dropout.draws_own_mask(x):
            x = apply_mask(x, dropout.keep_mask(x), 1.0)
            factor = factor / (1.0 - dropout.p)
        else:
            x = dropout(x)
        return result + module.lora_B[active_adapter](module.lora_A[active_adapter](x) * factor)


def _delta(module: LoraLayer, adapter: str, weight: torch.Tensor) -> torch.Tensor:
    """Vanilla LoRA's weight delta (B @ A x scaling, PEFT's own `get_delta_weight`) in the base weight's dtype."""
    return module.get_delta_weight(adapter).to(weight.dtype)


def fold_lora_scales(model: nn.Module) -> tuple[int, int]:
    """Give every plain LoRA linear's adapter the `FoldedScales` variant, in place. Returns (LoRA layers found,
    adapters folded); layers of other kinds or variants keep PEFT's own forward."""
    found = folded = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        found += 1
        if type(module) is not LoraLinear:
            continue
        for name in module.lora_A:
            if name in module.lora_variant or module.lora_bias.get(name):
                continue
            module.lora_variant[name] = FoldedScales()
            folded += 1
    return found, folded
