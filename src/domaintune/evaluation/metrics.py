"""Generation metrics on decoded text, from maintained implementations, kept per example.

ROUGE (rouge-score, multi-reference: best reference per prediction), BLEU and chrF (sacrebleu, corpus level
from per-sentence statistics), SQuAD token F1 / exact match (torchmetrics, with SQuAD's answer normalisation),
accuracy and macro F1 over parsed labels, and length statistics. All scores are on a 0-100 scale. Each metric
returns its `Evidence` (evaluation/evidence.py): the per-example rows whose aggregate is the reported score,
which the paired bootstrap resamples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from domaintune.evaluation.citations import citation
from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.tatqa import tatqa
from domaintune.utils.errors import DomainTuneError, unknown_option

if TYPE_CHECKING:
    from domaintune.data.formats import CitedAnswer, SpanAnswer, Task

Scores = dict[str, Evidence]


def rouge(ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for pred, targets in zip(preds, refs, strict=True):
        scores = scorer.score_multi(list(targets), pred)
        for k, v in rows.items():
            v.append(100 * scores[k].fmeasure)
    return {k: Evidence("mean", list(ids), v) for k, v in rows.items()}


def _ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference index; records with fewer references repeat their first."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else r[0] for r in refs] for i in range(width)]


def _sentence_stats(kind: str, ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]]) -> Evidence:
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU() if kind == "bleu" else CHRF()
    # per-sentence sufficient statistics: their sum scores the corpus exactly as corpus_bleu / corpus_chrf do
    stats = metric._extract_corpus_statistics(list(preds), _ref_streams(refs)) if preds else []
    return Evidence(kind, list(ids), [list(s) for s in stats])


def bleu(ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    return {"bleu": _sentence_stats("bleu", ids, preds, refs)}


def chrf(ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    return {"chrf": _sentence_stats("chrf", ids, preds, refs)}


def squad(ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    """SQuAD F1/EM are means over examples of each example's best match, so scoring one at a time is exact."""
    from torchmetrics.functional.text import squad as squad_fn

    f1, em = [], []
    for pred, r in zip(preds, refs, strict=True):
        out = squad_fn(
            {"prediction_text": pred, "id": "0"}, {"answers": {"answer_start": [0] * len(r), "text": list(r)}, "id": "0"}
        )
        f1.append(float(out["f1"]))
        em.append(float(out["exact_match"]))
    return {"token_f1": Evidence("mean", list(ids), f1), "exact_match": Evidence("mean", list(ids), em)}


def length(ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], **_: object) -> Scores:
    words = [[len(p.split()), len(r[0].split())] for p, r in zip(preds, refs, strict=True)]
    return {
        "length_words": Evidence("mean", list(ids), [float(w) for w, _ in words]),
        "length_ratio": Evidence("ratio", list(ids), words),
    }


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


def label(
    ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], labels: Sequence[str] | None = None, **_: object
) -> Scores:
    """Accuracy and macro F1 of parsed labels; an unparseable answer counts as wrong and is counted."""
    if not labels:
        raise ValueError("the label metric needs the task's label set")
    parsed = [parse_label(p, labels) for p in preds]
    gold = [labels.index(r[0]) for r in refs]
    # unparseable -> an extra "none" class, which is never gold, so it counts as wrong for both scores
    guess = [labels.index(p) if p is not None else len(labels) for p in parsed]
    return {
        **label_evidence(ids, gold, guess, labels),
        "unparseable_rate": Evidence("mean", list(ids), [100.0 * (p is None) for p in parsed]),
    }


def label_evidence(ids: Sequence[str], gold: Sequence[int], guess: Sequence[int], labels: Sequence[str]) -> Scores:
    """Accuracy and macro-F1 from label indices (a guess of len(labels) means "no label"), shared by parsed
    generations and likelihood-scored labels (evaluation/choice.py)."""
    return {
        "accuracy": Evidence("mean", list(ids), [100.0 * (g == t) for g, t in zip(guess, gold, strict=True)]),
        "macro_f1": Evidence(
            "macro_f1",
            list(ids),
            [[t, g] for g, t in zip(guess, gold, strict=True)],
            {"classes": len(labels), "labels": list(labels)},
        ),
    }


