"""Causal attention whose backward pass runs in fp32 on a CPU (`model.attention_fp32_backward_below`).

Why this file exists: torch's CPU flash-attention kernel is fast forward in bf16, but its bf16 backward pays a fixed
cost for each (row, head) (~0.12 ms on a 2-core AMX Xeon, whatever the length), so for short rows the fp32 backward
of the same kernel is faster even with the casts: at 8 rows x 9 heads x 64 (SmolLM2), forward in bf16 and backward
together took 2.3 against 6.4 ms at 64 positions, 16.1 against 20.4 at 204, level at ~350 and slower beyond
(f32 backward 69 against 61 ms at 512; a one-off timing in stop 40, RESULTS.md). No library offers a faster CPU
backward, and the kernel's own two halves are public aten operators, so this module only chooses the backward's
dtype: the forward is the very kernel SDPA runs (bit for bit the same output), and the gradients are the fp32
kernel's on the bf16 inputs, rounded once to bf16 (closer to fp32's than the bf16 kernel's).

It applies to training's causal calls only: a CPU call with a gradient to compute, the causal flag, no mask, no
dropout, as many keys as queries, shorter than the threshold, in bf16 or fp16 (the autocast dtype, or the inputs'
own without autocast). Every other call (masks, generation, GPUs, longer rows, fp32 training) is SDPA's own. The
switch is a `TorchFunctionMode` entered around the model's forward in the losses (`forward_loss` for SFT,
`example_nll` for DPO and ORPO; evaluation's calls need no gradient and pass through), the public torch way to
route one function in a block of code: transformers' attention calls `F.scaled_dot_product_attention` from its own
module, and nothing global is patched. A compiled graph keeps SDPA's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_LOW = (torch.bfloat16, torch.float16)


class _CausalFp32Backward(torch.autograd.Function):
    """torch's CPU flash attention (causal, no mask): forward in the inputs' dtype, backward in fp32."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        q, k, v, out, lse = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad.float(), q.float(), k.float(), v.float(), out.float(), lse, 0.0, True, scale=ctx.scale
            )
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None


def _call_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype SDPA computes in: autocast's lower precision when autocast is on for the device, else q's."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype


def _may_route(model: torch.nn.Module) -> bool:
    """Whether a forward of `model` can make a call in bf16 or fp16 on the CPU: under CPU autocast to one of them, or
    with weights in one of them on the CPU."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") in _LOW
    weight = next(model.parameters(), None)
    return weight is not None and weight.device.type == "cpu" and weight.dtype in _LOW


class Fp32AttentionBackward(TorchFunctionMode):
    """Routes the causal, unmasked SDPA calls of rows shorter than `below` positions to `_CausalFp32Backward`."""

    def __init__(self, below: int, model: torch.nn.Module) -> None:
        super().__init__()
        self.below, self.model = below, model
        self.routed = 0  # calls taken (the tests read it)
        self._checkpointing: bool | None = None

    def _model_checkpoints(self) -> bool:
        """Whether the model recomputes its layers in the backward pass, read once, at the first SDPA call (after
        `model.gradient_checkpointing: auto` has decided for this forward). Such a forward keeps SDPA's own
        kernel: the recomputation runs outside this block and must save the same tensors as the forward did."""
        if self._checkpointing is None:
            self._checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in self.model.modules())
        return self._checkpointing

    def _takes(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kwargs: dict[str, Any]) -> bool:
        plain = kwargs.get("attn_mask") is None and not kwargs.get("dropout_p") and bool(kwargs.get("is_causal"))
        return (
            plain
            and not torch.compiler.is_compiling()
            and q.device.type == "cpu"
            and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
            and q.dim() == 4
            and q.shape[-2] == k.shape[-2] < self.below
            and (q.shape[1] == k.shape[1] or (bool(kwargs.get("enable_gqa")) and q.shape[1] % k.shape[1] == 0))
            and _call_dtype(q) in _LOW
            and not self._model_checkpoints()
        )

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and len(args) == 3 and self._takes(*args, kwargs):
            q, k, v = args
            dtype = _call_dtype(q)
            self.routed += 1
            return _CausalFp32Backward.apply(q.to(dtype), k.to(dtype), v.to(dtype), kwargs.get("scale"))
        return func(*args, **kwargs)


@contextlib.contextmanager
def fp32_attention_backward(below: int | None, model: torch.nn.Module) -> Iterator[Fp32AttentionBackward | None]:
    """Within the block (one forward of `model`), SDPA's causal training calls of rows shorter than `below` take
    the fp32 backward; None: SDPA's own everywhere. A compiled block (`model.compile`) traces the mode and keeps
    SDPA's own. Where no call could be routed (no gradient, as in evaluation; fp32 weights without CPU autocast, as in
    fp32 training) the mode is not entered at all, so those forwards pay nothing for it (None)."""
    if not below or not torch.is_grad_enabled() or not _may_route(model):
        yield None
        return
    with Fp32AttentionBackward(below, model) as mode:
        yield mode
