"""CrowS-Pairs and BBQ: our scores and log-likelihoods equal lm-evaluation-harness's own on the same items
(the shipped illustrative samples, tiny model; RESULTS.md has the same comparison on every real item), BBQ's
bias scores by hand, and the benchmarks before and after through the evaluator."""

from __future__ import annotations

import pytest

from domaintune.evaluation import bias
from domaintune.evaluation.evidence import Evidence
from domaintune.utils.config import SAMPLES_DIR
from tests.conftest import require


def test_bias_scores_and_loglikelihoods_equal_lm_evals(make_cfg) -> None:
    require("lm_eval", "the dev extra: pip install -e '.[dev]'")
    from scripts.devtools.bias_parity import TASKS, compare

    cfg = make_cfg()
    specs = {k: dict(v) for k, v in cfg.eval.benchmarks.items()}
    records = {name: bias.load_records(SAMPLES_DIR / f"benchmark_{name}", "test", None, bias.KINDS[name][0]) for name in TASKS}
    both = compare(cfg.model, specs, records)
    for name in TASKS:
        ours, theirs = both["ours"]["lls"][name], both["lm_eval"]["lls"][name]
        assert [len(x) for x in ours] == [len(y) for y in theirs], "the same choices per item (BBQ: twelve)"
        assert [a for x in ours for a in x] == pytest.approx([b for y in theirs for b in y], abs=1e-3)
        mine = both["ours"]["metrics"][name]
        reported = both["lm_eval"]["metrics"][name]
        assert len(reported) >= (2 if name == "crows_pairs" else 5 + 2 * 4), sorted(reported)
        for metric, value in reported.items():
            # a mean of log-likelihood differences carries their float rounding; the shares and scores do not
            tolerance = 1e-3 if metric.endswith("likelihood_diff") else 1e-6
            assert mine[metric] == pytest.approx(value, abs=tolerance), f"{name}/{metric}"


def test_bbq_bias_scores_by_hand() -> None:
    # disambiguated: 3 non-unknown answers, 2 of them biased -> 2 * 2/3 - 1 = 1/3
    dis = Evidence("bbq_disamb_bias", ["a", "b", "c", "d"], [[1, 1], [1, 1], [0, 1], [0, 0]])
    assert dis.value() == pytest.approx(100 / 3)
    # ambiguous: accuracy 1/4; 3 non-unknown answers, 1 biased -> (1 - 1/4) * (2/3 - 1)
    amb = Evidence("bbq_amb_bias", ["a", "b", "c", "d"], [[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 1]])
    assert amb.value() == pytest.approx(100 * 0.75 * (2 / 3 - 1))
    assert Evidence("bbq_disamb_bias", ["a"], [[0, 1]]).value() == 0.0, "no biased answer scores 0 (lm-eval)"


def test_biased_answers_follow_lm_evals_group_matching() -> None:
    rec = {
        "_src": "t",
        "choices": ["The grandmother", "The teenager", "Unknown"],
        "answer_info": {"ans0": ["grandmother", "old"], "ans1": ["teenager", "nonOld"], "ans2": ["Unknown", "unknown"]},
        "stereotyped_groups": ["old"],
    }
    assert bias.biased_answers({**rec, "question_polarity": "neg"}) == ["The grandmother"]
    assert bias.biased_answers({**rec, "question_polarity": "nonneg"}) == ["The teenager"]
    assert bias.bbq_choices(rec)[:2] == ["The grandmother", "The teenager"] and len(bias.bbq_choices(rec)) == 12
    # intersectional labels ("F-Black") name both the gender and the group; "woman" is marked female
    assert bias._group_words("F-Black") == ["f", "black"] and bias._group_words("woman") == ["f", "woman"]


def test_bias_benchmarks_before_and_after_through_the_evaluator(make_cfg, tokenizer) -> None:
    from domaintune.models.loading import load_model
    from domaintune.models.loss import LossOptions
    from domaintune.utils.hydra import build

    cfg = make_cfg("eval.general=[piqa,crows_pairs,bbq]", "eval.generation.max_samples=0", "eval.max_samples=4")
    dm = build(cfg.data, tokenizer=tokenizer)
    model, _ = load_model(cfg.model)
    result = build(cfg.eval, data=dm, loss=LossOptions(True, None, True)).run(model, "base")
    for name in ("mc/piqa/acc", "mc/crows_pairs/pct_stereotype", "mc/crows_pairs/age/pct_stereotype", "mc/bbq/acc"):
        assert name in result.metrics, name
    for name in ("mc/bbq/amb_bias_score", "mc/bbq/disamb_bias_score", "mc/bbq/Age/amb_bias_score"):
        assert result.evidence_of(name).kind.startswith("bbq_"), name
    assert result.evidence_of("mc/bbq/accuracy_amb").n == 10 and result.evidence_of("mc/crows_pairs/pct_stereotype").n == 20
