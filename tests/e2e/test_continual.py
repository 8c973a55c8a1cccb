"""Continued adaptation: adapter.init_from continues an earlier run's adapter (settings checked up front),
replay through data=mixture, lineage across stages, and the forgetting section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domaintune.core.checks import check_config
from domaintune.core.pipeline import fit_and_evaluate
from domaintune.utils.errors import DomainTuneError
from tests.conftest import expected_verdict


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import TINY, compose_train

    out = tmp_path_factory.mktemp("stage1")
    fit_and_evaluate(compose_train([*TINY, "logger=csv", "data=healthcare", "optim.lr=1e-2"], out))
    return out


def test_continued_run_starts_from_the_earlier_weights_and_reports_forgetting(first_stage: Path, make_cfg) -> None:
    cfg = make_cfg("logger=csv", "data=customer_service", f"adapter.init_from={first_stage}", "optim.lr=1e-2")
    run = fit_and_evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    forgetting = json.loads((out / "forgetting.json").read_text())
    assert set(forgetting["domains"]) == {"healthcare", "customer_service"}
    hc = forgetting["domains"]["healthcare"]["loss"]
    first = json.loads((first_stage / "metrics.json").read_text())
    # the start weights are stage 1's saved adapter: its healthcare test loss is stage 1's tuned loss
    assert hc["base"] == pytest.approx(first["tuned"]["loss"], abs=1e-5)
    assert hc["tuned"] != hc["base"] and hc["n"] == 8
    assert hc["verdict"] == expected_verdict(hc["ci_low"], hc["ci_high"], higher_is_better=False), hc
    assert "## Forgetting (continued adaptation)" in (out / "report.md").read_text()
    assert [e["name"] for e in json.loads((out / "lineage.json").read_text())] == ["healthcare", "customer_service"]
    assert "forgetting/healthcare/loss" in run.flat


def test_replay_mixture_records_each_component_in_the_lineage(first_stage: Path, make_cfg) -> None:
    cfg = make_cfg(
        "logger=csv",
        "data=mixture",
        "data.weights.healthcare=0.2",
        "data.weights.customer_service=0.8",
        f"adapter.init_from={first_stage}/adapter",
    )
    fit_and_evaluate(cfg)
    names = [e["name"] for e in json.loads((Path(cfg.paths.output_dir) / "lineage.json").read_text())]
    assert names == ["healthcare", "healthcare", "customer_service"], "stage 1, then both replay components"
    forgetting = json.loads((Path(cfg.paths.output_dir) / "forgetting.json").read_text())
    assert set(forgetting["domains"]) == {"healthcare", "customer_service"}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["adapter.peft.r=8"], "r: saved 16, configured 8"),
        (["adapter=dora"], "use_dora: saved False, configured True"),
        (["adapter=full"], "holds a PEFT adapter, but this run is configured as adapter=full"),
    ],
)
def test_mismatched_settings_are_refused_before_anything_loads(first_stage: Path, make_cfg, overrides, words) -> None:
    cfg = make_cfg(*overrides, f"adapter.init_from={first_stage}")
    with pytest.raises(DomainTuneError, match=words.replace("(", r"\(")):
        check_config(cfg)


def test_a_run_without_lineage_file_counts_its_own_data(tiny_run: Path, tmp_path: Path) -> None:
    """Runs written before lineage.json existed still name their domain (from their saved config)."""
    from omegaconf import OmegaConf

    from domaintune.models.continual import lineage

    old = tmp_path / "old_run"
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "config.yaml").write_text((tiny_run / ".hydra" / "config.yaml").read_text())
    assert (tiny_run / "lineage.json").exists() and not (old / "lineage.json").exists()
    entries = lineage(str(old / "adapter"), OmegaConf.create({"name": "healthcare", "dir": str(tmp_path)}), tmp_path)
    assert [e["name"] for e in entries] == ["education", "healthcare"] and entries[0]["run_dir"] == str(old)
    assert Path(entries[0]["data"]["dir"]).is_absolute(), "folders are stored absolute: a later run may start elsewhere"


def test_init_from_a_folder_without_an_adapter(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DomainTuneError, match="holds no adapter"):
        check_config(make_cfg(f"adapter.init_from={tmp_path}"))


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_continual_demo_runs_both_stages_and_writes_the_table(tmp_path: Path) -> None:
    from tests.conftest import TINY, script

    out = script("scripts/continual_demo.py", *TINY, "logger=csv", "eval.generation.max_samples=4", f"paths.log_dir={tmp_path}")
    [table] = list(tmp_path.glob("continual_demo/*/table.md"))
    text = table.read_text()
    assert text in out.stdout and text.startswith("Stage 1 (healthcare): test loss")
    for label in ("no replay", "20% replay"):
        for row in ("healthcare loss", "customer_service loss", "general mc/piqa/acc"):
            assert f"| {label} | {row} |" in text, (label, row)
    stage2 = next(table.parent.glob("stage2_customer_service_replay"))
    names = [e["name"] for e in json.loads((stage2 / "lineage.json").read_text())]
    assert names == ["healthcare", "healthcare", "customer_service"]
