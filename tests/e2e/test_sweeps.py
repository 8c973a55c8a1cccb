"""Multirun sweeps shelled out like a user runs them (as lightning-hydra-template's test_sweeps.py does)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from domaintune.reporting.sweep_report import write as write_sweep_report
from tests.conftest import DOMAINS, ROOT, TINY, expected_verdict, script, wandb_blob

# the fastest real training: the tiny model, two steps, loss-only evaluation
FAST = [*TINY, "trainer.max_steps=2", "eval.generation.max_samples=0", "eval.max_samples=4", "logger=csv"]


def multirun(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    env = {"SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
    out = script("train.py", "-m", *args, f"paths.log_dir={tmp_path}", env=env, timeout=900)
    [sweep] = list(tmp_path.glob("multirun/*/*"))
    jobs = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))
    return out, jobs


def test_domain_by_adapter_sweep_with_wandb_and_report(tmp_path: Path) -> None:
    _, jobs = multirun(tmp_path, "data=healthcare,marketing", "adapter=lora,ia3", *FAST, "logger=wandb")
    assert [j.name for j in jobs] == ["0_healthcare_lora", "1_healthcare_ia3", "2_marketing_lora", "3_marketing_ia3"]
    groups = set()
    for job in jobs:
        assert (job / "metrics.json").exists() and (job / "report.md").exists()
        [run] = list(job.glob("wandb/offline-run-*/run-*.wandb"))  # exactly one W&B run per job
        blob = wandb_blob(run, b"eval/tuned/perplexity")
        assert b"eval/tuned/perplexity" in blob
        groups.update(re.findall(rb"sweep-\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", blob) or [None])
    assert len(groups) == 1 and None not in groups, "all jobs share the sweep's W&B group"
    paths = write_sweep_report(jobs[0].parent, metric="loss", wandb_log=False)
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [(r["data"], r["adapter"], r["status"]) for r in table] == [
        ("healthcare", "lora", "ok"),
        ("healthcare", "ia3", "ok"),
        ("marketing", "lora", "ok"),
        ("marketing", "ia3", "ok"),
    ]
    assert {"tuned/perplexity", "change/eval_tokens_per_s", "ci_low/loss", "verdict/loss"} <= set(table[0]), (
        "every metric is in the CSV"
    )
    for r in table:  # each verdict is the one its interval implies (loss: lower is better)
        low, high = float(r["ci_low/loss"]), float(r["ci_high/loss"])
        assert low <= high and r["verdict/loss"] == expected_verdict(low, high, higher_is_better=False), r
    assert paths["heatmap"].stat().st_size > 5000 and paths["curves"].stat().st_size > 5000
    assert "| job | adapter | data | status |" in paths["md"].read_text() and "95% interval, verdict" in paths["md"].read_text()


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # max_length=8 leaves no answer tokens: that job fails with a clear error; the other one runs
    _, jobs = multirun(tmp_path, "data.max_length=8,384", *FAST)
    failure = json.loads((jobs[0] / "failure.json").read_text())
    assert "No train example has answer tokens left" in failure["error"]
    assert (jobs[1] / "metrics.json").exists()
    md = write_sweep_report(jobs[0].parent, metric="loss", wandb_log=False)["md"].read_text()
    assert "1 ok, 1 failed" in md and "## Failed jobs" in md and "No train example has answer tokens left" in md


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every scalar in a config node."""
    if OmegaConf.is_dict(node):
        return [kv for k in node for kv in leaves(node._get_node(k), f"{prefix}{k}.")]
    if OmegaConf.is_list(node):
        return []
    return [(prefix.rstrip("."), node._value())]


def test_every_experiment_preset_runs(tmp_path: Path) -> None:
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if p.stem != "domain_sweep")
    _, jobs = multirun(tmp_path, "experiment=glob(*,exclude=domain_sweep)", *FAST, "trainer=debug")
    assert len(jobs) == len(presets) and all((j / "metrics.json").exists() for j in jobs)
    fixed = {a.split("=")[0] for a in FAST}  # the command line wins over a preset
    for job in jobs:  # each job ran with its own preset's values
        [name] = [o.split("=")[1] for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) if "experiment=" in o]
        preset = OmegaConf.load(ROOT / "conf" / "experiment" / f"{name}.yaml")
        ran = OmegaConf.load(job / ".hydra" / "config.yaml")
        for key, value in leaves(preset):
            if key.split(".")[0] not in ("defaults", "hydra") and key not in fixed and not str(value).startswith("${"):
                assert OmegaConf.select(ran, key) == value, f"{name}: {key}"


def test_domain_sweep_preset_expands_to_the_full_grid() -> None:
    out = script("train.py", "experiment=domain_sweep", "--cfg", "hydra", timeout=120)
    assert f"data: {','.join(DOMAINS)}" in out.stdout
    assert "adapter: lora,ia3,freeze" in out.stdout and "mode: MULTIRUN" in out.stdout


