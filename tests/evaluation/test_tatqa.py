"""TAT-QA exact match and F1 (data=finance) equal TAT-QA's own evaluation on planted answers.

The expected values were computed with TAT-QA's scorer (github.com/NExTplusplus/TAT-QA, `tatqa_metric.py`
`TaTQAEmAndF1` with `tatqa_utils.py`, scale "" on both sides as our data README scores it), run outside this
repository on each planted prediction (split on "; ") and gold; the same comparison over 22,256 perturbed
answers of the real finance data is in RESULTS.md.
"""

from __future__ import annotations

import pytest

from domaintune.data.formats import SpanAnswer
from domaintune.evaluation import metrics

# (generated answer, gold spans, answer type, TAT-QA exact match, TAT-QA F1), both x100
PLANTED = [
    ("Accrued Expenses and Other Current Liabilities", ["Accrued Expenses and Other Current Liabilities"], "span", 100, 100),
    (
        "the accrued expenses, and other current liabilities.",
        ["Accrued Expenses and Other Current Liabilities"],
        "span",
        100,
        100,
    ),
    ("Accrued payroll", ["Accrued Expenses and Other Current Liabilities"], "span", 0, 25),
    ("$1,234.5", ["1234.50"], "span", 100, 100),
    ("(134)", ["-134"], "span", 100, 100),
    ("12.5%", ["12.5%"], "span", 100, 100),
    ("0.125", ["12.5%"], "span", 100, 100),
    ("2019; 2018", ["2018", "2019"], "multi-span", 100, 100),
    ("2019", ["2018", "2019"], "multi-span", 0, 67),
    ("2019, 2018", ["2018", "2019"], "multi-span", 0, 0),
    ("AMER; EMEA; APAC", ["AMER", "APAC", "EMEA"], "multi-span", 100, 100),
    ("AMER; Europe", ["AMER", "APAC", "EMEA"], "multi-span", 0, 40),
    ("2", ["2"], "count", 100, 100),
    ("2 segments", ["2"], "count", 0, 0),
    ("", ["93.8"], "span", 0, 0),
    ("93.8 million", ["93.8"], "span", 0, 0),
    ("93.8.", ["93.8"], "span", 0, 0),
]


def test_tatqa_scores_equal_tatqas_own_evaluation() -> None:
    preds = [p for p, *_ in PLANTED]
    golds = [SpanAnswer(tuple(g), t, "; ") for _, g, t, *_ in PLANTED]
    refs = [["; ".join(g)] for _, g, *_ in PLANTED]
    found = metrics.score(["tatqa"], preds, refs, ids=[str(i) for i in range(len(PLANTED))], golds=golds)
    assert list(found["tatqa_em"].array()) == [em for *_, em, _ in PLANTED]
    assert list(found["tatqa_f1"].array()) == [f1 for *_, f1 in PLANTED]
    # the reported scores are means over the answers
    assert found["tatqa_f1"].value() == pytest.approx(sum(f1 for *_, f1 in PLANTED) / len(PLANTED))


def test_spans_are_split_on_the_tasks_own_separator() -> None:
    gold = SpanAnswer(("2018", "2019"), "multi-span", " | ")
    found = metrics.score(["tatqa"], ["2019 | 2018"], [["2018 | 2019"]], golds=[gold])
    assert found["tatqa_em"].value() == 100.0


def test_tatqa_refuses_answers_without_spans() -> None:
    with pytest.raises(ValueError, match="context_qa"):
        metrics.score(["tatqa"], ["93.8"], [["93.8"]])


def test_finance_run_is_decided_by_tatqa_f1_scored_on_the_spans(make_cfg, tokenizer) -> None:
    """data=finance end to end through the evaluator (tiny model): its generations are scored with TAT-QA's
    metric against the records' spans (not their joined text), and its primary metric is TAT-QA's F1."""
    from domaintune.evaluation.metrics import primary_metric
    from domaintune.evaluation.tatqa import score_one, split_spans
    from domaintune.models.loading import load_model, model_identity
    from domaintune.models.loss import LossOptions
    from domaintune.utils.hydra import build

    cfg = make_cfg("data=finance", "eval.generation.max_samples=6", "eval.max_samples=6", "eval.generation.max_new_tokens=8")
    assert primary_metric(cfg.data.primary_metric, ["context_qa"]) == "gen/tatqa_f1"
    dm = build(cfg.data, tokenizer=tokenizer)
    model, _ = load_model(cfg.model)
    loss = LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True)
    result = build(cfg.eval, data=dm, loss=loss, model_key=model_identity(cfg.model)).run(model, "base")
    assert {"gen/tatqa_em", "gen/tatqa_f1", "gen/token_f1", "gen/rougeL"} <= set(result.metrics)
    records = {r["_src"]: r for r in dm.records[cfg.eval.split]}
    task = dm.tasks[""]
    expected = [100 * score_one(split_spans(s["output"], "; "), task.gold(records[s["id"]]))[1] for s in result.samples]
    assert list(result.evidence_of("gen/tatqa_f1").array()) == expected
    multi = next(r for r in dm.records["train"] if r["answer_type"] == "multi-span")
    assert task.reference(multi) == "; ".join(multi["answer"]), "training answers join their spans with the separator"


def test_a_metric_for_another_task_type_is_refused_before_any_work() -> None:
    from domaintune.utils.errors import DomainTuneError

    with pytest.raises(DomainTuneError, match="'tatqa', which scores context_qa answers; this task is qa"):
        metrics.resolve(["squad", "tatqa"], "qa")
    with pytest.raises(DomainTuneError, match="'citation', which scores cited_fact_check answers"):
        metrics.resolve(["citation"], "fact_check")
    assert metrics.resolve(["tatqa"], "context_qa") == ["tatqa"]
