# ruff: noqa: E501  (a table of cases reads better unwrapped)
"""The bad-input corpus: each case is a file or setting a user could get wrong, and each must end in
DomainTune's one-paragraph error naming the problem and the fix (never a traceback, never silence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domaintune.checks import check_config
from domaintune.data.datamodule import DomainDataModule
from domaintune.utils.errors import DomainTuneError


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


QA = lines([{"question": f"What is {i}?", "answer": f"It is {i}."} for i in range(6)])
VAL = lines([{"question": f"Where is town {i}?", "answer": f"Far away {i}."} for i in range(6)])
TEST = lines([{"question": f"Who wrote book {i}?", "answer": f"Author {i}."} for i in range(6)])
SPLITS = {"validation.jsonl": VAL, "test.jsonl": TEST}
FACT = lines([{"claim": f"Claim {i}", "evidence": f"Evidence {i}", "label": "maybe"} for i in range(4)])
FACT_OVERRIDES = ("data=fact_checking",)  # its labels: true, false, not_enough_info

# name, files in the data folder, overrides, (problem, fix) the message must contain
DATA_CASES = [
    ("empty file", {"train.jsonl": "", **SPLITS}, (), ("holds no records", "Fill it")),
    ("not UTF-8", {"train.jsonl": QA.encode() + b'{"question": "caf\xe9?", "answer": "x"}\n', **SPLITS}, (), ("not valid UTF-8", "iconv")),
    ("duplicate JSON keys", {"train.jsonl": QA + '{"question": "a?", "question": "b?", "answer": "c"}\n', **SPLITS}, (),
     ("appears twice", "Keep one value per key")),
    ("malformed line", {"train.jsonl": QA + "not json\n", **SPLITS}, (), ("malformed JSON", "data.on_error=skip")),
    ("line not an object", {"train.jsonl": QA + "[1, 2]\n", **SPLITS}, (), ("must be a JSON object", "one {")),
    ("malformed JSON array file", {"train.json": '[{"question": "a", "answer": "b"},', "validation.json": "[]", "test.json": "[]"}, (),
     ("malformed JSON", "Fix the file")),
    ("malformed CSV", {"train.csv": 'question,answer\n"unterminated,x\n', **SPLITS}, (), ("Could not read CSV file", "valid and UTF-8")),
    ("wrong field type", {"train.jsonl": QA + '{"question": ["a"], "answer": "b"}\n', **SPLITS}, (),
     ("should be text, got list", "data.task.fields")),
    ("missing column", {"train.jsonl": lines([{"prompt": "a", "answer": "b"}] * 3), **SPLITS}, (), ("has no column for", "data.task.fields")),
    ("a split left empty", {"train.jsonl": QA}, (), ("split has no records", "give more records")),
    ("undefined template variable", {"train.jsonl": QA, **SPLITS}, ("data.task.prompt='{{ nope }}'",),
     ("uses a variable the record does not have", "task's field names")),
    ("template reaching Python objects", {"train.jsonl": QA, **SPLITS}, ("data.task.prompt='{{ question.__class__ }}'",),
     ("may not do", "Templates may only format")),
    ("bad data.on_error", {"train.jsonl": QA, **SPLITS}, ("data.on_error=ignore",), ("is not valid", "Use raise or skip")),
    ("label outside the label set", {"train.jsonl": FACT, "validation.jsonl": FACT, "test.jsonl": FACT}, FACT_OVERRIDES,
     ("not one of", "")),
    ("bad too_long", {"train.jsonl": QA, **SPLITS}, ("data.preprocess.too_long=cut",), ("too_long", "truncate or drop")),
    ("bad packing value", {"train.jsonl": QA, **SPLITS}, ("data.packing=maybe",), ("packing", "auto")),
    ("unknown task type", {"train.jsonl": QA, **SPLITS}, ("data.task.type=poetry",), ("poetry", "")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "files", "overrides", "expected"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(make_cfg, tokenizer, tmp_path: Path, name: str, files: dict, overrides: tuple, expected: tuple) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for fn, content in files.items():
        (folder / fn).write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = make_cfg("data=custom", f"data.dir={folder}", "data.cache=false", "data.max_samples=null", *overrides)
    with pytest.raises(DomainTuneError) as err:
        DomainDataModule(cfg.data, tokenizer).prepare()
    message = err.value.paragraph()
    for part in expected:
        assert part in message, f"{name}: {message}"
    assert not list(tmp_path.rglob("*.tmp")), "nothing half-written"


CONFIG_CASES = [
    ("eval.weights", ("eval.weights=middle",), "eval.weights=best or eval.weights=last"),
    ("bootstrap confidence", ("eval.bootstrap.confidence=95",), "is not a probability"),
    ("bootstrap resamples", ("eval.bootstrap.resamples=10",), "eval.bootstrap.resamples=1000"),
    ("eval split twice", ("eval.split=[test,test]",), "each once"),
    ("selection mode", ("eval.selection.mode=lowest",), "Use min or max"),
    ("fp16 on CPU", ("trainer.precision=16-mixed",), "trainer.precision=auto"),
    ("GPU without GPU", ("trainer=gpu",), "trainer=default"),
    ("FSDP on CPU", ("trainer=fsdp", "trainer.accelerator=cpu"), "trainer=ddp"),
    ("packing with prompt tuning", ("adapter=prompt_tuning", "data.packing=true"), "packing"),
]


@pytest.mark.parametrize(("name", "overrides", "fix"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_refused_before_anything_loads(make_cfg, name: str, overrides: tuple, fix: str) -> None:
    from domaintune.checks import Hardware

    with pytest.raises(DomainTuneError) as err:
        check_config(make_cfg(*overrides), Hardware(0, False, False))
    assert fix in err.value.paragraph(), f"{name}: {err.value.paragraph()}"


def test_a_byte_order_mark_and_a_huge_line_are_handled_not_fatal(make_cfg, tokenizer, tmp_path: Path) -> None:
    """A BOM (Windows editors) is dropped; a 10 MB record is truncated to max_length and counted in the audit."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\ufeff" + QA + json.dumps({"question": "q " * 5_000_000, "answer": "a"}) + "\n")
    (folder / "validation.jsonl").write_text(VAL)
    (folder / "test.jsonl").write_text(TEST)
    dm = DomainDataModule(
        make_cfg("data=custom", f"data.dir={folder}", "data.cache=false", "data.max_samples=null").data, tokenizer
    )
    dm.prepare()
    steps = {s.step: s for s in dm.audit.splits["train"]}
    assert steps["read"].records_out == 7 and dm.records["train"][0]["question"] == "What is 0?"
    assert steps["tokenize"].changed + sum(steps["tokenize"].removed.values()) >= 1, (
        "the huge record is truncated or dropped, and counted"
    )
