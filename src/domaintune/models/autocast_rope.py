"""Rotary position embeddings in the autocast dtype (`model.autocast_rope`).

Why this file exists: transformers' rotary module computes cos and sin in fp32 and returns them in the dtype of the
hidden states it is given. Under autocast with fp32 weights those hidden states are fp32, so cos and sin stay fp32
while q and k come out of their (autocast) projections in bf16: `q * cos + rotate_half(q) * sin` then promotes to
fp32, runs its element-wise passes over fp32 copies, and SDPA casts q and k back to bf16 (and their gradients
back again in the backward pass). Returning cos and sin in the autocast dtype keeps the rotation in bf16, as
transformers itself runs it for a model whose weights are bf16 (`cos.to(x.dtype)` there gives bf16 too): the same
angles, computed in fp32 and rounded once. In-session A/B on the real model, bf16, the first planned batches, each
batch run twice in one process, in both orders: ~1.03x per step (RESULTS.md, stop 40). Without autocast nothing changes.

Only classes whose forward returns `(cos, sin)` take it: `ROTARIES` lists them, and the tests check each. A compiled
graph keeps the module's own output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

# transformers' rotary embedding classes whose forward(x, position_ids) returns (cos, sin)
ROTARIES: tuple[type[nn.Module], ...] = (LlamaRotaryEmbedding,)


def _in_autocast_dtype(module: nn.Module, args: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> Any:
    """Forward hook: (cos, sin) in the autocast dtype when autocast is on for their device; else unchanged (None)."""
    device = output[0].device.type
    if not torch.is_autocast_enabled(device) or torch.compiler.is_compiling():
        return None
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) for t in output)


def cast_rotaries(model: nn.Module) -> int:
    """Hook every rotary module of a class in `ROTARIES` so that, under autocast, it returns cos and sin in the
    autocast dtype. Returns how many took the hook."""
    count = 0
    for module in model.modules():
        if type(module) in ROTARIES:
            module.register_forward_hook(_in_autocast_dtype)
            count += 1
    return count
