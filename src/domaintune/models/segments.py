"""Rows that hold a context once and several continuations after it, each in its own segment.

Scoring the labels of a classification record (or the choices of a benchmark item) needs the log-likelihood of
every continuation after the same context. Running the context once per continuation costs K forward passes
of the whole prompt; here one row holds the context, then each continuation (less its last token) in a segment
whose position ids restart where the context ends and whose tokens see the context and their own segment only
(a 4-D boolean mask). The numbers equal K separate rows up to float rounding (tests/evaluation compare both,
and with lm-evaluation-harness).

One builder serves the evaluation's scorer (evaluation/multiple_choice.py, under inference mode) and the
`choice` training objective (models/objectives.py, with gradients), so the two cannot drift apart. Written by
hand: transformers has no batched shared-prefix scorer that takes a custom mask and trains through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from domaintune.models.loss import logits_at

Row = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, continuations' ids)


def row_length(row: Row) -> int:
    """Tokens a row takes: the context and each continuation but its last token (nothing follows it)."""
    ctx, continuations = row
    return len(ctx) + sum(len(c) - 1 for c in continuations)


def segment_batch(rows: list[Row], pad_id: int, shared: bool = True) -> dict[str, torch.Tensor]:
    """Tensors for one batch of rows, continuations numbered in row order (their `owner` index):

    - input_ids, position_ids (B, W); `allowed` (B, W, W): which position each position may attend to;
      `lengths` (B,): real tokens per row;
    - keep (B, W): the positions whose logits predict a continuation token;
    - flat_pos, targets, owner (T,): per continuation token, the row-major position (b * W + p) of the logit
      that predicts it, the token, and the continuation it belongs to.

    `shared=False` takes rows of one continuation each, laid out as one plain causal sequence (the model then
    gets a padding mask, for attention kernels that take no custom mask).
    """
    if not shared and any(len(conts) != 1 for _, conts in rows):
        raise ValueError("unshared rows hold exactly one continuation")
    width = max(row_length(r) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)
    keep = torch.zeros((n, width), dtype=torch.bool)
    flat_pos: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    n_cont = 0
    for b, (ctx, continuations) in enumerate(rows):
        c = len(ctx)
        ids[b, :c] = torch.as_tensor(list(ctx), dtype=torch.long)
        pos[b, :c] = torch.arange(c)
        allowed[b, :c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
        keep[b, c - 1] = True
        at = c
        for cont in continuations:
            seg = list(cont[:-1])
            k = len(seg)
            ids[b, at : at + k] = torch.as_tensor(seg, dtype=torch.long)
            pos[b, at : at + k] = torch.arange(c, c + k)
            allowed[b, at : at + k, :c] = True
            allowed[b, at : at + k, at : at + k] = torch.ones(k, k, dtype=torch.bool).tril()
            keep[b, at : at + k] = True
            flat_pos += [b * width + c - 1] + [b * width + at + j for j in range(k)]
            targets += list(cont)
            owner += [n_cont] * len(cont)
            n_cont += 1
            at += k
        allowed[b, at:, at:] = torch.eye(width - at, dtype=torch.bool)  # padding sees itself only (no NaN rows)
    return {
        "input_ids": ids,
        "position_ids": pos,
        "allowed": allowed,
        "lengths": torch.tensor([row_length(r) for r in rows], dtype=torch.long),
        "keep": keep,
        "flat_pos": torch.tensor(flat_pos, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "owner": torch.tensor(owner, dtype=torch.long),
    }


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor], shared: bool = True) -> dict[str, torch.Tensor]:
    """What the model is called with: plain rows get a padding mask (the model builds the causal mask); shared
    rows get position ids and the 4-D mask, boolean for SDPA, additive in the model's dtype for eager attention."""
    ids = batch["input_ids"]
    if not shared:
        return {
            "input_ids": ids,
            "attention_mask": (torch.arange(ids.shape[1], device=ids.device)[None] < batch["lengths"][:, None]).long(),
        }
    allowed = batch["allowed"]
    if model.config._attn_implementation == "sdpa":
        mask = allowed[:, None]
    else:
        dtype = next(model.parameters()).dtype
        blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        mask = blocked.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    return {"input_ids": ids, "position_ids": batch["position_ids"], "attention_mask": mask}


def shares_context(model: nn.Module) -> bool:
    """Whether the model's attention takes the custom 4-D mask shared rows need (SDPA and eager do; flash
    kernels take none)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", "sdpa") in ("sdpa", "eager")


def continuation_logps(
    model: nn.Module, batch: dict[str, torch.Tensor], answer_only_logits: bool, shared: bool = True
) -> torch.Tensor:
    """Summed log-probability of each continuation of `segment_batch`'s rows (by owner index), differentiable:
    the LM head runs only where a continuation token is predicted when `answer_only_logits`."""
    inputs = model_inputs(model, batch, shared)
    keep = batch["keep"]
    if answer_only_logits:
        logits = logits_at(model, inputs, keep)
        index = torch.full((keep.numel(),), -1, dtype=torch.long, device=keep.device)
        index[keep.flatten()] = torch.arange(int(keep.sum()), device=keep.device)  # row-major position -> logit row
        at = index[batch["flat_pos"]]
    else:
        logits = model(**inputs, use_cache=False).logits.flatten(0, 1)
        at = batch["flat_pos"]
    logprobs = torch.log_softmax(logits[at].float(), dim=-1)
    picked = logprobs.gather(-1, batch["targets"][:, None]).squeeze(-1)
    n_owners = int(batch["owner"].max()) + 1 if batch["owner"].numel() else 0
    return torch.zeros(n_owners, dtype=picked.dtype, device=picked.device).index_add(0, batch["owner"], picked)
