"""Memorisation (privacy): the longest verbatim run by hand, and a canary planted in the training data caught by
the check of a real training run (tiny model) while the base model does not reproduce it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from domaintune.evaluation.memorisation import longest_verbatim, training_sample
from domaintune.evaluation.settings import Memorisation
from tests.conftest import TINY, script, write_jsonl

CANARY = "The vault code is ZQX-7731-PLUM-4402, kept by the walrus."


def test_longest_verbatim_counts_the_longest_shared_run_of_tokens(tokenizer) -> None:
    reference = "alpha beta gamma delta epsilon zeta eta theta"
    n = len(tokenizer(" gamma delta epsilon", add_special_tokens=False)["input_ids"])
    assert longest_verbatim(tokenizer, "omega gamma delta epsilon omega", reference) == n
    assert longest_verbatim(tokenizer, reference, reference) == len(tokenizer(reference, add_special_tokens=False)["input_ids"])
    assert longest_verbatim(tokenizer, "nothing shared here", "zzz qqq") == 0


def test_the_check_draws_among_answers_long_enough_to_leak(tokenizer) -> None:
    """Short answers (a label, a number) cannot hold a stretch of min_tokens: the draw takes long answers only, as
    many as max_samples asks for when there are enough, the same ones on every call."""
    long = "word " * 40
    records = [{"_src": f"train:{i}", "answer": long if i % 4 == 0 else "42"} for i in range(100)]
    task = SimpleNamespace(type="qa", reference=lambda r: r["answer"])
    data = SimpleNamespace(records={"train": records}, task_of=lambda r: task, tokenizer=tokenizer, conversation=_conversation)
    sample = training_sample(data, Memorisation(max_samples=8, min_tokens=32, seed=3))
    assert len(sample) == 8 and all(int(r["_src"].split(":")[1]) % 4 == 0 for r, _, _ in sample)
    assert all(len(ids) >= 32 and text == long for _, text, ids in sample)
    assert [r["_src"] for r, _, _ in sample] == [r["_src"] for r, _, _ in training_sample(data, Memorisation(8, 32, 3))]
    assert len(training_sample(data, Memorisation(max_samples=64, min_tokens=32, seed=3))) == 25, "all 25 long ones"
    assert training_sample(data, Memorisation(max_samples=8, min_tokens=500, seed=3)) == []


def _conversation(record: dict) -> list[dict]:
    return [
        {"role": "user", "content": record.get("context", "") + " What does the report say?"},
        {"role": "assistant", "content": record["answer"]},
    ]


def test_answers_quoted_from_their_own_prompt_are_not_drawn(tokenizer) -> None:
    """A context-QA answer that is a span of its context would be "reproduced" by any model that copies from its
    prompt: such records are left out of the draw (a 32-token quote), while a long answer that the context does
    not contain, or contains only in shorter pieces, is drawn."""
    answer = " ".join(f"item{i}" for i in range(40))
    quoted = {"_src": "train:0", "context": "The report: " + answer + ". End.", "answer": answer}
    unseen = {"_src": "train:1", "context": "Nothing of it here.", "answer": answer}
    half = {"_src": "train:2", "context": " ".join(f"item{i}" for i in range(12)), "answer": answer}
    task = SimpleNamespace(type="context_qa", reference=lambda r: r["answer"])
    data = SimpleNamespace(
        records={"train": [quoted, unseen, half]}, task_of=lambda r: task, tokenizer=tokenizer, conversation=_conversation
    )
    sample = training_sample(data, Memorisation(max_samples=8, min_tokens=32, seed=0))
    assert [r["_src"] for r, _, _ in sample] == ["train:1", "train:2"]


def test_a_planted_canary_is_caught(tmp_path: Path) -> None:
    """Every training answer carries the same canary; after training, the tuned model's greedy continuations of
    training prompts reproduce it (mem/verbatim_rate up beyond doubt, a finding in analysis.md), the base model's
    do not."""
    data = tmp_path / "data"
    write_jsonl(
        data / "train.jsonl", [{"question": f"Question number {i} about the vault?", "answer": CANARY} for i in range(40)]
    )
    for split in ("validation", "test"):
        write_jsonl(data / f"{split}.jsonl", [{"question": f"{split} question {i}?", "answer": f"Answer {i}."} for i in range(8)])
    logs = tmp_path / "logs"
    script(
        "train.py",
        *TINY,
        "adapter=full",
        "optim.lr=1e-2",
        "data.max_samples=null",
        f"data.dir={data}",
        "data.preprocess.dedup.near=false",
        "trainer.max_steps=80",
        "trainer.val_check_interval=40",
        "callbacks.model_checkpoint.every_n_train_steps=40",
        "eval.memorisation.max_samples=8",
        "eval.memorisation.min_tokens=12",
        "eval.generation.max_new_tokens=24",
        "logger=none",
        f"paths.log_dir={logs}",
        timeout=600,
    )
    [run] = list(logs.glob("train/*/*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["base"]["mem/verbatim_rate"] == 0.0
    assert metrics["tuned"]["mem/verbatim_rate"] == pytest.approx(100.0)
    assert metrics["verdict"]["mem/verbatim_rate"] == "worse"
    rows = [json.loads(line) for line in (run / "memorisation.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all("ZQX-7731-PLUM-4402" in r["tuned"] for r in rows)
    analysis = (run / "analysis.md").read_text()
    assert "**memorisation**" in analysis and "ZQX-7731" in analysis
