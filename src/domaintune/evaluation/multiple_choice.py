"""Multiple-choice benchmarks scored like lm-evaluation-harness (zero-shot log-likelihood "cloze" style).

For each item, the log-likelihood of every choice as a continuation of the prompt is summed over the
choice's tokens. Definitions follow lm-eval 0.4 exactly:
- context/continuation split: trailing spaces of the context move to the continuation; the pair is tokenised
  whole and the continuation is what follows the context's tokens;
- acc: argmax of the log-likelihoods; acc_norm: argmax of log-likelihood / len(choice) (characters);
- acc_bytes: argmax of log-likelihood / UTF-8 byte length of the choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from domaintune.data.formats import compile_template
from domaintune.data.sources import ReadStats, read_jsonl
from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.generation import model_device
from domaintune.models import segments
from domaintune.utils.errors import DomainTuneError


@dataclass
class MCItem:
    question: str
    choices: list[str]
    answer: int
    origin: str


def read_benchmark(folder: str | Path, split: str | list[str], max_samples: int | None, fields: str) -> list[dict]:
    """A benchmark's JSONL records of one split or several (`fields` names what a record holds, for the error)."""
    if not isinstance(split, str):
        records = [r for s in split for r in read_benchmark(folder, s, None, fields)]
        return records[:max_samples] if max_samples else records
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DomainTuneError(
            f"The benchmark file '{path}' does not exist.",
            f"Point eval.benchmarks.<name>.dir at a folder with <split>.jsonl ({fields}).",
        )
    records = list(read_jsonl(path, split, "raise", ReadStats(), hint="then run again."))
    if not records:
        raise DomainTuneError(f"The benchmark file '{path}' has no items.", "Fill it or choose another benchmark.")
    return records[:max_samples] if max_samples else records


def load_items(folder: str | Path, split: str | list[str], max_samples: int | None = None) -> list[MCItem]:
    """Read `{question, choices, answer_index}` JSONL records of one split or several, checking each."""
    items = []
    for rec in read_benchmark(folder, split, max_samples, "question, choices, answer_index"):
        where = rec["_src"]
        choices = rec.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DomainTuneError(f"{where}: 'choices' must be a list of at least two strings.", "Fix the record.")
        answer = rec.get("answer_index")
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DomainTuneError(
                f"{where}: answer_index={answer!r} is out of range for {len(choices)} choices.",
                f"Use an index from 0 to {len(choices) - 1}.",
            )
        items.append(MCItem(str(rec.get("question", "")), choices, answer, where))
    return items


def encode_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's causal `_encode_pair`: move trailing context spaces to the continuation, tokenise the whole.

    An empty context becomes the tokenizer's BOS token (EOS when it has none), lm-eval's `prefix_token_id`: the
    first continuation token needs a position that predicts it.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    if not context:
        return [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id], tok(continuation)["input_ids"]
    whole = tok(context + continuation)["input_ids"]
    ctx = tok(context)["input_ids"]
    return ctx, whole[len(ctx) :]


@dataclass
class _Row:
    """One model input: a context and the continuations that share it, each continuation (less its last
    token) in its own segment after the context. Segment tokens see the context and their own segment only."""

    ctx: list[int]
    members: list[int]  # indexes into `pairs`


# A shared row holds its context once and its continuations after it; its attention mask is width x width, so rows
# are cut at this many tokens (thousands of continuations of one context would otherwise make one row of tens of
# thousands of tokens). A row is never shorter than its context plus one continuation.
MAX_SHARED_ROW = 1024


def _rows(pairs: list[tuple[list[int], list[int]]], share_context: bool) -> list[_Row]:
    if not share_context:
        return [_Row(ctx, [i]) for i, (ctx, _) in enumerate(pairs)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx), []).append(i)
    rows = []
    for ctx, members in groups.items():
        mean_continuation = sum(len(pairs[i][1]) for i in members) / len(members)
        if len(ctx) < mean_continuation:
            # a short context (CrowS-Pairs: the BOS token alone) saves less than the longer rows' attention costs
            rows += [_Row(list(ctx), [i]) for i in members]
            continue
        row, width = _Row(list(ctx), []), len(ctx)
        for i in members:
            grow = len(pairs[i][1]) - 1
            if row.members and width + grow > MAX_SHARED_ROW:
                rows.append(row)
                row, width = _Row(list(ctx), []), len(ctx)
            row.members.append(i)
            width += grow
        rows.append(row)
    return rows


