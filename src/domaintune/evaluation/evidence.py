"""The per-example evidence behind every quality metric, and paired bootstrap intervals on base-vs-tuned changes.

A metric is reported together with the rows it was computed from (one per example, with the example's id),
and the reported value *is* `Evidence.value()`, so the interval and the point estimate cannot disagree.
How rows become a score depends on the metric's kind:

- `mean`: per-example scores (ROUGE, SQuAD F1/EM, label accuracy, multiple-choice accuracy, lengths);
- `ratio`: per-example (numerator, denominator), a ratio of sums (e.g. generated / reference words);
- `loss` / `perplexity`: per-example (summed NLL, answer tokens), token-weighted as training weighs them;
- `bleu` / `chrf`: sacrebleu's per-sentence sufficient statistics, summed, so resamples are scored at corpus
  level exactly as `corpus_bleu` / `corpus_chrf` score the whole set;
- `macro_f1`: per-example (gold, guess) class indices, F1 per label averaged over the label set;
- `bbq_disamb_bias` / `bbq_amb_bias`: BBQ's bias scores (evaluation/bias.py) from per-item (biased, not unknown)
  and (right, biased, not unknown) flags: 2 * biased / not-unknown - 1, times (1 - accuracy) for ambiguous items.

Why a hand-written bootstrap: scipy's `bootstrap` resamples one statistic of plain arrays; paired resampling
of corpus-level metrics (BLEU from summed n-gram statistics, macro-F1 from a confusion matrix) thousands of
times needs the statistic vectorised over index matrices, which is the few lines below. sacrebleu's own
paired test compares systems' scores but gives no interval on their difference.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

KINDS = ("mean", "ratio", "loss", "perplexity", "bleu", "chrf", "macro_f1", "bbq_disamb_bias", "bbq_amb_bias")
VERDICTS = ("better", "worse", "no detectable change")


@dataclass
class Evidence:
    kind: str
    ids: list[str]
    rows: list[Any]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown evidence kind {self.kind!r} (known: {', '.join(KINDS)})")
        if len(self.ids) != len(self.rows):
            raise ValueError(f"{len(self.ids)} ids for {len(self.rows)} rows")

    @property
    def n(self) -> int:
        return len(self.rows)

    def array(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float64)

    def value(self) -> float:
        return float(aggregate(self.kind, self.array()[None], self.params)[0])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(**d)


def _sacrebleu_metric(kind: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU() if kind == "bleu" else CHRF()


def aggregate(kind: str, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """The metric of each resample: `rows` has shape (resamples, n, ...) and the result (resamples,)."""
    if rows.shape[1] == 0:
        return np.full(rows.shape[0], math.nan)
    if kind == "mean":
        return rows.mean(axis=1)
    if kind == "ratio":
        return rows[..., 0].sum(axis=1) / np.maximum(rows[..., 1].sum(axis=1), 1e-9)
    if kind in ("loss", "perplexity"):
        loss = rows[..., 0].sum(axis=1) / np.maximum(rows[..., 1].sum(axis=1), 1)
        return loss if kind == "loss" else np.exp(np.minimum(loss, 50.0))
    if kind in ("bleu", "chrf"):
        # sacrebleu's private-but-stable pair (its own significance tests use them): summed per-sentence
        # statistics -> the corpus score, identical to corpus_bleu / corpus_chrf on the same sentences.
        metric = _sacrebleu_metric(kind)
        totals = np.rint(rows.sum(axis=1)).astype(np.int64)  # counts: exact in float64
        return np.array([metric._compute_score_from_stats(t.tolist()).score for t in totals])
    if kind == "macro_f1":
        k = int(params["classes"])  # guesses may also be k ("unparseable"): never gold, so always wrong
        gold, guess = rows[..., 0].astype(int), rows[..., 1].astype(int)
        out = np.zeros(rows.shape[0])
        for c in range(k):
            tp = ((gold == c) & (guess == c)).sum(axis=1)
            fp = ((gold != c) & (guess == c)).sum(axis=1)
            fn = ((gold == c) & (guess != c)).sum(axis=1)
            denom = 2 * tp + fp + fn
            out += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        return 100 * out / k
    if kind in ("bbq_disamb_bias", "bbq_amb_bias"):
        flags = rows if kind == "bbq_disamb_bias" else rows[..., 1:]
        biased, answered = flags[..., 0].sum(axis=1), flags[..., 1].sum(axis=1)
        # lm-eval: no biased answer at all scores 0 (also when every answer was "unknown")
        score = np.where(biased == 0, 0.0, 2 * biased / np.maximum(answered, 1e-9) - 1)
        return 100 * (score if kind == "bbq_disamb_bias" else (1 - rows[..., 0].mean(axis=1)) * score)
    raise ValueError(f"unknown evidence kind {kind!r}")


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap interval on `tuned - base` over the examples both were scored on."""

    low: float
    high: float
    n: int
    confidence: float
    resamples: int


