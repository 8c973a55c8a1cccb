"""What decides a run (primary metric), the answer-length limit, labels scored by likelihood, trivial
baselines, the time budget's arithmetic and run-to-run comparison: each on planted values."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from domaintune.core.budget import TimeBudget, parse_budget, upcoming_batch_tokens
from domaintune.core.checks import check_evaluation
from domaintune.data.formats import Task
from domaintune.evaluation import metrics, multiple_choice
from domaintune.evaluation.choice import (
    choice_evidence,
    cross_fitted,
    fit_offsets,
    label_items,
    label_loglikelihoods,
    trivial_baseline,
)
from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.generation import answer_limit
from domaintune.evaluation.settings import Bootstrap, Generation
from domaintune.models.loading import load_model
from domaintune.models.loss import LossOptions
from domaintune.reporting.compare import compare_runs
from domaintune.utils.config import CONFIG_DIR, settings
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build

LOSS = LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True)


# ------------------------------------------------------------------------------------------ answer limit
class WordTokenizer:
    """One token per word: planted answer lengths are then known exactly."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(t.split()) for t in texts]}


def planted_data(lengths: list[int]) -> SimpleNamespace:
    task = Task(
        type="qa",
        fields={},
        system_prompt=None,
        prompt="{{ question }}",
        response="{{ answer }}",
        labels=None,
        train_on="all",
        span_separator=None,
    )
    records = [{"_src": f"t:{i}", "question": "q", "answer": " ".join(["w"] * n)} for i, n in enumerate(lengths)]
    return SimpleNamespace(
        tokenizer=WordTokenizer(), records={"train": records}, require=lambda split: records, task_of=lambda r: task
    )


def limit(max_new_tokens: int | str, percentile: float, cap: int) -> Generation:
    """The shipped eval.generation block with the answer-limit keys set."""
    shipped = OmegaConf.load(CONFIG_DIR / "eval" / "default.yaml").generation
    values = {**OmegaConf.to_container(shipped), "max_new_tokens": max_new_tokens, "auto_percentile": percentile}
    return settings(Generation, {**values, "auto_cap": cap}, "eval.generation")


def test_max_new_tokens_auto_takes_a_percentile_of_the_training_answers() -> None:
    data = planted_data(list(range(1, 101)))  # answers of 1..100 tokens, +1 each for the end-of-turn token
    found = answer_limit(data, limit("auto", 95, 512))
    assert found["max_new_tokens"] == 97  # the 95th percentile of 2..101 (numpy "higher")
    assert "95th percentile of 100 training answers" in found["how"]
    capped = answer_limit(data, limit("auto", 95, 40))
    assert capped["max_new_tokens"] == 40 and "capped at 40" in capped["how"]
    assert answer_limit(data, limit(7, 95, 512))["max_new_tokens"] == 7


def test_evaluator_states_the_auto_limit_and_counts_answers_at_it(make_cfg, tokenizer) -> None:
    cfg = make_cfg("eval.generation.max_new_tokens=auto", "eval.generation.auto_cap=3", "eval.generation.max_samples=4")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    evaluator = build(cfg.eval, data=dm, loss=LOSS)
    assert evaluator.generation_settings.max_new_tokens == 3 and "capped at 3" in evaluator.answer_limit["how"]
    model = load_model(cfg.model)[0]
    _, evidence, samples, stats = evaluator.generation(model, "test")
    assert stats.at_limit == 4 and stats.positions == 4 * 3
    # the untrained tiny model never emits its end-of-turn token: every answer runs into the limit of 3
    assert evidence["gen/at_limit_rate"].value() == 100.0 and not any(s["stopped"] for s in samples)


# ------------------------------------------------------------------------------------------ primary metric
def test_primary_metric_by_task_type_and_as_named() -> None:
    assert metrics.primary_metric("auto", ["qa"]) == "gen/token_f1"
    assert metrics.primary_metric("auto", ["fact_check"]) == "choice/macro_f1"
    assert metrics.primary_metric("auto", ["summarization"]) == "gen/rougeL"
    assert metrics.primary_metric("auto", ["qa", "summarization"]) == "loss"  # a mixture of task types
    assert metrics.primary_metric("gen/chrf", ["qa"]) == "gen/chrf"


