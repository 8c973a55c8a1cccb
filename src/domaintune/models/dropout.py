"""LoRA's dropout, the same distribution drawn from a faster random source on the CPU and applied sparsely.

Why this file exists: PEFT puts an `nn.Dropout` in front of every LoRA module (`lora_dropout: 0.05` in
adapter=lora), and on the CPU `nn.Dropout` draws its mask with torch's Mersenne Twister one element at a time.
Profiled on a 2-core AMD EPYC (issue 23, RESULTS.md), those masks (`aten::bernoulli_`, 210 calls a step) took
a fifth of a LoRA step of SmolLM2-135M, second only to the matmuls. No library offers a faster CPU dropout,
hence this small module.

How (stop 37): at LoRA's p = 0.05 nineteen of twenty elements are kept, so a dense 0/1 mask is mostly ones. The
dropped positions are drawn directly instead, as the gaps between them: in a row of independent Bernoulli(p)
trials the gap to the next success is geometric(p), and numpy's SFC64 generator draws count * p of those (about
65,000 for a 2,256 x 576 activation) instead of one random number per element. Applying it is a copy and a
scatter of zeros at those positions, forward and backward; the backward keeps only the positions (8 bytes for
each dropped element: 0.4 bytes an element at p = 0.05, against the 1 byte of a boolean mask). Measured on a
2-core Xeon capped to AVX2 (one-off timings, not a repo benchmark): for 2,256 x 576 fp32 elements, drawing 0.95
against 0.87 ms for the 16-bit dense draw it replaces, applying 0.47 against 0.86 ms (a conversion of the mask
to fp32 and a multiply), and the backward a 0.25 ms scatter into a gradient LoRA's fused function owns
(`models/lora_fold.py`) against another 0.86 ms. Since stop 39 the gaps are drawn as whole arrays with numpy's
own formula (`_geometric_gaps`: the same values), which halved the draw (0.51 -> 0.28 ms for 1,632 x 576 on the
AMX Xeon, in-session). The cost grows with p (each dropped element is an index), so this suits dropout rates of
the size LoRA uses.

What stays the same as `nn.Dropout`: each element is zeroed independently with probability `p` (exactly, to
double precision: the geometric gaps are drawn by inversion of an exponential draw) and the kept ones are
scaled by 1 / (1 - p); the gradient is the same positions and scale; evaluation mode is the identity. What
differs: the masks themselves (another random stream), so a run's exact numbers differ from PEFT's dropout while
its recipe does not; and a dropped position is set to zero rather than multiplied by zero, so an infinity there
gives 0 where nn.Dropout gives nan (an infinity at any kept position still propagates). Each call takes its
seed from torch's default generator, so `seed_everything` still decides every mask and an exact resume (which
restores torch's generator) draws the same masks again, as does the recomputing forward of gradient
checkpointing, which restores it too. On a GPU torch's own dropout (Philox) is fast, and under torch.compile the
generated kernel draws its own: `FastDropout` hands over to nn.Dropout in both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# the seed handed to numpy for each mask: any 63-bit value from torch's generator
_SEED_HIGH = 2**63 - 1


class FastDropout(nn.Dropout):
    """`nn.Dropout` whose CPU masks are positions drawn by numpy's SFC64 generator, seeded from torch's generator.

    A subclass, so PEFT's own checks (`isinstance(dropout, nn.Identity)` in its LoRA variants) and `repr` treat
    it as the dropout it replaces. `models/lora_fold.py` uses `draws_own_mask` and `dropped` to zero the
    positions inside LoRA's fused function and put the 1 / (1 - p) on the rank-r activations, where it costs
    nothing."""

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

    def dropped(self, x: torch.Tensor) -> torch.Tensor:
        """The positions to zero, as ascending int64 indices into x in row-major order, each position dropped
        independently with probability p."""
        return dropped_positions(self.p, x.numel(), int(torch.randint(0, _SEED_HIGH, (1,))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.draws_own_mask(x):
            return super().forward(x)
        return zero_at(x, self.dropped(x), 1.0 / (1.0 - self.p))


def dropped_positions(p: float, count: int, seed: int, block: int | None = None) -> torch.Tensor:
    """Where `count` independent Bernoulli(p) trials succeed, drawn as the geometric gaps between successes.

    Drawn in blocks of `block` gaps (default: the expected number plus six standard deviations, so one block
    nearly always suffices); a short block is followed by another from the same generator, so the positions
    are a function of the seed alone, whatever the block size. For p < 1/3 the gaps are numpy's own
    `Generator.geometric` values (`_geometric_gaps`), computed as whole arrays."""
    generator = np.random.Generator(np.random.SFC64(seed))
    block = block or int(count * p + 6.0 * (count * p * (1.0 - p)) ** 0.5) + 16
    parts, last = [], -1
    while last < count:
        positions = _geometric_gaps(generator, p, block)
        positions[0] += last
        positions = positions.cumsum_(0)
        parts.append(positions)
        last = int(positions[-1])
    positions = parts[0] if len(parts) == 1 else torch.cat(parts)
    return positions[: int(torch.searchsorted(positions, count))]


def _geometric_gaps(generator: np.random.Generator, p: float, size: int) -> torch.Tensor:
    """`generator.geometric(p, size)` as an int64 tensor, the same numbers from the same generator state.

    Why by hand: for p < 1/3 numpy draws each gap by inversion of an exponential, ceil(-E / log1p(-p)), one
    element at a time in C; the same formula over the whole array (numpy's vectorised exponential draw, division
    and ceil) gives the identical values (tests/models/test_dropout.py compares them) in 0.2 instead of 0.4 ms
    for the ~48,000 gaps of a 1,632 x 576 activation at p = 0.05 (2-core Xeon, in-session). The running sum
    is torch's, 7x faster than numpy's on int64. From p = 1/3 numpy uses another method, which is kept."""
    if p >= 1.0 / 3.0:
        return torch.from_numpy(generator.geometric(p, size=size))
    draws = generator.standard_exponential(size=size)
    np.negative(draws, out=draws)
    np.divide(draws, np.log1p(-p), out=draws)
    np.ceil(draws, out=draws)
    return torch.from_numpy(draws).to(torch.int64)


def scatter_zeros(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """t (contiguous, owned by the caller) with `positions` (row-major) set to zero, in place."""
    return t.view(-1).index_fill_(0, positions, 0.0).view(t.shape)


def zeroed_copy(t: torch.Tensor, positions: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A contiguous copy of t times `scale` (1: just the copy) with `positions` (row-major) set to zero; t itself
    is left as it is (autograd may have saved it)."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out = out.copy_(t) if scale == 1.0 else torch.mul(t, scale, out=out)
    return scatter_zeros(out, positions)


class _ZeroAt(torch.autograd.Function):
    """`x * scale` with `positions` zeroed, and the same for the gradient, keeping only the positions for the
    backward. Written by hand because torch has no sparse-positions dropout: a dense mask costs a conversion and
    a multiply over every element (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return zeroed_copy(x, positions, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (positions,) = ctx.saved_tensors
        return zeroed_copy(grad, positions, ctx.scale), None, None


def zero_at(x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
    """x with the elements at `positions` (row-major) zeroed and the rest multiplied by `scale` (1: unscaled)."""
    return _ZeroAt.apply(x, positions, scale)


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
