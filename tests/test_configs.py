"""Every option of every config group composes and resolves; the CLI prints the composed config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from domaintune.utils.config import CONFIG_DIR
from tests.conftest import ROOT, compose_train

# Options that need a value only the user can give.
REQUIRED = {("model", "hf"): ["model.path=some/dir"], ("data", "custom"): ["data.dir=some/dir"]}
GROUPS = ["model", "data", "adapter", "optim", "eval", "trainer", "logger", "callbacks", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


CASES = [(g, o) for g in GROUPS for o in options(g)] + [(g, o) for g in ("experiment", "hparams_search") for o in options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    cfg = compose_train(overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["name"] and resolved["data"]["name"] and resolved["adapter"]["name"]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} has no options"


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


@pytest.mark.parametrize("script", ["evaluate", "chat", "generate", "merge"])
def test_inference_run_folder_is_named_after_the_run_it_uses(script: str, tmp_path: Path) -> None:
    """`scripts/evaluate.py run_dir=.../12-00-00_education_lora` lands in `..._education_lora`, not under
    the default data name; a sweep job folder (`3_education_ia3`) is named the same way."""
    cases = {"outputs/train/2026-01-01/12-00-00_education_lora": "education_lora", "m/3_education_ia3": "education_ia3"}
    for run_dir, label in cases.items():
        cfg = compose_train([f"run_dir={run_dir}"], tmp_path, config_name=script)
        assert cfg.run_name == label
    assert compose_train([], tmp_path, config_name=script).run_name in ("healthcare", "smollm2-135m-instruct")