def test_an_unreported_primary_metric_is_refused_before_training(make_cfg, tokenizer) -> None:
    cfg = make_cfg("data.primary_metric=gen/rouge9", "eval.generation.max_samples=2")
    dm = build(cfg.data, tokenizer=tokenizer)
    evaluator = build(cfg.eval, data=dm, loss=LOSS)
    base = evaluator.run(load_model(cfg.model)[0], "base")
    with pytest.raises(DomainTuneError, match=r"data.primary_metric=gen/rouge9 is not among .*gen/token_f1") as err:
        evaluator.check_primary(base)
    assert "Set data.primary_metric to one of them" in err.value.paragraph()
    # generation switched off for a quick run: the primary metric is missing with its whole family, said but not fatal
    cfg = make_cfg("eval.generation.max_samples=0")
    quick = build(cfg.eval, data=build(cfg.data, tokenizer=tokenizer), loss=LOSS)
    assert quick.primary == "gen/token_f1"
    result = quick.run(load_model(cfg.model)[0], "base")
    assert "gen/token_f1" not in result.metrics and quick.check_primary(result) is result


# ------------------------------------------------------------------------------------------ labels by likelihood
def brute_force_loglikelihood(model: torch.nn.Module, ctx: list[int], cont: list[int]) -> float:
    """Sum of log p(continuation) from one plain forward pass over context + continuation (no batching tricks)."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[len(ctx) - 1 + k, t] for k, t in enumerate(cont)))


def test_label_scores_equal_the_multiple_choice_scorer_and_a_plain_forward_pass(make_cfg, tokenizer) -> None:
    cfg = make_cfg("data=fact_checking")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    model = load_model(cfg.model)[0].eval()
    task, records = dm.tasks[""], dm.records["test"][:9]
    items = label_items(dm, task, records)
    assert items[0].choices == task.labels and items[0].question.endswith("<|im_start|>assistant\n")
    scored, lls = label_loglikelihoods(model, dm, task, records, 4, True, LOSS)
    found = choice_evidence(scored, lls, task.labels)
    # the scorer's own (lm-eval) path: one row per (context, choice), full logits
    plain = multiple_choice.item_loglikelihoods(model, tokenizer, items, "", 4, False, False)
    assert found["accuracy"].value() == multiple_choice.score(items, plain)["acc"].value()
    for item, lls in zip(items, plain, strict=True):
        pairs = [multiple_choice.encode_pair(tokenizer, item.question, c) for c in item.choices]
        assert lls == pytest.approx([brute_force_loglikelihood(model, *p) for p in pairs], abs=1e-3)
    guesses = [max(range(3), key=ll.__getitem__) for ll in plain]
    assert [row[1] for row in found["macro_f1"].rows] == guesses
    assert [row[0] for row in found["macro_f1"].rows] == [task.labels.index(r["label"]) for r in records]


def test_trivial_baseline_is_the_majority_label_or_chance() -> None:
    recs = [{"label": x} for x in ["a", "a", "a", "b"]]
    assert trivial_baseline(recs, ["a", "b"]) == (75.0, "always 'a' (the majority label: 3 of 4)")
    balanced = [{"label": x} for x in ["a", "b", "c"]]
    assert trivial_baseline(balanced, ["a", "b", "c", "d"])[0] == pytest.approx(100 / 3)  # majority 1/3 > chance 1/4


def test_report_says_whether_a_classifier_beats_its_trivial_baseline(make_cfg, tokenizer) -> None:
    from domaintune.evaluation.evaluator import EvalResult
    from domaintune.reporting.publish import above_baselines

    cfg = make_cfg("data=fact_checking")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    evaluator = build(cfg.eval, data=dm, loss=LOSS)
    records = dm.records["test"]
    best, _ = evaluator.trivial_baselines()["choice/accuracy"]

    def result(correct: int) -> EvalResult:
        rows = [100.0 * (i < correct) for i in range(len(records))]
        e = Evidence("mean", [r["_src"] for r in records], rows)
        return EvalResult({"choice/accuracy": e.value()}, evidence={"choice/accuracy": e.to_dict()})

    assert above_baselines(evaluator, result(len(records)))["choice/accuracy"]["above"]
    at_baseline = above_baselines(evaluator, result(round(best / 100 * len(records))))["choice/accuracy"]
    assert not at_baseline["above"] and "NOT above" in at_baseline["text"]


def test_label_offsets_recover_a_planted_prior_shift() -> None:
    """Scores = the log-probabilities the labels were drawn from + a shift per label: the fitted offsets undo the
    shift (up to the fixed first label), and the calibrated argmax recovers the unshifted one's accuracy."""
    g = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(20000, 3, generator=g, dtype=torch.float64)
    gold = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    shift = torch.tensor([0.0, 1.5, -0.7], dtype=torch.float64)
    offsets = fit_offsets(logits + shift, gold)
    assert offsets.tolist() == pytest.approx((-shift).tolist(), abs=0.06)
    calibrated = ((logits + shift + offsets).argmax(1) == gold).double().mean()
    shifted = ((logits + shift).argmax(1) == gold).double().mean()
    unshifted = float((logits.argmax(1) == gold).double().mean())
    assert calibrated == pytest.approx(unshifted, abs=0.01) and calibrated > shifted + 0.03