def _row_length(row: _Row, pairs: list[tuple[list[int], list[int]]]) -> int:
    return segments.row_length((row.ctx, [pairs[i][1] for i in row.members]))


@torch.inference_mode()
def loglikelihoods(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    pairs: list[tuple[list[int], list[int]]],
    batch_size: int,
    share_context: bool,
    answer_only_logits: bool,
    desc: str = "mc",
) -> list[float]:
    """Summed log-probability of each continuation given its context (lm-eval's `loglikelihood`).

    Two switches make it fast without changing the numbers beyond float rounding (tests compare both
    ways and with lm-eval itself):
    - `share_context`: the choices of one question share its context, so one row holds the context once
      and every continuation in its own segment (models/segments.py). lm-eval runs the context once per choice.
    - `answer_only_logits`: the LM head runs only at the positions that predict a continuation token.
    Rows of similar length are batched together (fewer pad tokens).
    """
    device = model_device(model)
    share_context = share_context and segments.shares_context(model)
    rows = _rows(pairs, share_context)
    rows.sort(key=lambda r: -_row_length(r, pairs))
    out: list[float] = [0.0] * len(pairs)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
        batch = rows[start : start + batch_size]
        tensors = segments.segment_batch(
            [(r.ctx, [pairs[i][1] for i in r.members]) for r in batch], tok.pad_token_id, share_context
        )
        sums = segments.continuation_logps(
            model, {k: v.to(device) for k, v in tensors.items()}, answer_only_logits, share_context
        )
        for k, i in enumerate(i for row in batch for i in row.members):
            out[i] = float(sums[k])
    return out


def evaluate(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    items: list[MCItem],
    prompt: str,
    delimiter: str,
    batch_size: int,
    share_context: bool,
    answer_only_logits: bool,
    name: str = "mc",
) -> dict[str, Evidence]:
    """acc, acc_norm and acc_bytes (in %) of a model on multiple-choice items, per item."""
    template = compile_template(prompt, f"The {name} benchmark prompt")
    rendered = [dataclasses.replace(i, question=template.render(question=i.question, choices=i.choices)) for i in items]
    lls = item_loglikelihoods(model, tok, rendered, delimiter, batch_size, share_context, answer_only_logits, name)
    return score(items, lls)


def item_loglikelihoods(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    items: list[MCItem],
    delimiter: str,
    batch_size: int,
    share_context: bool,
    answer_only_logits: bool,
    name: str = "mc",
) -> list[list[float]]:
    """Per item, the log-likelihood of `delimiter + choice` after the item's (already rendered) context, for each
    choice: shared by the benchmarks above and label scoring (evaluation/choice.py)."""
    pairs, owner = [], []
    for k, item in enumerate(items):
        for choice in item.choices:
            pairs.append(encode_pair(tok, item.question, delimiter + choice))
            owner.append(k)
    lls = loglikelihoods(model, tok, pairs, batch_size, share_context, answer_only_logits, desc=f"{name} log-likelihoods")
    per_item: list[list[float]] = [[] for _ in items]
    for k, ll in zip(owner, lls, strict=True):
        per_item[k].append(ll)
    return per_item


def score(items: list[MCItem], lls: list[list[float]]) -> dict[str, Evidence]:
    """acc, acc_norm and acc_bytes (in %) per item (its origin as id), as lm-eval defines them."""

    def argmax(values: list[float]) -> int:
        return max(range(len(values)), key=values.__getitem__)

    rows: dict[str, list[float]] = {"acc": [], "acc_norm": [], "acc_bytes": []}
    for item, ll in zip(items, lls, strict=True):
        rows["acc"].append(100.0 * (argmax(ll) == item.answer))
        rows["acc_norm"].append(100.0 * (argmax([v / len(c) for v, c in zip(ll, item.choices, strict=True)]) == item.answer))
        by_bytes = [v / len(c.encode("utf-8")) for v, c in zip(ll, item.choices, strict=True)]
        rows["acc_bytes"].append(100.0 * (argmax(by_bytes) == item.answer))
    ids = [item.origin for item in items]
    return {k: Evidence("mean", ids, v) for k, v in rows.items()}
