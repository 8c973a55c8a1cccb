"""Per-example evidence and paired bootstrap intervals: the interval finds planted effects, covers the true
difference, says "no detectable change" when there is none, and every corpus metric aggregates exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
import torch

from domaintune.evaluation import metrics
from domaintune.evaluation.evidence import Evidence, Interval, paired_interval, paired_intervals, too_wide, verdict
from domaintune.reporting.report import compare

IDS = [f"r{i}" for i in range(200)]


def mean_evidence(values: np.ndarray) -> Evidence:
    return Evidence("mean", IDS[: len(values)], values.tolist())


def test_interval_covers_a_planted_difference_and_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(50, 10, 200)
    tuned = base + 3.0 + rng.normal(0, 2, 200)  # a planted gain of 3 points, noisy per example
    ci = paired_interval(mean_evidence(base), mean_evidence(tuned), 2000, 0.95, seed=1, name="gen/rougeL")
    true_change = float(tuned.mean() - base.mean())
    assert ci is not None and ci.n == 200
    assert ci.low < true_change < ci.high
    assert ci.low > 0, "a planted gain far above the noise must be detected"
    assert verdict(ci, +1) == "better" and verdict(ci, -1) == "worse"


def test_no_effect_gives_no_detectable_change_and_the_95_percent_level_holds() -> None:
    """Across 200 simulated evaluations without an effect, about 5% of intervals exclude zero."""
    rng = np.random.default_rng(1)
    excluded = 0
    for trial in range(200):
        base = rng.normal(20, 5, 60)
        tuned = base + rng.normal(0, 3, 60)  # per-example noise, no true difference
        ci = paired_interval(mean_evidence(base), mean_evidence(tuned), 500, 0.95, seed=trial, name="m")
        excluded += verdict(ci, +1) != "no detectable change"
    assert excluded <= 25, f"{excluded}/200 intervals excluded zero without an effect"


def test_pairing_narrows_the_interval_against_unpaired_noise() -> None:
    """Large per-example spread shared by both models cancels out: pairing is what makes the gain visible."""
    rng = np.random.default_rng(2)
    hardness = rng.normal(0, 30, 100)  # some examples are much harder than others, for both models
    base = 40 + hardness
    tuned = 42 + hardness + rng.normal(0, 1, 100)
    ci = paired_interval(mean_evidence(base), mean_evidence(tuned), 1000, 0.95, seed=0, name="m")
    assert ci is not None and ci.low > 0 and ci.high - ci.low < 1.0


def test_intervals_are_seeded_per_metric_and_pair_by_id() -> None:
    rng = np.random.default_rng(3)
    b, t = mean_evidence(rng.normal(0, 1, 50)), mean_evidence(rng.normal(0.2, 1, 50))
    first = paired_intervals({"a": b.to_dict(), "x": b.to_dict()}, {"a": t.to_dict(), "x": t.to_dict()}, 300, 0.9, 7)
    again = paired_intervals({"a": b.to_dict()}, {"a": t.to_dict()}, 300, 0.9, 7)
    assert first["a"] == again["a"], "an interval must not depend on which other metrics were computed"
    # the same examples in another order pair by id, not by position
    shuffled = Evidence("mean", t.ids[::-1], t.rows[::-1])
    assert paired_interval(b, shuffled, 300, 0.9, 7, "a") == first["a"]


def test_corpus_metrics_aggregate_exactly_like_the_libraries() -> None:
    preds = ["the cat sat on the mat", "a dog", "fever is a high temperature", "", "yes indeed it is"]
    refs = [["the cat is on the mat"], ["a big dog", "the dog"], ["a fever is a high body temperature"], ["none"], ["yes"]]
    found = metrics.values(metrics.score(["bleu", "chrf"], preds, refs))
    streams = metrics._ref_streams(refs)
    assert found["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, streams).score, abs=1e-9)
    assert found["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, streams).score, abs=1e-9)
    # macro-F1 from per-example (gold, guess) equals torchmetrics' multiclass F1 (the unparseable class excluded)
    from torchmetrics.functional.classification import multiclass_f1_score

    rng = np.random.default_rng(4)
    gold, guess = rng.integers(0, 3, 80), rng.integers(0, 4, 80)
    labels = ["true", "false", "mixed"]
    texts = [labels[g] if g < 3 else "no idea" for g in guess]
    ev = metrics.score(["label"], texts, [[labels[g]] for g in gold], labels)["macro_f1"]
    f1 = multiclass_f1_score(torch.tensor(guess), torch.tensor(gold), num_classes=4, average="none")
    assert ev.value() == pytest.approx(100 * float(f1[:3].mean()), abs=1e-4)


def test_corpus_metric_intervals_resample_examples() -> None:
    """BLEU's interval comes from resampled sentences' statistics: a clearly better system is detected."""
    refs = [[f"the patient should rest and drink water number {i}"] for i in range(40)]
    good = [r[0] for r in refs[:30]] + ["rest" for _ in range(10)]
    bad = ["drink" for _ in range(40)]
    ev_bad, ev_good = (metrics.score(["bleu"], p, refs)["bleu"] for p in (bad, good))
    ci = paired_interval(ev_bad, ev_good, 500, 0.95, 0, "gen/bleu")
    assert ci is not None and ci.low > 0 and ci.low < ev_good.value() - ev_bad.value() < ci.high


def test_loss_evidence_is_token_weighted() -> None:
    ev = Evidence("loss", ["a", "b"], [[10.0, 10], [1.0, 1]])  # 11 nats over 11 tokens
    assert ev.value() == pytest.approx(1.0)
    assert Evidence("perplexity", ev.ids, ev.rows).value() == pytest.approx(math.e)


def test_compare_puts_interval_verdict_and_width_warning_on_each_row() -> None:
    wide = Interval(-20.0, 25.0, 8, 0.95, 1000)
    tight = Interval(-0.3, -0.1, 200, 0.95, 1000)
    rows = compare(
        {"loss": 2.0, "gen/rougeL": 20.0, "gen/length_words": 30.0, "eval_tokens_per_s": 100.0},
        {"loss": 1.8, "gen/rougeL": 22.0, "gen/length_words": 35.0, "eval_tokens_per_s": 90.0},
        {"loss": tight, "gen/rougeL": wide, "gen/length_words": wide},
        warn_relative_width=0.5,
    )
    assert rows["loss"]["verdict"] == "better" and not rows["loss"]["too_wide"]
    assert rows["gen/rougeL"]["verdict"] == "no detectable change" and rows["gen/rougeL"]["too_wide"]
    assert rows["gen/rougeL"]["n"] == 8 and rows["gen/rougeL"]["ci_low"] == -20.0
    assert rows["gen/length_words"]["verdict"] is None, "lengths are descriptive"
    assert rows["eval_tokens_per_s"]["verdict"] is None and rows["eval_tokens_per_s"]["ci_low"] is None
    assert not too_wide(tight, 2.0, 1.8, 0.5)
