"""Fact-checks that cite their evidence (data=fact_checking_cited): citation metrics on planted answers, and the
task's gold citations read back from its own rendered answers."""

from __future__ import annotations

import json

import pytest

from domaintune.data.formats import CitedAnswer
from domaintune.evaluation import metrics
from domaintune.evaluation.citations import parse_citations
from domaintune.utils.errors import DomainTuneError

GOLD = CitedAnswer("false [2, 5]")
# generated answer -> (precision, recall, F1, unparseable), x100
PLANTED = {
    "false [2, 5]": (100.0, 100.0, 100.0, 0.0),  # right
    "false [5, 2]": (100.0, 100.0, 100.0, 0.0),  # order does not matter
    "true [2][5]": (100.0, 100.0, 100.0, 0.0),  # the verdict is scored apart; several brackets count together
    "false [2]": (100.0, 50.0, 100 * 2 * 0.5 / 1.5, 0.0),  # partly right: one of two
    "false [2, 3, 7]": (100 / 3, 50.0, 100 * 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), 0.0),  # partly right, extra citations
    "false [1, 3]": (0.0, 0.0, 0.0, 0.0),  # wrong
    "false, see sentences 2 and 5": (0.0, 0.0, 0.0, 100.0),  # unparseable: no bracketed numbers
    "false [two]": (0.0, 0.0, 0.0, 100.0),
}


def test_citation_metrics_on_planted_answers() -> None:
    preds = list(PLANTED)
    found = metrics.score(["citation"], preds, [["false"]] * len(preds), golds=[GOLD] * len(preds))
    for i, pred in enumerate(preds):
        got = tuple(found[f"citation_{k}"].array()[i] for k in ("precision", "recall", "f1", "unparseable_rate"))
        assert got == pytest.approx(PLANTED[pred]), pred
    assert found["citation_unparseable_rate"].value() == pytest.approx(100 * 2 / len(preds))


def test_parse_citations() -> None:
    assert parse_citations("not_enough_info [ 3 ,4 ]") == {3, 4}
    assert parse_citations("true") is None and parse_citations("true []") is None


def test_a_reference_without_bracketed_citations_is_refused_with_the_fix() -> None:
    with pytest.raises(DomainTuneError, match=r"cites no sentence in brackets.*bracketed numbers"):
        metrics.score(["citation"], ["false [1]"], [["false"]], golds=[CitedAnswer("false")])


def test_cited_task_numbers_sentences_from_one_and_scores_its_own_answer_perfectly(make_cfg, tokenizer) -> None:
    """The shipped config's prompt numbers the abstract's sentences [1]..[n]; its answer cites the evidence
    positions (0-based in the data) by those numbers; the metric reads them back, and the cited sentences are the
    record's evidence."""
    from domaintune.utils.hydra import build

    cfg = make_cfg("data=fact_checking_cited")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    task = dm.tasks[""]
    records = dm.records["train"][:20]
    for rec in records:
        prompt = task.conversation(rec)[-2]["content"]
        cited = parse_citations(task.reference(rec))
        assert cited == {i + 1 for i in rec["citations"]}
        for n in cited:
            assert f"[{n}] {rec['sentences'][n - 1]}" in prompt
    answers = [task.reference(r) for r in records]
    found = metrics.score_records(["citation", "label"], task, answers, records)
    assert found["citation_f1"].value() == 100.0 and found["accuracy"].value() == 100.0


def test_citation_out_of_range_is_counted_not_scored(make_cfg, tokenizer, tmp_path) -> None:
    from domaintune.utils.hydra import build

    row = {"claim": "c", "abstract_sentences": ["a", "b"], "evidence_indices": [0], "label": "true"}
    for split in ("train", "validation", "test"):
        rows = [{**row, "claim": f"claim {split} {i}"} for i in range(6)] + [{**row, "evidence_indices": [2]}]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg("data=fact_checking_cited", f"data.dir={tmp_path}", "data.preprocess.dedup.near=false")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    assert dm.audit.splits["train"][1].removed == {"citation_out_of_range": 1}


def test_cited_run_reports_verdict_and_citation_metrics(make_cfg, tokenizer) -> None:
    """data=fact_checking_cited through the evaluator (tiny model): the verdict by generation and by likelihood,
    the citation metrics, and citation F1 as the primary metric."""
    from domaintune.evaluation.metrics import primary_metric
    from domaintune.models.loading import load_model, model_identity
    from domaintune.models.loss import LossOptions
    from domaintune.utils.hydra import build

    cfg = make_cfg("data=fact_checking_cited", "eval.generation.max_samples=4", "eval.max_samples=4")
    assert primary_metric(cfg.data.primary_metric, ["cited_fact_check"]) == "gen/citation_f1"
    dm = build(cfg.data, tokenizer=tokenizer)
    model, _ = load_model(cfg.model)
    evaluator = build(cfg.eval, data=dm, loss=LossOptions(True, None, True), model_key=model_identity(cfg.model))
    result = evaluator.run(model, "base")
    wanted = {"gen/accuracy", "gen/macro_f1", "choice/accuracy", "choice/macro_f1"}
    wanted |= {f"gen/citation_{k}" for k in ("precision", "recall", "f1", "unparseable_rate")}
    assert wanted <= set(result.metrics)
    assert result.evidence_of("gen/citation_f1").n == 4
