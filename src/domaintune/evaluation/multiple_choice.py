"""Multiple-choice benchmarks scored like lm-evaluation-harness (zero-shot log-likelihood "cloze" style).

For each item, the log-likelihood of every choice as a continuation of the prompt is summed over the
choice's tokens. Definitions follow lm-eval 0.4 exactly:
- context/continuation split: trailing spaces of the context move to the continuation; the pair is tokenised
  whole and the continuation is what follows the context's tokens;
- acc: argmax of the log-likelihoods; acc_norm: argmax of log-likelihood / len(choice) (characters);
- acc_bytes: argmax of log-likelihood / UTF-8 byte length of the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from domaintune.data.formats import compile_template
from domaintune.data.sources import ReadStats, read_jsonl
from domaintune.evaluation.generation import model_device
from domaintune.utils.errors import DomainTuneError


@dataclass
class MCItem:
    question: str
    choices: list[str]
    answer: int
    origin: str


def load_items(folder: str | Path, split: str | list[str], max_samples: int | None = None) -> list[MCItem]:
    """Read `{question, choices, answer_index}` JSONL records of one split or several, checking each."""
    if not isinstance(split, str):
        items = [item for s in split for item in load_items(folder, s)]
        return items[:max_samples] if max_samples else items
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DomainTuneError(
            f"The benchmark file '{path}' does not exist.",
            "Point eval.benchmarks.<name>.dir at a folder with <split>.jsonl (question, choices, answer_index).",
        )
    items = []
    for rec in read_jsonl(path, split, "raise", ReadStats(), hint="then run again."):
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
    if not items:
        raise DomainTuneError(f"The benchmark file '{path}' has no items.", "Fill it or choose another benchmark.")
    return items[:max_samples] if max_samples else items


def encode_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's causal `_encode_pair`: move trailing context spaces to the continuation, tokenise the whole."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tok(context + continuation)["input_ids"]
    ctx = tok(context)["input_ids"]
    return ctx, whole[len(ctx) :]


@torch.inference_mode()
def loglikelihoods(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    pairs: list[tuple[list[int], list[int]]],
    batch_size: int = 16,
    desc: str = "mc",
) -> list[float]:
    """Summed log-probability of each continuation given its context."""
    device = model_device(model)
    out: list[float] = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))  # similar lengths together
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start : start + batch_size]
        seqs = [(pairs[i][0] + pairs[i][1])[:-1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        for row, i in enumerate(idx):
            ctx, cont = pairs[i]
            end = len(ctx) + len(cont) - 1
            logprobs = torch.log_softmax(logits[row, end - len(cont) : end], dim=-1)
            out[i] = float(logprobs.gather(1, torch.tensor(cont, device=device)[:, None]).sum())
    return out


def evaluate(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    items: list[MCItem],
    prompt: str,
    delimiter: str = " ",
    batch_size: int = 16,
    name: str = "mc",
) -> dict[str, float]:
    """acc, acc_norm and acc_bytes (in %) of a model on multiple-choice items."""
    template = compile_template(prompt, f"The {name} benchmark prompt")
    pairs, owner = [], []
    for k, item in enumerate(items):
        context = template.render(question=item.question, choices=item.choices)
        for choice in item.choices:
            pairs.append(encode_pair(tok, context, delimiter + choice))
            owner.append(k)
    lls = loglikelihoods(model, tok, pairs, batch_size, desc=f"{name} log-likelihoods")
    per_item: list[list[float]] = [[] for _ in items]
    for k, ll in zip(owner, lls, strict=True):
        per_item[k].append(ll)
    return score(items, per_item)


def score(items: list[MCItem], lls: list[list[float]]) -> dict[str, float]:
    def argmax(values: list[float]) -> int:
        return max(range(len(values)), key=values.__getitem__)

    acc = acc_norm = acc_bytes = 0
    for item, ll in zip(items, lls, strict=True):
        acc += argmax(ll) == item.answer
        acc_norm += argmax([v / len(c) for v, c in zip(ll, item.choices, strict=True)]) == item.answer
        acc_bytes += argmax([v / len(c.encode("utf-8")) for v, c in zip(ll, item.choices, strict=True)]) == item.answer
    n = len(items)
    return {"acc": 100 * acc / n, "acc_norm": 100 * acc_norm / n, "acc_bytes": 100 * acc_bytes / n}
