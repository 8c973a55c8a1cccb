"""Bad input stops with one clear paragraph that names the problem and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from domaintune.models.loading import load_model
from domaintune.pipeline import fit_and_evaluate
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import ROOT, qa_rows, write_jsonl


def test_unknown_config_option_is_reported_by_the_cli() -> None:
    out = subprocess.run([sys.executable, "train.py", "optim.lrr=1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Could not override 'optim.lrr'" in out.stderr and "Key 'lrr' is not in struct" in out.stderr


def test_unknown_group_option_lists_the_available_ones() -> None:
    out = subprocess.run([sys.executable, "train.py", "adapter=lorra"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Could not find 'adapter/lorra'" in out.stderr and "lora" in out.stderr


def test_friendly_error_exits_1_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "model=tiny", f"data.dir={tmp_path}/nowhere", f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    output = out.stdout + out.stderr
    assert "does not exist" in output and "Traceback" not in output


def test_missing_data_dir(tokenizer, make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(f"data.dir={tmp_path}/nowhere")
    with pytest.raises(DomainTuneError, match=r"data directory .* does not exist.*Set data.dir"):
        build(cfg.data, tokenizer=tokenizer).prepare()


def test_misspelt_field_mapping_lists_the_columns(tokenizer, make_cfg, tmp_path: Path) -> None:
    for split in ("train", "validation"):
        write_jsonl(tmp_path / "d" / f"{split}.jsonl", qa_rows(5))
    cfg = make_cfg(f"data.dir={tmp_path}/d", "data.task.fields.answer=answr")
    with pytest.raises(DomainTuneError, match=r"no column for answer -> 'answr'.*columns are: 'answer', 'question'"):
        build(cfg.data, tokenizer=tokenizer).prepare()


def test_record_without_field_is_counted_not_silently_dropped(tokenizer, make_cfg, tmp_path: Path) -> None:
    rows = qa_rows(6)
    del rows[2]["answer"]
    rows[4]["answer"] = ""
    write_jsonl(tmp_path / "d" / "train.jsonl", rows)
    write_jsonl(tmp_path / "d" / "validation.jsonl", qa_rows(3))
    cfg = make_cfg(f"data.dir={tmp_path}/d", "data.max_samples=null")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    [fields] = [s for s in dm.audit.splits["train"] if s.step == "fields"]
    assert fields.removed == {"missing_answer": 2}
    assert len(dm.examples["train"]) == 4


def test_malformed_json_line_names_file_and_line(tokenizer, make_cfg, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d" / "train.jsonl", qa_rows(3))
    path.write_text(path.read_text() + '{"question": "broken", \n')
    write_jsonl(tmp_path / "d" / "validation.jsonl", qa_rows(2))
    cfg = make_cfg(f"data.dir={tmp_path}/d")
    with pytest.raises(DomainTuneError, match=r"train.jsonl:4: malformed JSON.*starts with.*broken.*on_error=skip"):
        build(cfg.data, tokenizer=tokenizer).prepare()


def test_model_unreachable_offline_suggests_the_default(make_cfg) -> None:
    cfg = make_cfg("model=hf", "model.path=some-org/not-a-real-model")
    with pytest.raises(DomainTuneError, match=r"some-org/not-a-real-model.*(?s:.*)model=smollm2.*model.path=<dir>"):
        load_model(cfg.model)


def test_unknown_adapter_kind(make_cfg) -> None:
    cfg = make_cfg("adapter.kind=magic")
    with pytest.raises(DomainTuneError, match=r"Unknown adapter kind 'magic'.*'freeze', 'full', 'peft'"):
        fit_and_evaluate(cfg)


def test_secrets_never_reach_the_run_folder(tmp_path: Path) -> None:
    """Tokens in the environment or on the command line appear in no file of the run: Hydra's saved config
    and overrides, the logs, the reports, the CSV hyperparameters and the W&B (offline) config."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, TINY

    env = {**os.environ, "HF_TOKEN": "hf_ENVSECRET0123456789", "MY_SERVICE_KEY": "svc-ENVSECRET-abcdef"}
    cmd = [sys.executable, "train.py", *TINY, "logger=wandb", "+hf_token=hf_CLISECRET9876543210"]
    cmd += [f"paths.log_dir={tmp_path}", "eval.generation.max_samples=2"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [run] = list(tmp_path.glob("train/*/*"))
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files) and any(p.suffix == ".wandb" for p in files)
    for p in files:
        blob = p.read_bytes()
        for secret in (b"ENVSECRET", b"CLISECRET"):
            assert secret not in blob, f"{secret.decode()} written to {p.relative_to(run)}"
    assert b"***" in (run / ".hydra" / "overrides.yaml").read_bytes()


@pytest.mark.parametrize(
    "template",
    [
        "{{ question.__class__.__mro__[1].__subclasses__() }}",
        "{{ lipsum.__globals__['os'].listdir('/') }}",
        "{{ cycler.__init__ }}",
    ],
)
def test_data_templates_cannot_reach_python_objects_or_files(make_cfg, tokenizer, template: str) -> None:

    cfg = make_cfg(f"data.task.prompt={template!r}", "data.cache=false")
    with pytest.raises(DomainTuneError, match=r"data\.task\.prompt tries something a data template may not do"):
        build(cfg.data, tokenizer=tokenizer).prepare()


def test_cli_prints_composed_config() -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "data=marketing", "adapter=ia3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.data.name == "marketing" and cfg.adapter.name == "ia3"
    assert cfg.data.task.type == "generation"