def test_cross_fitting_never_scores_a_record_with_offsets_fitted_on_its_own_label() -> None:
    g = torch.Generator().manual_seed(1)
    lls = torch.randn(40, 3, generator=g, dtype=torch.float64)
    gold = torch.randint(0, 3, (40,), generator=g)
    out = cross_fitted(lls, gold, 4)
    held = torch.arange(40) % 4 == 1
    assert torch.allclose(out[held], lls[held] + fit_offsets(lls[~held], gold[~held]))
    flipped = gold.clone()
    flipped[held] = (flipped[held] + 1) % 3  # other labels for fold 1 only: its own scores must not move
    again = cross_fitted(lls, flipped, 4)
    assert torch.equal(again[held], out[held]) and not torch.allclose(again[~held], out[~held])


def test_calibrated_choice_metrics_use_offsets_fitted_on_the_calibration_split(make_cfg, tokenizer) -> None:
    cfg = make_cfg("data=fact_checking", "eval.calibration.split=validation", "eval.split=[test,validation]")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    model = load_model(cfg.model)[0].eval()
    evaluator = build(cfg.eval, data=dm, loss=LOSS)
    memo: dict = {}
    found = evaluator.choice(model, "test", memo)
    task = dm.tasks[""]
    items, lls = label_loglikelihoods(model, dm, task, dm.records["test"], cfg.eval.choices.batch_size, True, LOSS)
    fit_items, fit_lls = label_loglikelihoods(model, dm, task, dm.records["validation"], cfg.eval.choices.batch_size, True, LOSS)
    offsets = fit_offsets(fit_lls, torch.tensor([i.answer for i in fit_items]))
    guesses = (lls + offsets).argmax(1).tolist()
    assert [row[1] for row in found["choice/calibrated/macro_f1"].rows] == guesses
    assert found["choice/accuracy"].value() == choice_evidence(items, lls, task.labels)["accuracy"].value()
    # the validation split itself is scored cross-fitted, from the memo's scores (not scored again)
    own = evaluator.choice(model, "validation", memo)
    answers = torch.tensor([i.answer for i in fit_items])
    expected = cross_fitted(fit_lls, answers, cfg.eval.calibration.folds).argmax(1).tolist()
    assert [row[1] for row in own["choice/calibrated/macro_f1"].rows] == expected
    assert "choice/calibrated/accuracy" in evaluator.trivial_baselines()
    # off: no calibrated metrics, and the base-result cache key is the one it was before calibration existed
    plain = build(make_cfg("data=fact_checking").eval, data=dm, loss=LOSS)
    assert not any("calibrated" in k for k in plain.choice(model, "test", {})) and "calibration" not in plain.result_key


