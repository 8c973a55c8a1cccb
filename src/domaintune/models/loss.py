"""The loss math: next-token NLL over the answer tokens, for training (`forward_loss`) and evaluation
(`example_nll`, `logits_at`). Kept apart from the LightningModule so that evaluation and the scorers
depend on the loss, not on the training module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import modeling_utils as hf_modeling

from domaintune.models.adapters import base_model, is_prompt_learning
from domaintune.models.attention import fp32_attention_backward
from domaintune.utils.config import count_below
from domaintune.utils.errors import DomainTuneError

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")
# the loss's own ignore index (-100): the renderer, collate and packing mark untrained labels with it
IGNORE = nn.CrossEntropyLoss().ignore_index


# transformers 5.2x taught `logits_to_keep` to take a boolean (batch, seq) mask (`slice_logits_to_keep`);
# earlier 5.x releases (e.g. 5.17, still in GPU images) index `hidden[:, keep, :]` and fail on a 2-D mask.
# Detected once, so one code path serves both (a module attribute so tests can force the fallback).
BOOLEAN_LOGITS_TO_KEEP = hasattr(hf_modeling, "slice_logits_to_keep")


def logits_at(model: nn.Module, inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """The model's output (logits, or the hidden states if the head is removed) at the True positions of the
    boolean (batch, seq) `keep`, flattened row-major to (n_kept, features): the head never runs elsewhere.

    With a transformers that lacks boolean masks, the head runs at the union over the batch of the kept
    positions (a 1-D `logits_to_keep`, supported by every 5.x release) and the rows are then picked, in
    the same order: the same values, a little more head work on ragged batches.
    """
    if BOOLEAN_LOGITS_TO_KEEP:
        out = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    else:
        cols = keep.any(0).nonzero().squeeze(1)
        out = model(**inputs, use_cache=False, logits_to_keep=cols).logits
        if out.dim() == 3 and out.shape[1] == len(cols):
            out = out[keep[:, cols]]
    n_kept = int(keep.sum())
    if out.dim() != 2 or out.shape[0] != n_kept:
        raise DomainTuneError(
            f"{type(model).__name__} does not accept logits_to_keep (it returned logits of shape {tuple(out.shape)} "
            f"for {n_kept} kept positions).",
            "Set model.answer_only_logits=false for this architecture.",
        )
    return out


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of the positions whose *next* token is trained (labels[:, t + 1] != -100)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


@dataclass(frozen=True)
class LossOptions:
    """How the loss is computed (model.answer_only_logits, model.loss_chunk_size, model.causal_padding,
    model.attention_fp32_backward_below): the same loss for less work or memory (the fp32 attention backward's
    gradients are the fp32 kernel's, rounded once). `fp32_backward_below` None: SDPA's own backward everywhere (what a
    hand-built LossOptions gets unless it asks)."""

    answer_only_logits: bool
    chunk_size: int | None
    causal_padding: bool
    fp32_backward_below: int | None = None

    @classmethod
    def from_config(cls, model_cfg: DictConfig | dict[str, Any]) -> LossOptions:
        chunk, below = model_cfg["loss_chunk_size"], model_cfg["attention_fp32_backward_below"]
        if below is not None and count_below(below, 2):
            raise DomainTuneError(
                f"model.attention_fp32_backward_below={below!r} is not a number of positions.",
                "Give a whole number of at least 2 (rows shorter than it take the fp32 attention backward; 352 by "
                "default), or null for SDPA's own backward everywhere.",
            )
        return cls(
            bool(model_cfg["answer_only_logits"]),
            int(chunk) if chunk else None,
            bool(model_cfg["causal_padding"]),
            int(below) if below else None,
        )


def row_inputs(batch: dict[str, torch.Tensor], opts: LossOptions) -> dict[str, torch.Tensor]:
    """The model's inputs from a collated batch; with `opts.causal_padding`, right-padded rows without their
    padding mask.

    Why: in a causal LM a real token never attends to the padding after it, so the causal mask alone gives the
    same outputs and gradients at every real position, and the loss reads real positions only (padding carries
    no label, and nothing real attends to it). Without a mask, transformers' SDPA path takes the kernel's causal
    mode with grouped-query attention, instead of a 4-D mask and key/value heads copied to every query head
    (and their gradients summed back): ~5% of a bf16 LoRA step on SmolLM2 (RESULTS.md, stop 38). Only a mask
    whose rows are ones then zeros goes; left padding, packed rows (position ids) and any other mask stay.
    """
    inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
    mask = inputs.get("attention_mask")
    plain = mask is not None and mask.dim() == 2 and "position_ids" not in inputs
    if opts.causal_padding and plain and bool((mask[:, 1:] <= mask[:, :-1]).all()):  # every row: ones, then zeros
        del inputs["attention_mask"]
    return inputs


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over the answer tokens (labels != -100) and how many tokens it averages.

    With `answer_only_logits` the LM head runs only at the positions that predict a trained token (the
    model's own `logits_to_keep` (see `logits_at`), so any architecture's head, softcapping included,
    is applied as the model defines it): the full-vocabulary logits of prompt and padding positions are
    never materialised. That is about half of the head's matmul work and of the logits' memory on
    typical SFT data, for the same loss (tests/models/test_models.py checks it to 1e-5 in fp32).
    With `chunk_size` as well, the head and cross-entropy run over chunks of that many positions, each
    recomputed in the backward pass, so the full (answer tokens x vocabulary) logits never exist at once.
    PEFT prompt methods prepend virtual tokens, so they keep the model's own loss on full logits.
    `loss * n_tokens` is the summed NLL that token-weighted perplexity needs.
    """
    labels = batch["labels"]
    inputs = row_inputs(batch, opts)
    n_tokens = (labels[:, 1:] != IGNORE).sum()
    with fp32_attention_backward(opts.fp32_backward_below, model):  # around every model call below
        if not opts.answer_only_logits or is_prompt_learning(model):
            return model(**inputs, labels=labels, use_cache=False).loss, n_tokens
        keep = trained_positions(labels)
        targets = labels[:, 1:][keep[:, :-1]]
        if opts.chunk_size:
            with _head_removed(model) as head:
                hidden = logits_at(model, inputs, keep)
            return _chunked_cross_entropy(head, hidden, targets, opts.chunk_size), n_tokens
        logits = logits_at(model, inputs, keep)  # private to this function: its memory can take the gradient
    return mean_cross_entropy(logits, targets, overwrite_logits=True), n_tokens


# Rows of logits the fused cross-entropy upcasts at a time, into one fp32 buffer it reuses: 8 x 49,152 fp32 = 1.5 MiB
# stays in a core's cache. A one-off timing of the loss alone (1,782 x 49,152 logits, forward and backward, a 2-core
# AMX Xeon, not a repo benchmark) found 8 rows fastest in bf16 (142 against 161 ms at 32) and in fp32.
CE_ROWS = 8


class _TokenCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy (fp32) of (rows, vocabulary) logits against targets, without a full-size fp32 copy.

    Why by hand: `F.cross_entropy(logits.float(), t)` writes the upcast logits, their log-softmax, a zeroed
    gradient the size of the logits and the log-softmax gradient, each rows x vocabulary fp32 (373 MB at 1,900
    answer tokens of a 49,152-token vocabulary) and each a full pass through memory; on a CPU that was a tenth
    of a LoRA step (issue 23's profile). Here the forward keeps only each row's log-sum-exp (fp32, computed as
    torch.logsumexp does, over a cache-sized block of rows at a time) and the backward writes the gradient once,
    block by block, as (softmax - one-hot) x the row's incoming gradient, in the logits' own dtype: the same
    values as the upcast path to fp32 rounding (tests/models/test_models.py). torch.compile would fuse this too,
    but not in eager mode, the default.

    Lower-precision logits (bf16) are copied block by block into one reused fp32 buffer and worked on in place
    there: a mixed-dtype `logits - lse` (what this did before) goes through torch's slow casting loop, and
    `.float()` and logsumexp allocate fresh blocks; the loss's element-wise work in a bf16 step fell from ~345 to
    ~140 ms (RESULTS.md, stop 38).

    `overwrite_logits=True` writes that gradient into the logits' own memory, for a caller whose logits are its
    private intermediate (the training loss): the LM head's backward needs its input and weight, not its
    output, so the storage is free by then. Writing into a fresh rows x vocabulary gradient (330 MB in fp32)
    through a temporary block, as before, made 0.6 s of copies in a profiled fp32 step (issue 23; 0.09 s
    after, RESULTS.md, stop 35). Should an
    architecture's last op keep its output for its own backward, autograd's version check raises instead of
    computing a wrong gradient.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, overwrite_logits: bool) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
            buffer = _block_buffer(logits)
            for start, end in _blocks(logits.shape[0]):
                block = buffer[: end - start]
                block.copy_(logits[start:end])
                top = block.amax(dim=1, keepdim=True)
                top.masked_fill_(top.abs() == float("inf"), 0.0)  # as torch.logsumexp: an infinite row stays infinite
                torch.log(block.sub_(top).exp_().sum(dim=1), out=lse[start:end])
                lse[start:end] += top.squeeze(1)
            picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.overwrite_logits = overwrite_logits
        return lse - picked

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, lse = ctx.saved_tensors
        out = logits if ctx.overwrite_logits else torch.empty_like(logits)
        # fp32: straight into the output block (no buffer); lower precision: in the fp32 buffer, rounded once when stored
        buffer = None if out.dtype == torch.float32 else _block_buffer(logits)
        with torch.autocast(logits.device.type, enabled=False):
            for start, end in _blocks(logits.shape[0]):
                if buffer is None:
                    block = torch.sub(logits[start:end], lse[start:end, None], out=out[start:end])
                else:
                    block = buffer[: end - start].copy_(logits[start:end]).sub_(lse[start:end, None])
                block.exp_()
                block[torch.arange(end - start, device=block.device), targets[start:end]] -= 1.0
                block.mul_(grad[start:end, None])
                if buffer is not None:
                    out[start:end] = block
        return out, None, None


def _blocks(rows: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each CE_ROWS block of `rows` rows."""
    for start in range(0, rows, CE_ROWS):
        yield start, min(start + CE_ROWS, rows)


def _block_buffer(logits: torch.Tensor) -> torch.Tensor:
    """One fp32 block of CE_ROWS rows of `logits`, reused for every block."""
    return torch.empty(min(CE_ROWS, logits.shape[0]), logits.shape[1], dtype=torch.float32, device=logits.device)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, overwrite_logits: bool = False) -> torch.Tensor:
    """Per-row next-token NLL (fp32) of `logits` (rows, vocabulary; any float dtype) at `targets` (no ignored
    rows): `F.cross_entropy(logits.float(), targets, reduction="none")` with less memory traffic (see
    `_TokenCrossEntropy`; `overwrite_logits` only where the caller never reads the logits again)."""
    if targets.numel() == 0:
        return F.cross_entropy(logits.float(), targets, reduction="none")
    return _TokenCrossEntropy.apply(logits, targets, overwrite_logits)


def mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, overwrite_logits: bool = False) -> torch.Tensor:
    """The mean of `token_cross_entropy`: nan for no rows, as `F.cross_entropy` gives."""
    return token_cross_entropy(logits, targets, overwrite_logits).mean()


# Config attributes of architectures that transform the head's output (softcapping, scaling): chunking
# calls the head itself, so it would skip that transformation.
HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@contextlib.contextmanager
def _head_removed(model: nn.Module) -> Iterator[nn.Module]:
    """The model's forward with its output head replaced by identity (so it returns the normed hidden states
    at the kept positions); yields the head, restored on exit."""
    base = base_model(model)
    found = [k for k in HEAD_TRANSFORMS if getattr(base.config, k, None) not in (None, 1, 1.0)]
    if found:
        raise DomainTuneError(
            f"model.loss_chunk_size does not work with {type(base).__name__}: its head output is transformed ({found[0]}).",
            "Set model.loss_chunk_size=null.",
        )
    head = base.get_output_embeddings()
    name = next(n for n, m in base.named_children() if m is head)
    setattr(base, name, nn.Identity())
    try:
        yield head
    finally:
        setattr(base, name, head)


def example_nll(model: nn.Module, batch: dict[str, torch.Tensor], opts: LossOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL over each row's answer tokens and how many there are, per row (unpacked rows:
    one example each). Evaluation keeps these per example, so intervals can resample examples; their
    token-weighted mean is exactly the loss `forward_loss` averages."""
    labels = batch["labels"]
    inputs = row_inputs(batch, opts)
    keep = trained_positions(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    with fp32_attention_backward(opts.fp32_backward_below, model):  # preference objectives train through here
        if opts.answer_only_logits and not is_prompt_learning(model):
            logits = logits_at(model, inputs, keep)
        else:
            full = model(**inputs, use_cache=False).logits
            full = full[:, full.shape[1] - labels.shape[1] :]  # prompt tuning prepends virtual-token positions
            logits = full[keep]
    nll = token_cross_entropy(logits, targets, overwrite_logits=True)  # the logits are this function's own
    rows = keep.nonzero()[:, 0]
    per_row = torch.zeros(labels.shape[0], dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
    return per_row, keep.sum(dim=1)


def _chunked_cross_entropy(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    def nll(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        part = (hidden[i : i + chunk], targets[i : i + chunk])
        total = total + (checkpoint(nll, *part, use_reentrant=False) if torch.is_grad_enabled() else nll(*part))
    return total / targets.numel()
