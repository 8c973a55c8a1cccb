"""LoRA's dropout, the same distribution drawn from a faster random source on the CPU.

Why this file exists: PEFT puts an `nn.Dropout` in front of every LoRA module (`lora_dropout: 0.05` in
adapter=lora), and on the CPU `nn.Dropout` draws its mask with torch's Mersenne Twister one element at a time.
Profiled on a 2-core AMD EPYC (issue 23, RESULTS.md), those masks (`aten::bernoulli_`, 210 calls a step) took
a fifth of a LoRA step of SmolLM2-135M, second only to the matmuls. numpy's SFC64 bit generator fills 64 random
bits per draw, so the same masks cost about 2.4x less (measured on the same machine: 11 ms against 27 ms
for 3.7 million elements). No library offers a faster CPU dropout, hence this small module.

What stays the same as `nn.Dropout`: each element is zeroed independently with probability `p` (to 2^-32:
a 32-bit draw is compared with round(p * 2^32)) and the kept ones are scaled by 1 / (1 - p); the gradient is
the same mask and scale; evaluation mode is the identity. What differs: the masks themselves (another random
stream), so a run's exact numbers differ from PEFT's dropout while its recipe does not. Each call takes its
seed from torch's default generator, so `seed_everything` still decides every mask and an exact resume (which
restores torch's generator) draws the same masks again, as does the recomputing forward of gradient
checkpointing, which restores it too. On a GPU torch's own dropout (Philox) is fast, and under torch.compile
the generated kernel draws its own: `FastDropout` hands over to nn.Dropout in both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# the seed handed to numpy for each mask: any 63-bit value from torch's generator
_SEED_HIGH = 2**63 - 1
_BITS = 2**32


class FastDropout(nn.Dropout):
    """`nn.Dropout` whose CPU masks come from numpy's SFC64 generator, seeded from torch's generator.

    A subclass, so PEFT's own checks (`isinstance(dropout, nn.Identity)` in its LoRA variants) and `repr` treat
    it as the dropout it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # a GPU's dropout and torch.compile's generated one are fast already (and numpy would break the graph)
        if x.device.type != "cpu" or torch.compiler.is_compiling() or self.inplace or self.p >= 1.0:
            return super().forward(x)
        seed = int(torch.randint(0, _SEED_HIGH, (1,)))
        count = x.numel()
        bits = np.random.SFC64(seed).random_raw((count + 1) // 2).view(np.uint32)[:count]
        drop = torch.from_numpy(bits < np.uint32(round(self.p * _BITS))).view(x.shape)
        return _ScaleAndDrop.apply(x, drop, 1.0 / (1.0 - self.p))


class _ScaleAndDrop(torch.autograd.Function):
    """`x * scale` with the `drop` positions zeroed, and the same for the gradient: two passes over the tensor
    each way, and only the boolean mask kept for the backward (as nn.Dropout keeps it).

    Why not `x.masked_fill(drop, 0).mul_(scale)`: an out-of-place masked_fill copies `x` first, and autograd's
    backward of the pair copies the gradient again, three passes each way; these tensors are a LoRA step's
    largest element-wise traffic (210 masks a step for SmolLM2). The values and gradients are identical."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return torch.mul(x, scale).masked_fill_(drop, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return torch.mul(grad, ctx.scale).masked_fill_(drop, 0.0), None, None


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
