"""Pairs from a run's own failures: only training records are answered, the worst answers by the primary
metric (or every wrong label) become pairs, the audit counts what was skipped and why, the test pairs are
the run's own evaluated answers; then a DPO run continues the run's adapter on them and is judged against it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import open_dict

from domaintune.core import preferences
from domaintune.core.inference import with_run_config
from domaintune.core.preferences import Choice, failures, write_pairs
from domaintune.evaluation.generation import Generation as Generated
from domaintune.evaluation.generation import GenerationStats
from tests.conftest import TINY, compose_train, script


def tiny_run(logs: Path, *overrides: str) -> Path:
    """The folder of a tiny-model training run with `overrides`."""
    script("train.py", *TINY, "logger=none", *overrides, f"paths.log_dir={logs}")
    [out] = list(logs.glob("train/*/*"))
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("sft"), "optim.lr=1e-2", "data=healthcare")


def planted(answers: dict[str, str]):
    """`generate` replaced: each training record's answer by its question (the reference when not planted)."""

    def fake(model, tok, renderer, convs, options, merge_adapter, desc=""):
        outs = [Generated(answers.get(c[-1]["content"], ""), 1) for c in convs]
        return outs, GenerationStats()

    return fake


def test_pairs_come_from_the_worst_training_answers(sft_run: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = compose_train([], tmp_path, config_name="make_preferences")
    with open_dict(cfg):
        cfg.run_dir = str(sft_run)
    cfg = with_run_config(cfg, overrides=[])
    train = [json.loads(x) for x in Path(cfg.paths.data_dir, "healthcare", "train.jsonl").read_text().splitlines()]
    # planted answers from good to useless (k filler words replace the answer's end); every 10th is the
    # reference word for word (nothing to learn); the run's records the fake sees are counted
    words = ["the", "a", "of", "to", "and", "is", "in", "for", "with"]
    answers = {
        r["question"]: r["answer"] if i % 10 == 9 else " ".join(r["answer"].split()[: 12 - i % 10] + words[: i % 10 + 1])
        for i, r in enumerate(train)
    }
    seen: list[str] = []
    fake = planted(answers)
    monkeypatch.setattr(preferences, "generate", lambda *a, **k: (seen.extend(c[-1]["content"] for c in a[3]), fake(*a, **k))[1])
    pairs, audit = failures(cfg, Choice(max_records=None, worst_share=0.5, validation_share=0.25, seed=0, label_balance=True))
    same = sum(answers[q] == next(r["answer"] for r in train if r["question"] == q) for q in seen)
    assert same > 0 and audit["skipped"]["answer equals the reference"] == same
    scored = len(seen) - same
    assert audit["pairs"]["train"] + audit["pairs"]["validation"] == round(scored / 2), "the worse half of the scored answers"
    assert audit["skipped"]["above the worst share"] == scored - round(scored / 2)
    kept = [p for split in ("train", "validation") for p in pairs[split]]
    # planted quality falls with i % 10 (more filler): the kept pairs are the weak end of the scored answers
    k_of = {r["question"]: i % 10 for i, r in enumerate(train)}
    kept_k = [k_of[p["prompt"][-1]["content"]] for p in kept]
    scored_k = [k_of[q] for q in seen if k_of[q] != 9]
    assert sum(kept_k) / len(kept_k) > sum(scored_k) / len(scored_k)
    assert all(p["source"].endswith(tuple(f"train.jsonl:{i}" for i in range(1, 300))) for p in kept), "training records only"
    generated = [json.loads(x) for x in (sft_run / "generations.jsonl").read_text().splitlines()]
    assert [p["source"] for p in pairs["test"]] == [g["id"] for g in generated if g["tuned"].strip() not in ("", g["reference"])]
    write_pairs(tmp_path / "pairs", pairs, audit)
    assert json.loads((tmp_path / "pairs" / "pairs_audit.json").read_text())["pairs"] == audit["pairs"]


def test_dpo_continues_the_run_and_is_judged_against_it(sft_run: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    rows = [{"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": f"No idea {i}.",
             "system": "You answer."} for i in range(12)]  # fmt: skip
    write_pairs(pairs, {"train": rows[:8], "validation": rows[8:10], "test": rows[10:]}, {})
    script("train.py", *TINY, "objective=dpo", "data=preferences", f"data.dir={pairs}", f"adapter.init_from={sft_run}",
           "logger=none", f"paths.log_dir={tmp_path}")  # fmt: skip
    [run] = list(tmp_path.glob("train/*/*"))
    report = (run / "report.md").read_text()
    assert report.startswith("# preferences / lora: start vs tuned")
    assert f"- before: `the model the run started from (adapter.init_from={sft_run})`" in report
    assert "- objective: `dpo (beta 0.1, loss_type sigmoid)`" in report
    # the "before" column is the SFT model's, not the base model's: a run from the base differs there
    script("train.py", *TINY, "objective=dpo", "data=preferences", f"data.dir={pairs}", "logger=none",
           f"paths.log_dir={tmp_path / 'from_base'}")  # fmt: skip
    [plain] = list((tmp_path / "from_base").glob("train/*/*"))
    start = json.loads((run / "metrics.json").read_text())["base"]
    base = json.loads((plain / "metrics.json").read_text())["base"]
    assert start["loss"] != base["loss"] and start["pref/margin"] != base["pref/margin"]


def test_balanced_rejections_reject_each_label_as_often_as_it_is_chosen() -> None:
    labels = ["true", "false", "not_enough_info"]
    golds = ["true"] * 4 + ["false"] * 3 + ["not_enough_info"] * 5
    answers = ["false"] * 12  # a skewed model: its own wrong labels are all 'false'
    rejected = preferences.balanced_rejections(golds, answers, labels)
    assert None not in rejected and all(r != g for r, g in zip(rejected, golds, strict=True))
    assert {lab: rejected.count(lab) for lab in labels} == {lab: golds.count(lab) for lab in labels}
    # the model's own wrong answer is used while its quota lasts (3 'false' golds: 3 of its 9 wrong 'false')
    assert sum(r == a != g for r, a, g in zip(rejected, answers, golds, strict=True)) == 3
    # no wrong label with quota left: the record gets none (counted by the audit), never its own gold label
    assert preferences.balanced_rejections(["true", "true"], ["true", "true"], labels) == [None, None]


@pytest.fixture(scope="module")
def label_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 90 records: the shipped samples' first 24 (TINY's) hold two of the three labels
    return tiny_run(tmp_path_factory.mktemp("fc"), "data.max_samples=90", "data=fact_checking")


@pytest.mark.parametrize("balance", [True, False])
def test_label_pairs_from_a_skewed_model(label_run: Path, tmp_path: Path, monkeypatch, balance: bool) -> None:
    cfg = compose_train([], tmp_path, config_name="make_preferences")
    with open_dict(cfg):
        cfg.run_dir = str(label_run)
    cfg = with_run_config(cfg, overrides=[])
    seen: list[str] = []

    def always_true(model, tok, renderer, convs, options, merge_adapter, desc=""):  # a skewed model
        seen.extend(c[-1]["content"] for c in convs)
        return [Generated("true", 1) for _ in convs], GenerationStats()

    monkeypatch.setattr(preferences, "generate", always_true)
    pairs, audit = failures(cfg, Choice(max_records=None, worst_share=0.5, validation_share=0.25, seed=0, label_balance=balance))
    kept = [p for split in ("train", "validation") for p in pairs[split]]
    chosen, rejected = Counter(p["chosen"] for p in kept), Counter(p["rejected"] for p in kept)
    assert len(seen) == audit["training records answered"] > 0
    assert all(p["rejected"] != p["chosen"] for p in kept)
    if balance:
        assert len(kept) == len(seen), "every answered record is a pair"
        assert set(chosen) == {"true", "false", "not_enough_info"} and rejected == chosen, "each label as often both ways"
        assert audit["rejected = the model's own answer"] == chosen["true"], "its wrong 'true' fill all of 'true''s quota"
    else:
        assert set(rejected) == {"true"} and "true" not in chosen, "only its wrong answers, all 'true'"
        assert len(kept) + audit["skipped"]["right label"] == len(seen)
