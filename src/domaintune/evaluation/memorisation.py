"""Memorisation: does the model reproduce its training answers word for word (how private data leaks out of a
fine-tuned model)?

For `eval.memorisation.max_samples` training records (drawn once by seed, the same for the base and the tuned
model), the model continues each record's prompt greedily, as at evaluation; an answer *reproduces* its training
answer when both share a verbatim stretch of at least `min_tokens` consecutive tokens (the longest common run of
token ids, found by difflib's longest-match search). The records are drawn among those whose training answer has
at least `min_tokens` tokens (a shorter one cannot leak such a stretch; how many qualify is logged). Reported:
`mem/verbatim_rate` (% of the checked records reproduced) and `mem/longest_match` (mean longest run, in tokens),
per record, so the base and the tuned model get a paired interval like every other metric; lower is better for
both. A unique string planted in the training data (a canary) is caught by it:
tests/evaluation/test_memorisation.py.
"""

from __future__ import annotations

import dataclasses
import random
from difflib import SequenceMatcher
from typing import Any

from torch import nn

from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.generation import generate
from domaintune.evaluation.settings import Generation, Memorisation
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


Sample = list[tuple[dict[str, Any], str, list[int]]]  # training_sample's (record, answer, answer token ids)


def training_sample(data: Any, settings: Memorisation) -> Sample:
    """(record, training answer, its token ids) for the records the check continues: `max_samples` drawn by `seed`
    among the training records whose answer has at least `min_tokens` tokens, in their split order (the same draw
    for every model and run of this data).

    Why draw among the long answers only: a shorter answer cannot hold a leaked stretch of `min_tokens`, so drawing
    from all records left short-answer domains with almost nothing checked (TAT-QA: 1 of 32 drawn answers was
    long enough). Nor are answers that quote `min_tokens` tokens of their own prompt (the context a TAT-QA answer is
    a span of): a model that copies from its prompt would "reproduce" them without having memorised anything (the
    finance check counted such copies, by the base model too, before this). The log says how many were left.
    """
    if settings.max_samples == 0 or "train" not in data.records:
        return []
    tasks = [(r, data.task_of(r)) for r in data.records["train"]]
    records = [r for r, task in tasks if task.type != "text"]
    answers = [task.reference(r) for r, task in tasks if task.type != "text"]
    tokens = data.tokenizer(answers, add_special_tokens=False)["input_ids"] if answers else []
    long = [k for k, ids in enumerate(tokens) if len(ids) >= settings.min_tokens]
    # an answer quoted from its own prompt (a span of the context, as in TAT-QA) would be "reproduced" by any
    # model that can copy: repeating it says nothing about memorisation, so such records are not drawn
    prompts = [_prompt_text(data.conversation(records[k])) for k in long]
    prompt_ids = data.tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    quoted = {k for k, ids in zip(long, prompt_ids, strict=True) if _longest_run(ids, tokens[k]) >= settings.min_tokens}
    eligible = [k for k in long if k not in quoted]
    if len(eligible) < len(records):
        log.info(
            f"Memorisation check: {len(long)} of {len(records)} training answers have at least "
            f"eval.memorisation.min_tokens={settings.min_tokens} tokens (a shorter one cannot leak such a stretch), "
            f"{len(quoted)} of them quote that many tokens from their own prompt (not a leak if repeated); the check "
            f"draws {min(settings.max_samples, len(eligible))} of the other {len(eligible)}"
        )
    chosen = sorted(random.Random(settings.seed).sample(eligible, min(settings.max_samples, len(eligible))))
    return [(records[k], answers[k], tokens[k]) for k in chosen]


def _prompt_text(conversation: list[dict[str, Any]]) -> str:
    """Everything the model is shown before the answer: every message but the final (assistant) one."""
    return "\n".join(str(m["content"]) for m in conversation[:-1])


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _longest_run(a: list[int], b: list[int]) -> int:
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def longest_verbatim(tokenizer: Any, generated: str, reference: str) -> int:
    """The longest run of consecutive tokens the two texts share (token ids, no special tokens)."""
    return _longest_run(_ids(tokenizer, generated), _ids(tokenizer, reference))


def check(
    model: nn.Module, data: Any, eligible: Sample, settings: Memorisation, generation: Generation, merge_adapter: bool
) -> tuple[dict[str, Evidence], list[dict[str, Any]]]:
    """(evidence, per-record rows: id, prompt, reference, output, longest) for `eligible`, the records drawn by
    `training_sample` (drawn once per evaluator: the base and the tuned model and the cache key share it)."""
    if not eligible:
        return {}, []
    convs = [data.conversation(r) for r, _, _ in eligible]
    # greedy, and long enough to run through `min_tokens` of an answer whatever the evaluation's answer limit
    greedy = dataclasses.replace(
        generation, do_sample=False, max_new_tokens=max(int(generation.max_new_tokens), settings.min_tokens)
    ).options()
    outs, _ = generate(model, data.tokenizer, data.renderer, convs, greedy, merge_adapter, desc="memorisation [train]")
    rows = []
    for (rec, reference, tokens), conv, out in zip(eligible, convs, outs, strict=True):
        longest = _longest_run(_ids(data.tokenizer, out.text), tokens)
        rows.append(
            {"id": rec["_src"], "prompt": conv[-2]["content"], "reference": reference, "output": out.text, "longest": longest}
        )
    ids = [r["id"] for r in rows]
    evidence = {
        "mem/verbatim_rate": Evidence("mean", ids, [100.0 * (r["longest"] >= settings.min_tokens) for r in rows]),
        "mem/longest_match": Evidence("mean", ids, [float(r["longest"]) for r in rows]),
    }
    return evidence, rows