def test_calibration_on_a_split_without_the_task_is_refused(make_cfg, tokenizer) -> None:
    with pytest.raises(DomainTuneError, match=r"eval\.calibration\.folds"):
        check_evaluation(make_cfg("data=fact_checking", "eval.calibration.folds=1").eval)
    cfg = make_cfg("data=fact_checking", "eval.calibration.split=train")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    evaluator = build(cfg.eval, data=dm, loss=LOSS)
    dm.records["train"] = []
    with pytest.raises(DomainTuneError, match=r"eval\.calibration\.split=train has no records"):
        evaluator.choice(load_model(cfg.model)[0].eval(), "test", {})


# ------------------------------------------------------------------------------------------ time budget
@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), (120, 120), (None, None)]
)
def test_parse_budget(text, seconds) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["fifteen minutes", "15x", "0m", -3])
def test_parse_budget_refuses_nonsense(bad) -> None:
    with pytest.raises(DomainTuneError, match=r"trainer\.budget"):
        parse_budget(bad)


def test_budget_sizes_the_steps_from_the_measured_rate() -> None:
    budget = TimeBudget(budget_s=600, eval_estimate_s=100, warmup_steps=2, measure_steps=4)
    budget._step_times = [9.0, 7.0, 2.0, 2.0, 2.0, 2.0]  # warm-up steps are slow and are not counted
    # no validation measured yet: estimated as 0.4 x step time x 10 batches = 8 s per check, every 20 steps
    # -> 2.4 s a step; 600 - 60 elapsed - 100 evaluation - 8 for the check at the last step = 432 s -> 180 more
    # steps (the run validates at its last step, so nothing is rounded down to the previous check)
    assert budget.steps_for(6, 60.0, 20, 10) == 186
    assert budget.steps_for(6, 60.0, None, 10) == 6 + 440 // 2, "no validation checks: every step counts, 2 s each"
    budget._val_times = [30.0]  # a measured check: 2 + 30 / 20 = 3.5 s a step; (440 - 30) / 3.5 -> 117 more
    assert budget.steps_for(6, 60.0, 20, 10) == 123
    assert budget.steps_for(6, 700.0, 20, 10) == 6, "over budget: no further step"
    budget.margin_s = 35.0  # kept free at the end: (440 - 30 - 35) / 3.5 -> 107 more
    assert budget.steps_for(6, 60.0, 20, 10) == 113
    # the process slowed: the latest check took 1.2x the first (the same batches), so the tuned evaluation, run
    # after training, is planned at 120 s; the check is 33 s: 600 - 60 - 120 - 33 - 35 = 352 s at 2 + 33/20 s
    budget._val_times = [30.0, 36.0]
    assert budget.eval_estimate_now() == pytest.approx(120.0)
    assert budget.steps_for(6, 60.0, 20, 10) == 6 + int(352 / 3.65)
    budget._val_times = [30.0, 27.0]
    assert budget.eval_estimate_now() == 100.0, "a faster check never shrinks the estimate"


def test_budget_counts_the_runs_setup_but_not_its_base_evaluation() -> None:
    """The run's wall time before its first step (imports, model, data), less the base evaluation (cached after a
    model/data/eval's first run), is spent budget: planned with it, and shown in the report's line."""
    import time
    from types import SimpleNamespace

    budget = TimeBudget(600, 100, 2, 4, run_started=time.time() - 100, excluded_s=40)
    budget.on_train_start(SimpleNamespace(max_steps=500), SimpleNamespace())
    assert 59.5 <= budget.plan.setup_s <= 62, budget.plan.setup_s
    seen: list[float] = []

    def record(step: int, elapsed: float, *rest: object) -> int:
        seen.append(elapsed)
        budget.plan.step_s, budget.plan.validation_s = 2.0, 8.0
        return step + 10

    budget.steps_for = record  # type: ignore[method-assign]
    trainer = SimpleNamespace(
        val_check_interval=20,
        num_val_batches=[10],
        global_step=6,
        lr_scheduler_configs=[],
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=500)),
    )
    budget._replan(trainer, SimpleNamespace())
    assert seen and 59.5 <= seen[0] <= 63, "elapsed = training so far + the setup"
    assert trainer.fit_loop.epoch_loop.max_steps == 16
    assert "spent: setup 60 s" in budget.summary(90.0) or "spent: setup 61 s" in budget.summary(90.0)