def test_optuna_search_runs_three_seeded_trials(tmp_path: Path) -> None:
    _, jobs = multirun(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3", *FAST, "trainer=debug")
    assert len(jobs) == 3
    [results] = list(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
    text = results.read_text()
    assert "best_params" in text and "optim.lr" in text and "best_value" in text


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    """Two parallel jobs on a cold cache: the model, tokenizer, data and base-model result are each built
    once under their file locks, and both jobs report the same base model."""
    cold = tmp_path / "cold-cache"
    _, jobs = multirun(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "adapter=lora,ia3",
        *FAST,
        "trainer=debug",
        f"paths.cache_dir={cold}",
    )
    assert len(jobs) == 2 and all((j / "metrics.json").exists() for j in jobs)
    base = [json.loads((j / "metrics.json").read_text())["base"] for j in jobs]
    assert base[0] == base[1]
    assert len(list((cold / "eval").glob("base-*.json"))) == 1 and len(list((cold / "data").glob("*.json"))) == 1
    assert not list(cold.rglob("*.tmp*")), "no temporary file left behind"


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_submitit_local_launcher(tmp_path: Path) -> None:
    _, jobs = multirun(tmp_path, "hydra/launcher=submitit_local", "adapter=lora,ia3", *FAST, "trainer=debug")
    assert len(jobs) == 2 and all((j / "metrics.json").exists() for j in jobs)
    configs = [json.loads((j / "adapter" / "adapter_config.json").read_text())["peft_type"] for j in jobs]
    assert configs == ["LORA", "IA3"], "each job trained its own adapter"


def _fake_job(sweep: Path, num: int, data: str, metrics: dict[str, tuple[float, float]], primary: str | None = None) -> None:
    """A finished job folder as train.py leaves it (config, overrides, metrics.json), without training."""
    job = sweep / f"{num}_{data}_lora"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"data:\n  name: {data}\nadapter:\n  name: lora\n")
    (job / ".hydra" / "overrides.yaml").write_text(f"- data={data}\n")
    payload = {
        "base": {m: b for m, (b, _) in metrics.items()},
        "tuned": {m: t for m, (_, t) in metrics.items()},
        "change": {m: t - b for m, (b, t) in metrics.items()},
        "relative_change": {m: (t - b) / b for m, (b, t) in metrics.items()},
        "primary": primary,
    }
    (job / "metrics.json").write_text(json.dumps(payload))


def test_report_of_domains_with_different_task_metrics(tmp_path: Path) -> None:
    """Summaries score ROUGE, fact-checking scores accuracy: the CSV and the W&B table hold both (a job lacks
    the other's metrics), the markdown lists each job's task metrics, and the W&B table accepts the gaps."""
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    _fake_job(
        sweep,
        0,
        "education",
        {"perplexity": (14.7, 10.8), "gen/rougeL": (22.6, 27.8), "gen/length_words": (41, 19)},
        "gen/rougeL",
    )
    _fake_job(sweep, 1, "fact_checking", {"perplexity": (21.8, 1.5), "gen/accuracy": (25.0, 37.5)}, "gen/accuracy")
    paths = write_sweep_report(sweep, wandb_log=True)  # by default each job's own primary metric leads
    lines = paths["md"].read_text().splitlines()
    assert any(line.startswith("| 0 |") and "| gen/rougeL | 22.6 | 27.8 | 5.2 | +23.0% |" in line for line in lines)
    assert any(line.startswith("| 1 |") and "| gen/accuracy | 25 | 37.5 | 12.5 | +50.0% |" in line for line in lines)
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert table[0]["tuned/gen/rougeL"] and not table[0]["tuned/gen/accuracy"] and table[1]["tuned/gen/accuracy"]
    md = paths["md"].read_text()
    assert "job 0 (education / lora): gen/rougeL 22.6 → 27.8" in md and "gen/accuracy 25 → 37.5" in md
    assert "length_words 41" not in md, "descriptive metrics stay in the CSV"
    [run] = list(sweep.glob("wandb/offline-run-*/run-*.wandb"))
    assert b"sweep/table" in wandb_blob(run, b"sweep/table")


def test_sweep_report_also_reads_a_folder_of_single_runs(tmp_path: Path) -> None:
    """outputs/train/<date> (single runs, folders named by time) reports like a multirun, with verdicts."""
    for name, data in (("10-00-00_healthcare_lora", "healthcare"), ("09-00-00_education_lora", "education")):
        job = tmp_path / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(f"data: {{name: {data}}}\nadapter: {{name: lora}}\n")
        metrics = {
            "base": {"loss": 2.0},
            "tuned": {"loss": 1.5},
            "change": {"loss": -0.5},
            "relative_change": {"loss": -0.25},
            "ci_low": {"loss": -0.6},
            "ci_high": {"loss": -0.4},
            "n": {"loss": 200},
            "verdict": {"loss": "better"},
        }
        (job / "metrics.json").write_text(json.dumps(metrics))
    paths = write_sweep_report(tmp_path, metric="loss", wandb_log=False)
    md = paths["md"].read_text()
    assert "2 ok, 0 failed" in md and md.count("[-0.6, -0.4] better") == 2
    with paths["csv"].open() as f:
        assert [r["data"] for r in csv.DictReader(f)] == ["education", "healthcare"], "runs in name (time) order"


def test_sweep_report_names_an_evaluate_job_by_the_run_it_scored(tmp_path: Path) -> None:
    """A folder of `scripts/evaluate.py` jobs (e.g. the bias benchmarks of several domains' runs): each job's own
    config holds the defaults, so its data and adapter names come from the run whose adapter it scored."""
    from domaintune.reporting.sweep_report import collect

    run = tmp_path / "runs" / "10-00-00_marketing_ia3"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("data: {name: marketing}\nadapter: {name: ia3}\n")
    job = tmp_path / "evals" / "11-00-00_marketing_ia3"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("data: {name: healthcare}\nadapter: {name: lora}\n")
    (job / "metrics.json").write_text(json.dumps({"adapter": str(run / "adapter"), "base": {}, "tuned": {}}))
    [found] = collect(tmp_path / "evals")
    assert (found.data, found.adapter) == ("marketing", "ia3")