METRICS: dict[str, Callable[..., Scores]] = {
    "rouge": rouge,
    "bleu": bleu,
    "chrf": chrf,
    "squad": squad,
    "label": label,
    "length": length,
    # TAT-QA's exact match and F1 over answer spans (evaluation/tatqa.py): context_qa only
    "tatqa": tatqa,
    # citation precision / recall / F1 against the gold evidence sentences (evaluation/citations.py)
    "citation": citation,
}
# What `eval.metrics: auto` scores for each task type.
DEFAULTS = {
    "qa": ["squad", "rouge", "bleu", "chrf", "length"],
    "chat": ["rouge", "chrf", "length"],
    "instruction": ["rouge", "bleu", "chrf", "length"],
    "summarization": ["rouge", "bleu", "chrf", "length"],
    "generation": ["rouge", "bleu", "chrf", "length"],
    "fact_check": ["label", "length"],
    "cited_fact_check": ["label", "citation", "length"],
    "context_qa": ["tatqa", "squad", "rouge", "bleu", "chrf", "length"],
    "text": [],
    "preference": ["rouge", "chrf", "length"],
}


# What `data.primary_metric: auto` decides a run by, per task type: the task's own measure of a good answer
# (SQuAD token F1 for questions, ROUGE-L for texts to write, macro-F1 of the likeliest label for labels).
PRIMARY = {
    "qa": "gen/token_f1",
    "chat": "gen/rougeL",
    "instruction": "gen/rougeL",
    "summarization": "gen/rougeL",
    "generation": "gen/rougeL",
    "fact_check": "choice/macro_f1",
    # a fact-check that cites its sources is judged by whether it points at the sentences that decide it
    "cited_fact_check": "gen/citation_f1",
    # TAT-QA's F1 (spans matched as TAT-QA's own evaluation does; a count by exact match)
    "context_qa": "gen/tatqa_f1",
    "text": "loss",
    # whether the model now prefers the better answer: log-likelihood of chosen over rejected (evaluation/evaluator.py)
    "preference": "pref/accuracy",
}


def primary_metric(name: str, task_types: Sequence[str]) -> str:
    """The metric a run is decided by: `name` as given, or for `auto` the task type's (a mixture, whose task
    metrics are reported per component: the answer-token loss, the one metric every component shares)."""
    if name != "auto":
        return name
    return PRIMARY[task_types[0]] if len(task_types) == 1 else "loss"


# metrics that score one task type's structured answers only
ONLY_FOR = {"tatqa": "context_qa", "citation": "cited_fact_check"}


def resolve(names: str | Sequence[str] | None, task_type: str) -> list[str]:
    if names in (None, "auto"):
        return DEFAULTS[task_type]
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in METRICS:
            raise unknown_option("metric", name, METRICS, "Set eval.metrics to auto or a list of known metrics.")
        if name in ONLY_FOR and ONLY_FOR[name] != task_type:
            raise DomainTuneError(
                f"eval.metrics names '{name}', which scores {ONLY_FOR[name]} answers; this task is {task_type}.",
                f"Drop '{name}' from eval.metrics (or use eval.metrics=auto).",
            )
    return names


def score(
    names: Sequence[str],
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    labels: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    golds: Sequence[SpanAnswer | CitedAnswer | None] = (),
) -> Scores:
    """Evidence per metric name; `values(score(...))` gives the plain scores. `golds`: the structured gold
    answers a span scorer needs (`Task.gold`; context_qa)."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(preds))]
    out: Scores = {}
    for name in names:
        out.update(METRICS[name](ids, preds, refs, labels=labels, golds=golds))
    return out


def score_records(names: Sequence[str], task: Task, preds: Sequence[str], records: Sequence[dict[str, Any]]) -> Scores:
    """Score one task's answers to its records: references, label set and span golds all read from the task."""
    return score(
        names,
        preds,
        [task.references(r) for r in records],
        task.labels,
        ids=[r["_src"] for r in records],
        golds=[task.gold(r) for r in records],
    )


def values(evidence: Scores) -> dict[str, float]:
    return {k: e.value() for k, e in evidence.items()}
