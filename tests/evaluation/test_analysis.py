"""The refinement report's diagnoses, each on a planted problem, and the config change each one names."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from domaintune.reporting.analysis import analyze, curve_analysis, data_analysis, generation_analysis, label_analysis
from tests.conftest import compose_train


def topics(found) -> set[str]:
    return {f.topic for f in found}


def test_curves_tell_still_improving_from_overfitting() -> None:
    improving = {"train/loss": [[2, 3.0], [8, 2.0]], "val/loss": [[4, 3.0], [8, 2.5], [12, 2.2]]}
    _, found = curve_analysis(improving, None)
    assert topics(found) == {"still improving"} and "experiment=more_steps" in found[0].change
    overfit = {"train/loss": [[4, 2.0], [8, 1.5], [12, 1.0]], "val/loss": [[4, 2.4], [8, 2.2], [12, 2.6]]}
    lines, found = curve_analysis(overfit, "best, step 8 of 12")
    assert topics(found) == {"overfitting"} and "step 8" in found[0].text and "trainer.max_steps=8" in found[0].change
    assert any("best: step 8" in line for line in lines)
    assert curve_analysis({}, None) == ([], []), "an evaluation-only folder has no curves to diagnose"


def test_data_findings_truncation_and_label_imbalance() -> None:
    report = {
        "splits": {"train": [{"step": "tokenize", "in": 100, "out": 100, "changed": 20}]},
        "tokens": {"train": {"p95": 384}},
        "labels": {"train": {"true": 70, "false": 20, "not_enough_info": 10}},
    }
    _, found = data_analysis(report)
    assert topics(found) == {"truncation", "label imbalance"}
    assert "experiment=longer_context" in found[0].change and "'not_enough_info'" in found[1].change


def test_label_confusion_and_unparseable_answers() -> None:
    labels = ["true", "false"]
    rows = [[0, 0], [0, 2], [1, 1], [1, 0], [1, 2]]  # (gold, answer); 2 = unparseable
    per_example = [
        {"stage": "tuned", "metric": "gen/macro_f1", "kind": "macro_f1", "id": f"r{i}", "value": None, "row": r,
         "params": {"classes": 2, "labels": labels}}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    lines, found = label_analysis(per_example, {"r1": "I am not sure", "r4": "maybe"})
    table = "\n".join(lines)
    assert "| true | 1 | 0 | 1 | 50.0 |" in table and "| false | 1 | 1 | 1 | 50.0 |" in table
    assert "Unparseable answers: 2 of 5" in table and "I am not sure" in table
    assert topics(found) == {"answer format", "near chance"}, "2 of 5 right is no better than a coin"
    # a label the model almost never answers is named, as is a model that clearly beats chance
    rows = [[0, 0]] * 40 + [[1, 1]] * 40 + [[2, 0]] * 18 + [[2, 2]] * 2
    labels3 = ["true", "false", "not_enough_info"]
    per_example = [
        {"stage": "tuned", "metric": "gen/macro_f1", "kind": "macro_f1", "id": f"r{i}", "value": None, "row": r,
         "params": {"classes": 3, "labels": labels3}}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    _, found = label_analysis(per_example, {})
    assert topics(found) == {"weak label"} and "'not_enough_info' (generated label) has F1 18.2" in found[0].text


def test_a_lopsided_label_prior_that_calibration_fixes_is_named_as_such() -> None:
    """Raw likeliest labels at chance (everything answered 'true'), calibrated ones well above it: the finding is
    the label prior, not "train more"; the calibrated matrix names its scorer."""
    labels = ["true", "false", "not_enough_info"]
    raw = [[g, 0] for g in (0, 1, 2) for _ in range(30)]
    calibrated = [[g, g if i < 24 else (g + 1) % 3] for g in (0, 1, 2) for i in range(30)]

    def rows(metric: str, pairs: list[list[int]]) -> list[dict]:
        return [
            {"stage": "tuned", "metric": metric, "kind": "macro_f1", "id": f"r{i}", "value": None, "row": r,
             "params": {"classes": 3, "labels": labels}}
            for i, r in enumerate(pairs)
        ]  # fmt: skip

    lines, found = label_analysis(rows("choice/macro_f1", raw) + rows("choice/calibrated/macro_f1", calibrated), {})
    prior = [f for f in found if f.topic == "label prior"]
    assert len(prior) == 1 and "80.0%" in prior[0].text and "choice/calibrated/macro_f1" in prior[0].change
    assert "near chance" not in topics(found) and not prior[0].overrides
    assert "### choice/calibrated/labels" in "\n".join(lines)
    # without the calibrated scores the same raw answers are "near chance"
    assert "near chance" in topics(label_analysis(rows("choice/macro_f1", raw), {})[1])


def test_generation_findings_repetition_and_length() -> None:
    loop = "take the pill " * 12
    gens = [{"id": f"g{i}", "reference": "rest and drink water", "tuned": loop, "base": ""} for i in range(5)]
    _, found = generation_analysis(gens)
    assert topics(found) == {"repetition", "answer length"}
    assert any(f.change == "eval.generation.repetition_penalty=1.2" for f in found)


def test_experiment_presets_named_by_findings_compose(tmp_path: Path) -> None:
    """Every preset a finding points to exists and changes what it says (the regularize lr follows the adapter's)."""
    for preset, key, expected in (
        ("more_steps", "trainer.max_steps", 180),
        ("regularize", "optim.lr", 1.0e-4),
        ("regularize", "callbacks.early_stopping.patience", 3),
        ("longer_context", "data.max_length", 768),
    ):
        cfg = compose_train(["model=tiny", f"experiment={preset}"], tmp_path)
        assert OmegaConf.select(cfg, key) == expected, (preset, key)


def test_analyze_refuses_a_folder_without_evidence(tmp_path: Path) -> None:
    import pytest

    from domaintune.utils.errors import DomainTuneError

    (tmp_path / "metrics.json").write_text(json.dumps({}))
    with pytest.raises(DomainTuneError, match=r"no per_example\.jsonl"):
        analyze(tmp_path)


def test_answers_that_never_stop_name_the_change_that_fits_the_data() -> None:
    """A tuned model that runs into max_new_tokens: longer examples when training truncated them, else more steps;
    each finding carries the overrides scripts/refine.py runs."""
    gens = [
        {
            "id": f"t:{i}",
            "prompt": "p",
            "reference": "a b c d",
            "base": "x",
            "tuned": "a b c",
            "base_stopped": True,
            "tuned_stopped": i >= 3,
        }
        for i in range(10)
    ]
    lines, found = generation_analysis(gens, truncated=0.2)
    never = next(f for f in found if f.topic == "never stops")
    assert "3 of 10" in never.text and never.overrides == ["experiment=longer_context"]
    assert "- answers that ran into max_new_tokens without stopping: tuned 3 of 10, base 0 of 10" in lines
    _, found = generation_analysis(gens, truncated=0.01)
    assert next(f for f in found if f.topic == "never stops").overrides == ["experiment=more_steps"]
    gens = [{**g, "tuned_stopped": True} for g in gens]
    assert "never stops" not in topics(generation_analysis(gens, truncated=0.2)[1])
    # under the 10% mark, but worse than the base model: named too
    many = [{**gens[0], "id": f"t:{i}", "tuned_stopped": i >= 7} for i in range(100)]
    assert topics(generation_analysis(many)[1]) >= {"stops less often"}
    assert "stops less often" not in topics(generation_analysis([{**g, "base_stopped": g["tuned_stopped"]} for g in many])[1])


def test_a_fine_tune_that_increases_measured_bias_is_named_in_findings_and_model_card() -> None:
    from domaintune.reporting.analysis import bias_analysis
    from domaintune.reporting.model_card import _bias_limit

    metrics = {
        "verdict": {"mc/bbq/amb_bias_score": "worse", "mc/crows_pairs/pct_stereotype": "no detectable change", "loss": "better"},
        "base": {"mc/bbq/amb_bias_score": 2.0, "mc/crows_pairs/pct_stereotype": 55.0},
        "tuned": {"mc/bbq/amb_bias_score": 9.5, "mc/crows_pairs/pct_stereotype": 56.0},
    }
    lines, findings = bias_analysis(metrics)
    assert [f.topic for f in findings] == ["bias"] and "mc/bbq/amb_bias_score" in findings[0].text
    assert "mc/crows_pairs/pct_stereotype" not in findings[0].text and len(lines) == 2
    rows = {k: {"verdict": v} for k, v in metrics["verdict"].items()}
    assert "increased measured bias beyond doubt on mc/bbq/amb_bias_score" in _bias_limit(rows)
    rows["mc/bbq/amb_bias_score"]["verdict"] = "better"
    assert _bias_limit(rows).startswith("- Bias: no score of 2 (bbq, crows_pairs) got worse")
    assert "not measured" in _bias_limit({"loss": {"verdict": "better"}})
    assert bias_analysis({"verdict": {"mc/bbq/amb_bias_score": "better"}})[1] == []