def test_budget_replans_max_steps_and_the_schedule(make_cfg, tmp_path: Path) -> None:
    """A budgeted tiny run stops at the step it planned, and its learning-rate schedule is the one a run with
    that max_steps would have (cosine decay to the planned end)."""
    from domaintune.core.pipeline import fit_and_evaluate

    cfg = make_cfg("trainer.budget=1h", "trainer.max_steps=9", "trainer.val_check_interval=3", "logger=csv")
    run = fit_and_evaluate(cfg)
    assert run is not None
    budget = next(c for c in run.trainer.callbacks if isinstance(c, TimeBudget))
    assert budget.plan.planned_steps == 9 and run.trainer.global_step == 9, "an hour is more than enough: the cap holds"
    # DomainTune's loader lists its batches ahead: the plan costed each step by its batch's tokens, measured alike
    assert budget._by_tokens and len(budget._step_tokens) == 9 and all(budget._step_tokens)
    report = (tmp_path / "report.md").read_text()
    assert (
        "time budget: `3600 s for setup + training + tuned evaluation (the base evaluation not counted); planned: "
        "training to step 9" in report
    )

    scheduler = run.trainer.lr_scheduler_configs[0].scheduler
    TimeBudget._apply(run.trainer, run.module, 5)
    fresh = run.module.optim.scheduler(
        optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
        num_warmup_steps=run.module.optim.warmup(5),
        num_training_steps=5,
    )
    assert [scheduler.lr_lambdas[0](s) for s in range(6)] == [fresh.lr_lambdas[0](s) for s in range(6)]
    assert run.trainer.fit_loop.epoch_loop.max_steps == 5


def test_budget_validates_and_checkpoints_its_last_step(make_cfg, tmp_path: Path) -> None:
    """A budgeted run that ends between validation checks validates at its last step, and that check can be
    the best weights (its checkpoint is written), instead of the budget's end falling after the last check."""
    from domaintune.core.pipeline import fit_and_evaluate

    cfg = make_cfg("trainer.budget=1h", "trainer.max_steps=7", "trainer.val_check_interval=3", "logger=csv")
    run = fit_and_evaluate(cfg)
    assert run is not None and run.trainer.global_step == 7
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    val_steps = sorted({int(r["step"]) for r in rows if r.get("val/loss")})
    assert val_steps[-1] == 6, f"the last check (Lightning counts the step before the update): {val_steps}"
    assert len(val_steps) == 3, f"checks at steps 3, 6 and the budget's last step 7: {val_steps}"
    assert any("step00007" in p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))


# ------------------------------------------------------------------------------------------ run vs run
BOOT = Bootstrap(resamples=1000, confidence=0.95, seed=0, warn_relative_width=0.5)


def planted_run(folder: Path, ids: list[str], f1: list[float], primary: str = "gen/token_f1") -> Path:
    folder.mkdir(parents=True)
    with (folder / "per_example.jsonl").open("w") as f:
        for i, v in zip(ids, f1, strict=True):
            f.write(
                json.dumps({"stage": "tuned", "metric": "gen/token_f1", "kind": "mean", "id": i, "value": v, "row": v}) + "\n"
            )
            f.write(
                json.dumps({"stage": "tuned", "metric": "gen/chrf", "kind": "mean", "id": i, "value": 30.0, "row": 30.0}) + "\n"
            )
    (folder / "metrics.json").write_text(json.dumps({"split": "test", "primary": primary}))
    return folder


def test_compare_finds_a_planted_gain(tmp_path: Path) -> None:
    ids = [f"test.jsonl:{i}" for i in range(60)]
    a = planted_run(tmp_path / "a", ids, [20.0 + (i % 7) for i in range(60)])
    b = planted_run(tmp_path / "b", ids, [25.0 + (i % 7) for i in range(60)])
    rows, primary = compare_runs(a, b, BOOT)
    assert primary == "gen/token_f1" and next(iter(rows)) == "gen/token_f1"
    assert rows["gen/token_f1"]["change"] == pytest.approx(5.0) and rows["gen/token_f1"]["verdict"] == "better"
    assert rows["gen/chrf"]["verdict"] == "no detectable change"
    rows, _ = compare_runs(b, a, BOOT)
    assert rows["gen/token_f1"]["verdict"] == "worse"


