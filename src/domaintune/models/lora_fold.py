"""LoRA computed by DomainTune's own function (`adapter.fold_scales`): the same function and saved adapter as PEFT's
LoRA, with fewer passes over a layer's activations each way.

Why this file exists: PEFT computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`: the base
output and the LoRA output are two tensors of the layer's output size added in a third; the scaling (alpha / r)
multiplies the whole output and the dropout's 1 / (1 - p) the whole input, forward and backward; and in the
backward autograd adds the base's and LoRA's input gradients in yet another pass. On the CPU those element-wise
passes are memory-bound (about 0.5 ms each over a 2,256 x 576 fp32 activation on a 2-core Xeon) and a step of
SmolLM2 runs 210 such layers, so they were a tenth of a step (issue 23's profiles, RESULTS.md).

What it does instead, in two parts:
- `FoldedScales`, a PEFT LoRA variant (`LoraLayer.lora_variant`, the extension point DoRA uses): both scalars
  multiply the rank-r activations between A and B (16 numbers a position instead of 576-1536), and merges and
  unmerges are vanilla LoRA's (`get_delta_weight`). PEFT's forward runs through it whenever the fused function
  below does not apply (PEFT's own `nn.Dropout` with `adapter.fast_dropout=false`, a GPU's dropout, a compiled
  graph, several active adapters, mixed dtypes without autocast).
- `FoldedLoraLinear`, the class a folded layer takes (a subclass of PEFT's `lora.Linear`, so every `isinstance`
  check, merge, save and load treats it as PEFT's): its forward runs `_LoraLinear`, one autograd function for
  the base product, the dropout and A and B. Forward: `h = (x with FastDropout's positions zeroed) @ A^T * s`,
  `y = h @ B^T`, then the base product accumulated into y by the matmul itself (`addmm_`, beta 1), so no sum
  pass and no second output. Backward: B's and A's gradients from the saved `h` and masked input, the input
  gradient as `((g @ B) * s) @ A`, its dropped positions zeroed in place, and the base's `g @ W` accumulated
  into it by the matmul, so autograd adds nothing. It saves what PEFT's path saves (the masked input and the
  rank-r activations; the dropped positions instead of a mask).
Measured in-session on a 2-core Xeon capped to AVX2 (not a repo benchmark, which is RESULTS.md's stop 37): a
forward and backward of the real model on the first planned batch (8 x 282) took 9.69 s against 10.56 s
(medians of 10 alternating pairs).

No parameters are added and no saved file changes: a saved adapter loads and runs as plain LoRA anywhere. Only
plain LoRA linears take it (no other variant such as DoRA, no `lora_bias`, whose bias sits after B and must not
be scaled twice, no transposed `fan_in_fan_out` base). PEFT calls the variant API private and prone to change;
the versions are pinned in constraints.txt, and tests/models/test_lora_fold.py checks outputs, gradients and
merges against PEFT's own path, in fp32 and under bf16 autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from torch import nn

from domaintune.models.dropout import FastDropout, scatter_zeros, zero_at, zeroed_copy


class FoldedScales(LoraVariant):
    """Vanilla LoRA whose scalar factors multiply the rank-r activations (see the module docstring)."""

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, **kwargs: Any) -> None:
        """Nothing to initialise: no parameters beyond vanilla LoRA's."""

    # PEFT merges through `weight.data`, which torch does not version: each merge forgets the base weight's kept
    # cast (`FoldedLoraLinear.base_weight`) so the next forward casts the merged or unmerged weight again
    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        _forget_cast(module)
        return orig_weight + _delta(module, active_adapter, orig_weight)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        _forget_cast(module)
        orig_weight.data += _delta(module, active_adapter, orig_weight)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        _forget_cast(module)
        return orig_weight - _delta(module, active_adapter, orig_weight)

    @staticmethod
    def forward(module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        dropout = module.lora_dropout[active_adapter]
        factor = module.scaling[active_adapter]
        drawn = _own_positions(dropout, x, factor)
        if drawn is None:
            x = dropout(x)
        else:
            positions, factor = drawn
            x = zero_at(x, positions, 1.0)
        return result + module.lora_B[active_adapter](module.lora_A[active_adapter](x) * factor)


def _own_positions(dropout: nn.Module, x: torch.Tensor, factor: float) -> tuple[torch.Tensor, float] | None:
    """Where `FastDropout` draws its own mask for x: its dropped positions and LoRA's factor times the dropout's
    1 / (1 - p), which the rank-r side takes (the folded path and the fused function both apply it so); else None."""
    if isinstance(dropout, FastDropout) and dropout.draws_own_mask(x):
        return dropout.dropped(x), factor / (1.0 - dropout.p)
    return None


class _LoraLinear(torch.autograd.Function):
    """`x @ W^T + b + ((x with `dropped` zeroed) @ A^T * factor) @ B^T` and its gradients for x, A and B, with the
    sums done by the matmuls (see the module docstring). All tensors in one dtype; W and b take no gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        dropped: torch.Tensor | None,
        factor: float,
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        masked = rows if dropped is None else zeroed_copy(rows, dropped)
        low = (masked @ lora_a.t()).mul_(factor)
        out = (low @ lora_b.t()).addmm_(rows, weight.t())
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(masked, dropped, low, weight, lora_a, lora_b)
        ctx.factor = factor
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        masked, dropped, low, weight, lora_a, lora_b = ctx.saved_tensors
        needs_x, _, _, needs_a, needs_b, _, _ = ctx.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])
        # B's gradient as (low^T g)^T: the same product with the long dimension inside, 1.1 against 0.6 ms for a
        # 1,632 x 1,536 gradient in fp32 under the AVX2 cap (0.35 against 0.30 in bf16; in-session timings)
        grad_b = (low.t() @ grad_rows).t() if needs_b else None
        grad_low = (grad_rows @ lora_b).mul_(ctx.factor)
        grad_a = grad_low.t() @ masked if needs_a else None
        if not needs_x:  # e.g. the first block's projections of the frozen embeddings: no base backward matmul
            return None, None, None, grad_a, grad_b, None, None
        grad_x = grad_low @ lora_a
        if dropped is not None:
            scatter_zeros(grad_x, dropped)
        grad_x.addmm_(grad_rows, weight)
        return grad_x.view(*grad.shape[:-1], grad_x.shape[-1]), None, None, grad_a, grad_b, None, None


class FoldedLoraLinear(LoraLinear):
    """PEFT's LoRA linear whose forward runs `_LoraLinear` when it can (see the module docstring); otherwise,
    PEFT's own forward, which runs the `FoldedScales` variant. `keep_casts` and `kept_cast` are set by
    `fold_lora_scales` (a class swap runs no __init__)."""

    keep_casts: bool
    kept_cast: tuple[tuple[int, int, torch.dtype], torch.Tensor] | None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        fused = self._fused_inputs(x, args, kwargs)
        if fused is None:
            return super().forward(x, *args, **kwargs)
        adapter, dropped, factor, dtype = fused
        base = self.base_layer
        # under autocast the products run in its dtype, as F.linear would; the casts are autograd's, so A's and B's
        # gradients arrive in their own dtype
        with torch.autocast(x.device.type, enabled=False):
            return _LoraLinear.apply(
                x.to(dtype),
                self.base_weight(dtype),
                None if base.bias is None else base.bias.to(dtype),
                self.lora_A[adapter].weight.to(dtype),
                self.lora_B[adapter].weight.to(dtype),
                dropped,
                factor,
            )

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The base weight in the compute dtype. A frozen weight in another dtype (fp32 weights under bf16
        autocast) is cast once and kept between steps when `adapter.keep_casts` is on: autocast's own cache keeps
        only casts of weights that take a gradient, and only within one autocast region, so every step cast all
        210 base weights of SmolLM2 again (~70 ms of a 2.6 s bf16 step on a 2-core Xeon, cProfile). The kept copy
        costs 2 bytes a base parameter in bf16. It is recast when the weight's storage or version changes (a
        move, a `load_state_dict`, an in-place update) and after PEFT's merges (`FoldedScales`), which write
        through `.data` and leave the version as it was; any other write through `.data` is not seen."""
        weight = self.base_layer.weight
        if weight.dtype == dtype or weight.requires_grad or weight.is_inference() or not self.keep_casts:
            return weight.to(dtype)
        key = (weight.data_ptr(), weight._version, dtype)
        if self.kept_cast is None or self.kept_cast[0] != key:
            # a normal tensor even when first cast under torch.inference_mode (evaluation, a reference model's
            # pass), so that a training step after it can save it for its backward
            with torch.inference_mode(False):
                self.kept_cast = (key, weight.detach().to(dtype))
        return self.kept_cast[1]

    def _fused_inputs(
        self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, torch.Tensor | None, float, torch.dtype] | None:
        """(adapter, dropped positions, factor, compute dtype) when the fused function computes what PEFT's forward
        would; None where PEFT's forward must run."""
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        adapter = self.active_adapters[0]
        base = self.base_layer
        if (
            adapter not in self.lora_A
            or not isinstance(self.lora_variant.get(adapter), FoldedScales)
            or type(base) is not nn.Linear
            or self.fan_in_fan_out
            or torch.compiler.is_compiling()
        ):
            return None
        weights = {base.weight.dtype, self.lora_A[adapter].weight.dtype, self.lora_B[adapter].weight.dtype}
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        elif weights == {x.dtype}:
            dtype = x.dtype
        else:  # e.g. a bf16 base with fp32 adapters and no autocast: PEFT computes LoRA in the adapter's dtype
            return None
        dropout, factor = self.lora_dropout[adapter], float(self.scaling[adapter])
        drawn = _own_positions(dropout, x, factor)
        if drawn is not None:
            return adapter, *drawn, dtype
        if isinstance(dropout, nn.Identity) or not dropout.training or dropout.p == 0.0:
            return adapter, None, factor, dtype
        return None


def _forget_cast(module: LoraLayer) -> None:
    """Drop a kept cast of the base weight (`FoldedLoraLinear.base_weight`), if the layer keeps one."""
    if isinstance(module, FoldedLoraLinear):
        module.kept_cast = None


def _delta(module: LoraLayer, adapter: str, weight: torch.Tensor) -> torch.Tensor:
    """Vanilla LoRA's weight delta (B @ A x scaling, PEFT's own `get_delta_weight`) in the base weight's dtype."""
    return module.get_delta_weight(adapter).to(weight.dtype)


def fold_lora_scales(model: nn.Module, keep_casts: bool) -> tuple[int, int]:
    """Give every plain LoRA linear's adapter the `FoldedScales` variant and the layer the `FoldedLoraLinear`
    class, in place; `keep_casts`: whether those layers keep their base weight's autocast copy between steps
    (`FoldedLoraLinear.base_weight`). Returns (LoRA layers found, adapters folded); layers of other kinds or
    variants keep PEFT's own forward."""
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
        if any(isinstance(v, FoldedScales) for v in module.lora_variant.values()):
            module.__class__ = FoldedLoraLinear
            module.keep_casts, module.kept_cast = keep_casts, None
    return found, folded
