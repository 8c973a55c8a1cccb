"""evaluate / chat / generate / merge on a finished tiny run, end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from domaintune.core.inference import with_run_config
from domaintune.models.loading import load_adapted, load_model
from tests.conftest import expected_verdict, script


@pytest.fixture
def run_dir(tiny_run: Path) -> Path:
    return tiny_run


def test_evaluate_reuses_the_run_config(run_dir: Path, tmp_path: Path) -> None:
    script("scripts/evaluate.py", f"run_dir={run_dir}", "eval=fast", "eval.split=test", f"paths.log_dir={tmp_path}")
    [report] = list(tmp_path.glob("evaluate/*/*/metrics.json"))
    metrics = json.loads(report.read_text())
    assert metrics["data"] == "education" and metrics["split"] == "test", "data comes from the run, split from the CLI"
    assert {"loss", "gen/rougeL"} <= set(metrics["tuned"]) and metrics["base"]["loss"] != metrics["tuned"]["loss"]
    assert (report.parent / "report.md").read_text().count("| gen/rouge1 |") == 1


def test_run_config_overrides(run_dir: Path, make_cfg) -> None:
    cfg = make_cfg("data=healthcare")
    with __import__("omegaconf").open_dict(cfg):
        cfg.run_dir = str(run_dir)
    merged = with_run_config(cfg.copy(), overrides=["data.max_length=99"])
    assert merged.data.name == "education" and merged.data.max_length == 99
    assert with_run_config(cfg.copy(), overrides=["data=healthcare"]).data.name == "healthcare"


def test_chat_streams_and_handles_commands(run_dir: Path, tmp_path: Path) -> None:
    out = script(
        "scripts/chat.py",
        f"run_dir={run_dir}",
        "generation.max_new_tokens=5",
        "generation.do_sample=false",
        f"paths.log_dir={tmp_path}",
        stdin="Summarise this.\n/reset\nAgain?\n/quit\n",
    )
    assert "Chatting with tiny-llama + " in out.stdout and "(new conversation)" in out.stdout
    assert out.stdout.count("bot>") == 2


def test_generate_writes_one_output_per_line(run_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"prompt": "hi"}, {"document": "We study cats."}, {"messages": [{"role": "user", "content": "yo"}]}]
        )
        + "\n"
    )
    dst = tmp_path / "out.jsonl"
    script(
        "scripts/generate.py",
        f"run_dir={run_dir}",
        f"input={src}",
        f"output={dst}",
        "generation.max_new_tokens=4",
        f"paths.log_dir={tmp_path}",
    )
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(rows) == 3 and all("output" in r for r in rows) and rows[1]["document"] == "We study cats."
    inputs = [json.loads(line) for line in src.read_text().splitlines()]
    assert [set(r) - {"output"} for r in rows] == [set(i) for i in inputs], "no internal keys leak into the output"

    src.write_text('{"prompt": "hi"}\n{"prompt": "cut off\n')
    args = (f"run_dir={run_dir}", f"input={src}", f"output={dst}", f"paths.log_dir={tmp_path}")
    out = script("scripts/generate.py", *args, ok=False)
    assert out.returncode == 1 and re.search(r"in\.jsonl:2: malformed JSON.*starts with", out.stdout + out.stderr)


def test_merge_gives_the_same_logits_as_the_adapter(run_dir: Path, tmp_path: Path, make_cfg) -> None:
    script("scripts/merge.py", f"run_dir={run_dir}", f"output={tmp_path / 'merged'}", f"paths.log_dir={tmp_path}")
    cfg = make_cfg()
    base, tok = load_model(cfg.model)
    adapted = load_adapted(base, run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ids = tok("Summarise in one sentence: we study cats.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-4, rtol=0)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()


def test_run_dir_without_adapter(tmp_path: Path) -> None:
    fake = tmp_path / "run"
    (fake / ".hydra").mkdir(parents=True)
    (fake / ".hydra" / "config.yaml").write_text("{}\n")
    out = script("scripts/evaluate.py", f"run_dir={fake}", "model=tiny", f"paths.log_dir={tmp_path}", ok=False)
    assert out.returncode == 1 and "There is no adapter at" in out.stdout + out.stderr
    out = script("scripts/merge.py", f"run_dir={fake}", "model=tiny", f"paths.log_dir={tmp_path}", ok=False)
    assert out.returncode == 1 and "There is no adapter at" in out.stdout + out.stderr


def test_every_run_writes_its_evidence_and_analyze_rewrites_the_refinement_report(run_dir: Path, tmp_path: Path) -> None:
    """A run leaves per-example scores, all generations and analysis.md; scripts/analyze.py rewrites the
    report from those files alone (here with top=1, on a copy: the shared run is never written to)."""
    lines = [json.loads(x) for x in (run_dir / "per_example.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in lines} == {"base", "tuned"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("loss", "gen/rougeL"):
        tuned = [x for x in lines if x["metric"] == name and x["stage"] == "tuned"]
        assert len(tuned) == metrics["n"][name], "n in the report is the number of paired examples"
        low, high = metrics["ci_low"][name], metrics["ci_high"][name]
        assert metrics["n"][name] >= 5 and low <= metrics["change"][name] <= high, (name, low, high)
        assert metrics["verdict"][name] == expected_verdict(low, high, higher_is_better=name != "loss"), name
    assert metrics["split"].startswith("test") and metrics["weights"].startswith("best, step"), "eval.weights=best"
    gens = (run_dir / "generations.jsonl").read_text().splitlines()
    assert len(gens) == metrics["n"]["gen/rougeL"] and "tuned" in json.loads(gens[0])
    assert "## Findings" in (run_dir / "analysis.md").read_text()
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (run_dir / "analysis.md").read_text()
    script("scripts/analyze.py", f"run_dir={copy}", "top=1", f"paths.log_dir={tmp_path}")
    text = (copy / "analysis.md").read_text()
    assert text != before and (run_dir / "analysis.md").read_text() == before
    assert "## Learning curve" in text and "(top 1 each way)" in text
    bad = script("scripts/analyze.py", f"run_dir={tmp_path}", f"paths.log_dir={tmp_path}", ok=False)
    assert bad.returncode != 0 and "has no per_example.jsonl" in bad.stdout + bad.stderr