def test_compare_refuses_runs_scored_on_other_examples(tmp_path: Path) -> None:
    a = planted_run(tmp_path / "a", [f"test.jsonl:{i}" for i in range(10)], [1.0] * 10)
    b = planted_run(tmp_path / "b", [f"test.jsonl:{i}" for i in range(2, 12)], [1.0] * 10)
    with pytest.raises(DomainTuneError, match=r"2 only in run_a, 2 only in run_b \(e.g. `test.jsonl:0`\)") as err:
        compare_runs(a, b, BOOT)
    assert "Evaluate both on the same split and records" in err.value.paragraph()
    other = planted_run(tmp_path / "c", [f"test.jsonl:{i}" for i in range(10)], [1.0] * 10, primary="gen/rougeL")
    with pytest.raises(DomainTuneError, match="run_a is decided by gen/token_f1, run_b by gen/rougeL"):
        compare_runs(a, other, BOOT)


# ------------------------------------------------------------------------------------------ learning to stop
def test_every_training_answer_ends_with_the_end_of_turn_token(make_cfg, tokenizer, monkeypatch) -> None:
    from domaintune.data.audit_report import Audit
    from domaintune.data.chat import ChatRenderer
    from domaintune.data.tokenize import tokenize_split
    from domaintune.models.loss import IGNORE

    cfg = make_cfg("data=fact_checking")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all([t for t in ex["labels"] if t != IGNORE][-1] == eot for ex in dm.examples["train"])
    renderer = ChatRenderer(tokenizer, 384)
    monkeypatch.setattr(
        renderer, "stop_token_ids", lambda: [tokenizer.convert_tokens_to_ids("!")]
    )  # a template that "ends" elsewhere
    with pytest.raises(DomainTuneError, match="never learn to stop"):
        tokenize_split("train", dm.records["train"][:2], dm.tasks[""], renderer, "truncate", Audit())


# ------------------------------------------------------------------------------------------ refine's command line
def test_refine_merges_the_original_the_users_repeat_settings_and_the_change() -> None:
    from domaintune.core.refine import merge, preset_keys

    assert {"trainer.max_steps", "trainer.val_check_interval", "trainer.budget"} <= preset_keys("more_steps")
    original = ["data=healthcare", "trainer.budget=15m", "trainer.max_steps=400", "optim.lr=3e-4", "experiment=healthcare_best"]
    extra = ["trainer.budget=null", "trainer.max_steps=70"]
    # a plain override: the original's value of that key goes, the user's repeat settings stay
    assert merge(original, ["optim.lr=1e-3"], extra) == [
        "data=healthcare",
        "experiment=healthcare_best",
        "trainer.budget=null",
        "trainer.max_steps=70",
        "optim.lr=1e-3",
    ]
    # a preset: every key it sets beats the original's and the user's command-line values; both presets apply
    assert merge(original, ["experiment=more_steps"], extra) == [
        "data=healthcare",
        "optim.lr=3e-4",
        "experiment=[healthcare_best,more_steps]",
    ]


def test_budget_plans_the_tuned_evaluation_with_generation_at_its_worst_case(make_cfg) -> None:
    """The tuned model's answers may stop later than the base model's: its evaluation is planned as the base
    evaluation with every generation batch decoding to max_new_tokens (at the measured rate), with a margin."""
    from domaintune.core.pipeline import time_budget
    from domaintune.evaluation.evaluator import EvalResult

    cfg = make_cfg("trainer.budget=15m", "trainer.budget_eval_factor=1.1")
    base = EvalResult({}, seconds=300.0, timing={"generation_s": 200.0, "generation_worst_s": 260.0})
    budget = time_budget(cfg, base)
    assert budget is not None and budget.plan.budget_s == 900
    assert budget.plan.eval_estimate_s == pytest.approx(1.1 * (300 - 200 + 260))
    assert time_budget(make_cfg(), base) is None, "no budget set: no callback"


