"""The floating-point work one LoRA training step needs, for the benchmark's share of the hardware's matmul peak.

Why by hand: `torch.utils.flop_counter.FlopCounterMode` counts what an implementation *does* (a peer that runs the
LM head at every position, or recomputes activations under checkpointing, would score more "work" for the same
step), and it has no formula for the CPU's fused attention kernel. The benchmark wants one figure of *needed* work
per batch, equal for every system that trains on that batch, so that achieved FLOP/s compares systems on identical
batches the way answer tokens/s does, and sets them against what the CPU's matmuls can do. The test checks this
count against `FlopCounterMode` on a model whose every matmul it sees (eager attention).

Per step, for a model with LoRA (or any adapter whose trainable weights are `nn.Linear`s) and frozen base weights,
counting a multiply-add as 2 FLOPs:

    linear    = 4 * P_frozen * T      forward (2) + the gradient w.r.t. the input (2); frozen weights get no
                                      weight gradient. P_frozen = sum of in x out over the frozen Linear layers
                                      of the blocks (not the LM head). The first layer's q/k/v input gradient,
                                      which a step does not need (its input is the frozen embedding), is counted
                                      too: ~0.1% of a step for SmolLM2-135M
    adapter   = 6 * P_trainable * T   forward (2) + input gradient (2) + weight gradient (2) of every trainable
                                      Linear (LoRA's A and B)
    attention = 3 * sum over rows of 2 * layers * heads * head_dim * L * (L + 1)
                                      causal q.k and attention.v products (query i sees i keys: sum_i 4*h*d*i per
                                      layer), forward + a backward of twice the forward
    head      = 4 * hidden * vocab * A  the LM head at the A answer positions only (what the loss needs), forward +
                                      input gradient (the tied embedding is frozen)

T is the step's real (non-padding) tokens, L each row's real length, A the positions that predict a trained token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelShape:
    """What the count needs from a model: parameter sizes of its matmuls and its attention dimensions."""

    frozen_linear: int  # sum of in x out over frozen Linear layers outside the LM head
    trainable_linear: int  # the same over trainable Linear layers (an adapter's)
    layers: int
    heads: int
    head_dim: int
    hidden: int
    vocab: int
    intermediate: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        config = model.config
        head = model.get_output_embeddings()
        frozen = trainable = 0
        for module in model.modules():
            if not isinstance(module, nn.Linear) or module is head:
                continue
            size = module.in_features * module.out_features
            if module.weight.requires_grad:
                trainable += size
            else:
                frozen += size
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        return cls(
            frozen_linear=frozen,
            trainable_linear=trainable,
            layers=int(config.num_hidden_layers),
            heads=heads,
            head_dim=head_dim,
            hidden=int(config.hidden_size),
            vocab=int(config.vocab_size),
            intermediate=int(config.intermediate_size),
        )


def step_flops(shape: ModelShape, rows: list[int], answer: int) -> dict[str, float]:
    """The step's needed FLOPs by part (see the module docstring): rows are the real lengths of its rows, answer
    the positions that predict a trained token."""
    tokens = sum(rows)
    causal = sum(length * (length + 1) for length in rows)
    return {
        "linear": 4.0 * shape.frozen_linear * tokens,
        "adapter": 6.0 * shape.trainable_linear * tokens,
        "attention": 3.0 * 2 * shape.layers * shape.heads * shape.head_dim * causal,
        "head": 4.0 * shape.hidden * shape.vocab * answer,
    }


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, budget_s: float = 5.0) -> float:
    """Measured GFLOP/s of one (m x k) @ (k x n) matmul in `dtype`: the peak the step's FLOP/s is set against, at
    the shape of the model's largest matmuls (a step's tokens x hidden -> intermediate)."""
    import time

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # first call: allocation and kernel choice
    started, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - started < budget_s / 2:
        a @ b
        runs += 1
        if time.perf_counter() - started > budget_s:
            break
    return 2 * m * k * n * runs / (time.perf_counter() - started) / 1e9
