"""LoRA's dropout, the same distribution drawn from a faster random source on the CPU.

Why this file exists: PEFT puts an `nn.Dropout` in front of every LoRA module (`lora_dropout: 0.05` in
adapter=lora), and on the CPU `nn.Dropout` draws its mask with torch's Mersenne Twister one element at a time.
Profiled on a 2-core AMD EPYC (issue 23, RESULTS.md), those masks (`aten::bernoulli_`, 210 calls a step) took
a fifth of a LoRA step of SmolLM2-135M, second only to the matmuls. numpy's SFC64 bit generator fills 64 random
bits per draw, so the same masks cost about 2.4x less (measured on the same machine: 11 ms against 27 ms
for 3.7 million elements). No library offers a faster CPU dropout, hence this small module.

What stays the same as `nn.Dropout`: each element is zeroed independently with probability `p` (to 2^-16: a
16-bit draw is compared with round(p * 2^16), so p=0.05 drops with probability 0.050003) and the kept ones are
scaled by 1 / (1 - p), by multiplying with the 0/1 mask as nn.Dropout does on the CPU (so an infinity at a
dropped position becomes nan there too); the gradient is the same mask and scale; evaluation mode is the
identity. What differs: the masks themselves (another random stream), so a run's exact numbers differ from
PEFT's dropout while its recipe does not. Each call takes its seed from torch's default generator, so
`seed_everything` still decides every mask and an exact resume (which restores torch's generator) draws the
same masks again, as does the recomputing forward of gradient checkpointing, which restores it too. On a GPU
torch's own dropout (Philox) is fast, and under torch.compile the generated kernel draws its own: `FastDropout`
hands over to nn.Dropout in both.

16-bit draws (stop 35): half the random bits of 32-bit ones and half the comparison traffic, for a rate that
differs from p by at most 2^-17; drawing the masks had still been a twelfth of a profiled fp32 LoRA step on a
2-core Xeon (523 ms, 277 ms after: RESULTS.md, stop 35).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# the seed handed to numpy for each mask: any 63-bit value from torch's generator
_SEED_HIGH = 2**63 - 1
_BITS = 2**16


class FastDropout(nn.Dropout):
    """`nn.Dropout` whose CPU masks come from numpy's SFC64 generator, seeded from torch's generator.

    A subclass, so PEFT's own checks (`isinstance(dropout, nn.Identity)` in its LoRA variants) and `repr` treat
    it as the dropout it replaces. `models/lora_fold.py` uses `draws_own_mask` and `keep_mask` to apply the
    mask here and the 1 / (1 - p) on LoRA's rank-r activations, where it costs nothing."""

    def draws_own_mask(self, x: torch.Tensor) -> bool:
        """Whether this call draws its mask with numpy: training on the CPU in eager mode with 0 < p < 1. A GPU's
        dropout and torch.compile's generated one are fast already (and numpy would break the graph)."""
        return (
            self.training
            and 0.0 < self.p < 1.0
            and not self.inplace
            and x.device.type == "cpu"
            and not torch.compiler.is_compiling()
        )

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A boolean mask of x's shape, True where an element is kept (probability 1 - p)."""
        seed = int(torch.randint(0, _SEED_HIGH, (1,)))
        count = x.numel()
        bits = np.random.SFC64(seed).random_raw(-(-count // 4)).view(np.uint16)[:count]
        threshold = np.uint16(min(round(self.p * _BITS), _BITS - 1))
        return torch.from_numpy(bits >= threshold).view(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.draws_own_mask(x):
            return super().forward(x)
        return apply_mask(x, self.keep_mask(x), 1.0 / (1.0 - self.p))


class _MaskAndScale(torch.autograd.Function):
    """`x * keep * scale` (keep a boolean mask), and the same for the gradient, keeping only the boolean mask
    for the backward (1 byte an element, as nn.Dropout keeps it, not the 2-4 of a float mask).

    Why by hand: a multiply by the mask converted to x's dtype is one vectorised pass, where `masked_fill` on a
    boolean mask ran at a third of that speed on a CPU (0.6-0.9 against 0.3 ms for 1.3 million fp32 elements, a
    one-off timing on a 2-core Xeon, not a repo benchmark); and with `scale` 1 (LoRA's rank-r side takes it,
    `models/lora_fold.py`) the scaling pass goes too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = torch.mul(x, _as(keep, x.dtype))
        return out if scale == 1.0 else out.mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        out = torch.mul(grad, _as(keep, grad.dtype))
        return (out if ctx.scale == 1.0 else out.mul_(ctx.scale)), None, None


def _as(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as 0/1 in `dtype`, converted through uint8 (the same bytes): torch's bool-to-float kernel
    ran 4.7x slower than its uint8-to-float one on a 2-core Xeon (1.57 against 0.34 ms for 3.4 million elements;
    a one-off timing, not a repo benchmark)."""
    return keep.view(torch.uint8).to(dtype)


def apply_mask(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """x with the elements where `keep` is False zeroed and the rest multiplied by `scale` (1: unscaled)."""
    return _MaskAndScale.apply(x, keep, scale)


def use_fast_dropout(model: nn.Module) -> tuple[int, int]:
    """Replace every PEFT LoRA dropout (`lora_dropout[<adapter>]`, an `nn.Dropout`) by a `FastDropout` of the same
    probability, in place. Returns (LoRA layers found, dropouts replaced): LoRA layers with `lora_dropout: 0` hold
    `nn.Identity` and are left alone."""
    found = replaced = 0
    for module in model.modules():
        layers = getattr(module, "lora_dropout", None)
        if not isinstance(layers, nn.ModuleDict):
            continue
        found += 1
        for name, layer in layers.items():
            if type(layer) is nn.Dropout:
                layers[name] = FastDropout(p=layer.p)
                replaced += 1
    return found, replaced