def test_budget_costs_each_step_ahead_by_its_batchs_tokens() -> None:
    """Length-grouped batches differ in cost: a plan from the mean step overshoots when longer batches come
    later (a real marketing run: 8 s steps first, 11 s last). Known batches ahead are costed by their tokens."""
    budget = TimeBudget(budget_s=600, eval_estimate_s=100, warmup_steps=2, measure_steps=4)
    budget._step_times = [9.0, 7.0, 2.0, 2.0, 2.0, 2.0]
    budget._step_tokens = [1000] * 6  # 2 s per 1000 tokens
    budget._upcoming = lambda step, n: [2000] * n  # every batch ahead twice as large: 4 s
    # 600 - 60 elapsed - 100 evaluation - 8 for the last check = 432 s; 4 s + 8/20 s of checks a step -> 98 steps
    assert budget.steps_for(6, 60.0, 20, 10) == 6 + 98
    assert budget._planned_cost_s == pytest.approx(98 * 4.4)
    budget._upcoming = lambda step, n: [1000 if (step + i) % 2 else 3000 for i in range(n)]  # 6 s, 2 s, 6 s...
    assert budget.steps_for(6, 60.0, 20, 10) == 6 + 98, "alternating 6 s and 2 s steps: 4.4 s a step on average"
    budget._cap = 50
    assert budget.steps_for(6, 60.0, 20, 10) == 50, "max_steps stays the upper bound"
    budget._cap, budget._upcoming = None, None
    assert budget.steps_for(6, 60.0, 20, 10) == 186, "batches ahead unknown: the mean step (the test above)"


def test_budget_looks_ahead_at_the_batches_the_loader_then_yields(make_cfg, tokenizer) -> None:
    dm = build(make_cfg("data.max_samples=30", "data.batch_size=4", "data.packing=false").data, tokenizer=tokenizer)
    dm.prepare()
    loader = dm.train_dataloader()
    ahead = upcoming_batch_tokens(SimpleNamespace(train_dataloader=loader, accumulate_grad_batches=1))
    assert ahead is not None
    seen = []
    for epoch in range(2):  # across an epoch boundary: the next epoch's own order
        loader.batch_sampler.set_epoch(epoch)
        seen += [len(b) * max(len(dm.train_rows()[i]["input_ids"]) for i in b) for b in loader.batch_sampler]
    per_epoch = len(loader.batch_sampler)
    assert ahead(0, 2 * per_epoch) == seen
    assert ahead(per_epoch - 1, 2) == seen[per_epoch - 1 : per_epoch + 1]
    assert len(set(seen)) > 1, "batches of different sizes, or the test proves nothing"
    assert upcoming_batch_tokens(SimpleNamespace(train_dataloader=loader, accumulate_grad_batches=2)) is None


def test_budget_plans_for_a_process_that_slows_as_it_trains() -> None:
    """Seconds per token grew 1.5x since the first measured steps (a real healthcare run's checks: 19.7 -> 25.3 s):
    the steps ahead are costed at the latest rate and the tuned evaluation, run after training, 1.5x its estimate."""
    budget = TimeBudget(budget_s=600, eval_estimate_s=100, warmup_steps=2, measure_steps=4)
    budget._step_times = [9.0, 7.0, *[2.0] * 4, *[3.0] * 8]  # the same 1000-token batches, slower later
    budget._step_tokens = [1000] * 14
    budget._upcoming = lambda step, n: [1000] * n
    assert budget._steps_slower() == pytest.approx(1.5)
    assert budget.eval_estimate_now() == pytest.approx(150.0)
    # 600 - 100 elapsed - 150 evaluation = 350 s at 3 s a step (not the run's mean, 2.67 s) -> 116 more steps
    assert budget.steps_for(14, 100.0, None, 10) == 14 + 116
    budget._step_times = [9.0, 7.0, *[2.0] * 12]  # no slowdown: the estimate stands
    assert budget.eval_estimate_now() == 100.0 and budget.steps_for(14, 100.0, None, 10) == 14 + 200
