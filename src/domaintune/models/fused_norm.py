"""RMSNorm that hands its linears the autocast dtype (`model.fused_norm`).

Why this file exists: under bf16 autocast a Llama block keeps its residual stream in fp32 (the weights are fp32), and
transformers' `LlamaRMSNorm` returns fp32. Every linear that reads the norm's output casts it to bf16 itself: the
attention's q, k and v projections three times, the MLP's gate and up projections twice. In the backward pass each
of those casts casts its gradient back to fp32, and autograd sums the three (or two) fp32 gradients in separate
passes. Each of these passes is memory-bound (~0.3 ms over 8 x 282 x 576 on a 2-core Xeon), and SmolLM2 has 61 norms.

`_RMSNorm` computes the same normalisation in fp32 (the norm from one `vector_norm` pass, no squared copy) and
writes its output once, in the autocast dtype, so the linears take it as it is; their gradients meet in one bf16
sum, and the backward pass upcasts once. The linears would have rounded the output to bf16 anyway, so the forward
values are the same; the gradient differs from autocast's by the rounding of that one bf16 sum (a bf16 step's
gradients stay as far from fp32's as before: tests/models/test_fused_norm.py). In-session A/B on the real model,
bf16, forward and backward of the first planned batches: 1.07-1.12x per step (RESULTS.md, stop 38). In fp32 the
casts do not exist and the same function measured level, so without autocast the model's own forward runs.

Only classes whose forward is Llama's formula (`weight * x / sqrt(mean(x^2) + eps)`, computed in fp32) take it:
`NORMS` lists them, and each listed class is checked against its own forward by the tests. A compiled graph keeps
the model's own forward too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

# transformers' RMSNorm classes whose forward is exactly Llama's formula
NORMS: tuple[type[nn.Module], ...] = (LlamaRMSNorm,)


class _RMSNorm(torch.autograd.Function):
    """`weight * x / sqrt(mean(x^2) + eps)` in fp32, returned in `dtype`; gradients for x and (when it trains) the
    weight, in their own dtypes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
        xf = x.float()
        rstd = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).pow_(2).div_(x.shape[-1]).add_(eps).rsqrt_()
        out = (xf * rstd).mul_(weight.float())
        ctx.save_for_backward(x, rstd, weight)
        return out.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, rstd, weight = ctx.saved_tensors
        xf = x.float()
        g = grad.float()
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g * xf * rstd).flatten(0, -2).sum(0).to(weight.dtype)
        if not ctx.needs_input_grad[0]:
            return None, grad_w, None, None
        # d/dx of w * x * r, r = (mean(x^2) + eps)^-1/2:  r * (w g) - x * r^3 * mean(w g x)
        gw = g.mul_(weight.float()) if g is not grad else g * weight.float()
        coef = torch.linalg.vecdot(gw, xf).unsqueeze(-1).mul_(rstd.pow(3)).div_(-x.shape[-1])
        grad_x = gw.mul_(rstd).addcmul_(xf, coef)
        return grad_x.to(x.dtype), grad_w, None, None


def _fused_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The swapped class's forward: `_RMSNorm` under autocast, the class's own forward otherwise."""
    device = hidden_states.device.type
    if not torch.is_autocast_enabled(device) or torch.compiler.is_compiling():
        return super(type(self), self).forward(hidden_states)
    with torch.autocast(device, enabled=False):
        return _RMSNorm.apply(hidden_states, self.weight, float(self.variance_epsilon), torch.get_autocast_dtype(device))


_FUSED: dict[type[nn.Module], type[nn.Module]] = {}


def fuse_norms(model: nn.Module) -> int:
    """Give every norm of a class in `NORMS` its fused subclass (same weights, state dict and `isinstance`), in place.
    Returns how many norms took it."""
    count = 0
    for module in model.modules():
        base = type(module)
        if base not in NORMS:
            continue
        if base not in _FUSED:
            _FUSED[base] = type(f"Fused{base.__name__}", (base,), {"forward": _fused_forward, "__module__": __name__})
        module.__class__ = _FUSED[base]
        count += 1
    return count
