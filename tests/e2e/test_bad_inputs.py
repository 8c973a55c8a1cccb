# ruff: noqa: E501  (a table of cases reads better unwrapped)
"""The bad-input corpus: each case is a file or setting a user could get wrong, and each must end in
DomainTune's one-paragraph error naming the problem and the fix (never a traceback, never silence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domaintune.core.checks import check_config
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import script


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
     ("not one of", "Add the label to data.task.labels")),
    ("bad too_long", {"train.jsonl": QA, **SPLITS}, ("data.preprocess.too_long=cut",), ("too_long", "truncate or drop")),
    ("bad packing value", {"train.jsonl": QA, **SPLITS}, ("data.packing=maybe",), ("packing", "auto")),
    ("unknown task type", {"train.jsonl": QA, **SPLITS}, ("data.task.type=poetry",), ("poetry", "Set data.task.type to one of them")),
    ("unquoted boolean labels", {"train.jsonl": FACT, **SPLITS}, ("data=fact_checking", "data.task.labels=[true,false]"),
     ("holds True, which is not text", 'data.task.labels=["true","false","not_enough_info"]')),
    ("span separator on a task without spans", {"train.jsonl": QA, **SPLITS}, ("data.task.span_separator=';'",),
     ("only context_qa writes several answer spans", "null for every other task type")),
    ("context_qa without a span separator", {"train.jsonl": QA, **SPLITS}, ("data=finance", "data.task.span_separator=null"),
     ("only context_qa writes several answer spans", "Set data.task.span_separator")),
    ("blank span separator", {"train.jsonl": QA, **SPLITS}, ("data=finance", "data.task.span_separator=' '"),
     ("a blank separator cannot be told from the spaces", "Use visible text")),
    ("data folder missing", {}, ("data.dir={tmp}/nowhere",), ("does not exist", "Set data.dir")),
    ("misspelt field mapping", {"train.jsonl": QA, **SPLITS}, ("data.task.fields.answer=answr",),
     ("no column for answer -> 'answr'", "columns are: 'answer', 'question'")),
    ("malformed line names file and line", {"train.jsonl": QA + '{"question": "broken", \n', **SPLITS}, (),
     ("train.jsonl:7: malformed JSON", "data.on_error=skip")),
    ("template reaching subclasses", {"train.jsonl": QA, **SPLITS}, ("data.task.prompt='{{ question.__class__.__mro__[1].__subclasses__() }}'",),
     ("data.task.prompt tries something a data template may not do", "Templates may only format")),
    ("template reaching os", {"train.jsonl": QA, **SPLITS}, ("data.task.prompt=\"{{ lipsum.__globals__['os'].listdir('/') }}\"",),
     ("data.task.prompt tries something a data template may not do", "Templates may only format")),
    ("template reaching a constructor", {"train.jsonl": QA, **SPLITS}, ("data.task.prompt='{{ cycler.__init__ }}'",),
     ("data.task.prompt tries something a data template may not do", "Templates may only format")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "files", "overrides", "expected"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(make_cfg, tokenizer, tmp_path: Path, name: str, files: dict, overrides: tuple, expected: tuple) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for fn, content in files.items():
        (folder / fn).write_bytes(content if isinstance(content, bytes) else content.encode())
    overrides = tuple(o.replace("{tmp}", str(tmp_path)) for o in overrides)
    cfg = make_cfg("data=custom", f"data.dir={folder}", "data.cache=false", "data.max_samples=null", *overrides)
    with pytest.raises(DomainTuneError) as err:
        build(cfg.data, tokenizer=tokenizer).prepare()
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
    ("bootstrap key nothing reads", ("+eval.bootstrap.resample=5",), "eval.bootstrap takes 'confidence', 'resamples'"),
    ("generation key nothing reads", ("+eval.generation.max_new_token=5",), "Remove them or fix their spelling"),
    ("max_new_tokens zero", ("eval.generation.max_new_tokens=0",), "eval.generation.max_new_tokens=auto"),
    ("sampling without temperature", ("eval.generation.do_sample=true", "eval.generation.temperature=0"), "do_sample=false"),
    ("pii region", ("data.preprocess.pii.region=XX",), "two-letter country code"),
    ("dedup threshold", ("data.preprocess.dedup.threshold=2",), "Use e.g. 0.9"),
    ("fp16 on CPU", ("trainer.precision=16-mixed",), "trainer.precision=auto"),
    ("GPU without GPU", ("trainer=gpu",), "trainer=default"),
    ("FSDP on CPU", ("trainer=fsdp", "trainer.accelerator=cpu"), "trainer=ddp"),
    ("packing with prompt tuning", ("adapter=prompt_tuning", "data.packing=true"), "packing"),
]


@pytest.mark.parametrize(("name", "overrides", "fix"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_refused_before_anything_loads(make_cfg, name: str, overrides: tuple, fix: str) -> None:
    from domaintune.core.checks import Hardware

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
    dm = build(
        make_cfg("data=custom", f"data.dir={folder}", "data.cache=false", "data.max_samples=null").data, tokenizer=tokenizer
    )
    dm.prepare()
    steps = {s.step: s for s in dm.audit.splits["train"]}
    assert steps["read"].records_out == 7 and dm.records["train"][0]["question"] == "What is 0?"
    assert steps["tokenize"].changed + sum(steps["tokenize"].removed.values()) >= 1, (
        "the huge record is truncated or dropped, and counted"
    )


def corrupt_model_dir(tmp_path: Path) -> Path:
    import shutil

    from domaintune.models.loading import materialize

    target = tmp_path / "broken-model"
    shutil.copytree(materialize(compose_tiny(tmp_path).model), target)
    (target / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    return target


def compose_tiny(tmp_path: Path, *extra: str):
    from tests.conftest import TINY, compose_train

    return compose_train([*TINY, *extra], tmp_path / "out")


MODEL_CASES = [
    ("model path that does not exist", lambda t: ("model=hf", "model.path=/no/such/model"), "Could not load the model", "model=hf model.path=<dir>"),
    ("hub id not cached, offline", lambda t: ("model=hf", "model.path=someorg/not-cached-model"), "Hub could not provide it", "hf download"),
    ("corrupted safetensors", lambda t: ("model=hf", f"model.path={corrupt_model_dir(t)}"), "SafetensorError", "as written by `save_pretrained`"),
    ("unknown adapter parameter", lambda t: ("+adapter.peft.rr=4",), "unexpected keyword argument 'rr'", "Remove or rename the option"),
    ("train_top_n out of range", lambda t: ("adapter=freeze", "adapter.train_top_n=50"), "the model has 2 blocks", "Choose a value from 1 to 2"),
    ("train_top_n zero", lambda t: ("adapter=freeze", "adapter.train_top_n=0"), "train_top_n=0", "Choose a value"),
    ("missing checkpoint", lambda t: ("ckpt_path=/no/such/last.ckpt",), "does not exist", "ckpt_path=last"),
    ("unknown adapter kind", lambda t: ("adapter.kind=magic",), "Unknown adapter kind 'magic'", "adapter=lora, ia3, full, freeze"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "overrides", "problem", "fix"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_adapter_or_checkpoint(tmp_path: Path, name: str, overrides, problem: str, fix: str) -> None:
    from domaintune.core.pipeline import fit_and_evaluate

    cfg = compose_tiny(tmp_path, "logger=none", "trainer=debug", *overrides(tmp_path))
    with pytest.raises(DomainTuneError) as err:
        fit_and_evaluate(cfg)
    message = err.value.paragraph()
    assert problem in message and fix in message, f"{name}: {message}"


SCRIPT_CASES = [
    ("train: a key the config lacks", ("train.py", "optim.lrr=1"), "Could not override 'optim.lrr'", "Key 'lrr' is not in struct"),
    ("train: an unknown group option", ("train.py", "adapter=lorra"), "Could not find 'adapter/lorra'", "lora"),
    ("train: a DomainTune error exits 1 without a traceback", ("train.py", "model=tiny", "data.dir={tmp}/nowhere"), "does not exist", "Set data.dir"),
    ("evaluate: run_dir that is not a run", ("scripts/evaluate.py", "run_dir={tmp}"), "is not a training run folder", "Pass the folder a training run printed"),
    ("evaluate: a misspelt eval key", ("scripts/evaluate.py", "model=tiny", "+eval.splits=[test]"), "eval has keys that nothing reads: 'splits'", "fix their spelling"),
    ("analyze: folder without evidence", ("scripts/analyze.py", "run_dir={tmp}"), "has no per_example.jsonl", "Pass a folder written by train.py"),
    ("generate: empty input", ("scripts/generate.py", "model=tiny", "input={tmp}/empty.jsonl", "output={tmp}/out.jsonl"), "empty", "prompt"),
    ("generate: input missing", ("scripts/generate.py", "model=tiny", "input={tmp}/none.jsonl", "output={tmp}/out.jsonl"), "does not exist", "Pass input=<a JSONL file of prompts>"),
    ("merge: no adapter given", ("scripts/merge.py", "model=tiny"), "Export needs a tuned model", "run_dir=<training run folder>"),
    ("export: unknown format", ("scripts/export.py", "model=tiny", "format=onnx"), "format", "Use format=hf, gguf or ollama"),
    ("sweep report: folder missing", ("scripts/sweep_report.py", "{tmp}/no-sweep"), "does not exist", "outputs/multirun"),
    ("benchmark: commits without the train part", ("scripts/benchmark.py", "model=tiny", "bench.parts=[hardware]", "bench.commits=[HEAD]"), "bench.commits is set but has no effect", "Add train to bench.parts"),
    ("benchmark: plan_pick without a plan", ("scripts/benchmark.py", "model=tiny", "bench.parts=[train]", "bench.plan=null", "bench.plan_pick=longest"), "bench.plan_pick is set but has no effect", "keep bench.plan=domaintune"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "problem", "fix"), SCRIPT_CASES, ids=[c[0] for c in SCRIPT_CASES])
def test_bad_script_arguments(tmp_path: Path, name: str, args: tuple, problem: str, fix: str) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    cmd = [a.format(tmp=tmp_path) for a in args]
    if args[0] != "scripts/sweep_report.py":
        cmd.append(f"paths.log_dir={tmp_path}/logs")
    out = script(*cmd, ok=False, timeout=300)
    text = " ".join((out.stdout + out.stderr).split())
    # a DomainTune error exits 1; Hydra's own config errors exit 1 too (its message is the paragraph)
    assert out.returncode == 1 and "Traceback" not in text, f"{name}: {text[-1500:]}"
    assert problem in text and fix in text, f"{name}: {text[-1500:]}"