def paired_interval(
    base: Evidence, tuned: Evidence, resamples: int, confidence: float, seed: int, name: str = ""
) -> Interval | None:
    """Resample the examples (the same indices for base and tuned), recompute both metrics, and take the
    central `confidence` interval of their difference. None when the two share no example."""
    if base.kind != tuned.kind:
        raise ValueError(f"{name}: base evidence is {base.kind}, tuned is {tuned.kind}")
    where = {i: k for k, i in enumerate(tuned.ids)}
    pairs = [(k, where[i]) for k, i in enumerate(base.ids) if i in where]
    if not pairs:
        return None
    b = base.array()[[p for p, _ in pairs]]
    t = tuned.array()[[q for _, q in pairs]]
    n = len(pairs)
    # seeded per metric name, so a metric's interval does not depend on which other metrics were computed
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    diffs = np.empty(resamples)
    step = max(1, 2_000_000 // max(n * max(b[0].size, 1), 1))  # bounded memory for the index matrices
    for start in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - start), n))
        diffs[start : start + len(idx)] = aggregate(tuned.kind, t[idx], tuned.params) - aggregate(base.kind, b[idx], base.params)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return Interval(float(low), float(high), n, confidence, resamples)


def interval_of(e: Evidence, resamples: int, confidence: float, seed: int, name: str = "") -> Interval:
    """A bootstrap interval on one model's metric itself (not a change): e.g. whether a classifier's accuracy
    lies above what answering without reading the input would score."""
    rng = np.random.default_rng([int(seed), zlib.crc32(f"single|{name}".encode())])
    rows = e.array()
    idx = rng.integers(0, e.n, size=(resamples, e.n))
    values = aggregate(e.kind, rows[idx], e.params)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(low), float(high), e.n, confidence, resamples)


def verdict(interval: Interval | None, direction: int) -> str | None:
    """better / worse when the interval excludes zero (in the metric's good direction), else no detectable
    change; None for descriptive metrics (direction 0) or without an interval."""
    if interval is None or direction == 0:
        return None
    if interval.low > 0 or interval.high < 0:
        return "better" if (interval.low > 0) == (direction > 0) else "worse"
    return "no detectable change"


def too_wide(interval: Interval | None, base: float | None, tuned: float | None, relative: float) -> bool:
    """An undecided interval wider than `relative` x the metric's size: too little evidence to tell a
    moderate effect from none (more records, e.g. eval.generation.max_samples, would narrow it)."""
    if interval is None or interval.low > 0 or interval.high < 0:
        return False
    scale = max(abs(base or 0.0), abs(tuned or 0.0))
    return scale > 0 and (interval.high - interval.low) > relative * scale


def paired_intervals(
    base: dict[str, dict[str, Any]], tuned: dict[str, dict[str, Any]], resamples: int, confidence: float, seed: int
) -> dict[str, Interval]:
    """An interval for every metric that both results hold evidence for (serialised `Evidence` dicts)."""
    out = {}
    for name in base.keys() & tuned.keys():
        found = paired_interval(
            Evidence.from_dict(base[name]), Evidence.from_dict(tuned[name]), resamples, confidence, seed, name
        )
        if found is not None:
            out[name] = found
    return out
