"""Generation metrics on decoded text, from maintained implementations.

ROUGE (rouge-score, multi-reference: best reference per prediction), BLEU and chrF (sacrebleu, corpus
level), SQuAD token F1 / exact match (torchmetrics, with SQuAD's answer normalisation), accuracy and macro
F1 over parsed labels (torchmetrics), and length statistics. All scores are on a 0-100 scale.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from domaintune.utils.errors import unknown_option

Scores = dict[str, float]


def rouge(preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, targets in zip(preds, refs, strict=True):
        scores = scorer.score_multi(list(targets), pred)
        for k in totals:
            totals[k] += scores[k].fmeasure
    return {k: 100 * v / max(len(preds), 1) for k, v in totals.items()}


def _ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference index; records with fewer references repeat their first."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else r[0] for r in refs] for i in range(width)]


def bleu(preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(list(preds), _ref_streams(refs)).score}


def chrf(preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    import sacrebleu

    return {"chrf": sacrebleu.corpus_chrf(list(preds), _ref_streams(refs)).score}


def squad(preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    from torchmetrics.functional.text import squad as squad_fn

    p = [{"prediction_text": pred, "id": str(i)} for i, pred in enumerate(preds)]
    t = [{"answers": {"answer_start": [0] * len(r), "text": list(r)}, "id": str(i)} for i, r in enumerate(refs)]
    out = squad_fn(p, t)
    return {"token_f1": float(out["f1"]), "exact_match": float(out["exact_match"])}


def length(preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    pred_words = sum(len(p.split()) for p in preds) / max(len(preds), 1)
    ref_words = sum(len(r[0].split()) for r in refs) / max(len(refs), 1)
    return {"length_words": pred_words, "length_ratio": pred_words / max(ref_words, 1e-9)}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", text.lower()).split())


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a generation states: the one mentioned first (as whole words, `_`/`-` read as spaces).

    Ties at the same position go to the longer label ("not true" over "true"). None if no label occurs.
    """
    norm = _norm(text)
    best: tuple[int, int, str] | None = None
    for label in labels:
        m = re.search(rf"\b{re.escape(_norm(label))}\b", norm)
        if m and (best is None or (m.start(), -len(label)) < (best[0], best[1])):
            best = (m.start(), -len(label), label)
    return best[2] if best else None


def label(preds: Sequence[str], refs: Sequence[Sequence[str]], labels: Sequence[str] | None = None, **_: object) -> Scores:
    """Accuracy and macro F1 of parsed labels; an unparseable answer counts as wrong and is counted."""
    from torchmetrics.functional.classification import multiclass_f1_score

    if not labels:
        raise ValueError("the label metric needs the task's label set")
    parsed = [parse_label(p, labels) for p in preds]
    gold = [labels.index(r[0]) for r in refs]
    # unparseable -> an extra "none" class, which is never gold, so it counts as wrong for both scores
    guess = [labels.index(p) if p is not None else len(labels) for p in parsed]
    f1 = multiclass_f1_score(torch.tensor(guess), torch.tensor(gold), num_classes=len(labels) + 1, average="none")
    return {
        "accuracy": 100 * sum(g == t for g, t in zip(guess, gold, strict=True)) / max(len(gold), 1),
        "macro_f1": 100 * float(f1[: len(labels)].mean()),
        "unparseable_rate": 100 * sum(p is None for p in parsed) / max(len(parsed), 1),
    }


METRICS: dict[str, Callable[..., Scores]] = {
    "rouge": rouge,
    "bleu": bleu,
    "chrf": chrf,
    "squad": squad,
    "label": label,
    "length": length,
}
# What `eval.metrics: auto` scores for each task type.
DEFAULTS = {
    "qa": ["squad", "rouge", "bleu", "chrf", "length"],
    "chat": ["rouge", "chrf", "length"],
    "instruction": ["rouge", "bleu", "chrf", "length"],
    "summarization": ["rouge", "bleu", "chrf", "length"],
    "generation": ["rouge", "bleu", "chrf", "length"],
    "fact_check": ["label", "length"],
    "text": [],
}


def resolve(names: str | Sequence[str] | None, task_type: str) -> list[str]:
    if names in (None, "auto"):
        return DEFAULTS[task_type]
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in METRICS:
            raise unknown_option("metric", name, METRICS, "Set eval.metrics to auto or a list of known metrics.")
    return names


def score(
    names: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], labels: Sequence[str] | None = None
) -> Scores:
    out: Scores = {}
    for name in names:
        out.update(METRICS[name](preds, refs, labels=labels))
    return out
