"""The package installs whole: a wheel built from this tree carries its configs and samples, and its console
script trains from any folder, without the source tree."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_wheel_installs_into_a_fresh_venv_and_domaintune_train_runs(tmp_path: Path) -> None:
    # the build backend from this environment when it has one (fast, offline); else pip fetches it
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", *isolation, "-q", "-w", tmp_path / "dist", cwd=ROOT)
    [wheel] = list((tmp_path / "dist").glob("domaintune-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "domaintune/conf/train.yaml" in names and "domaintune/conf/data/healthcare.yaml" in names
    assert "domaintune/data/samples/healthcare/train.jsonl" in names

    # A fresh venv that sees this environment's dependencies (a plain path line: the editable install's
    # .pth files there are not processed) but not the source tree; the wheel goes in without deps.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    fresh_site = next(venv.glob("lib/python*/site-packages"))
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(venv / "bin" / "python", "-c", "import domaintune; print(domaintune.__file__)", cwd=work, env=env)
    assert str(fresh_site) in where.stdout, "the installed copy, not the source tree, is imported"
    run(
        venv / "bin" / "domaintune-train",
        "data=healthcare",
        "model=tiny",
        "logger=none",
        "trainer=debug",
        "data.max_samples=8",
        "eval.max_samples=4",
        "eval.generation.max_samples=2",
        "eval.generation.max_new_tokens=2",
        f"paths.log_dir={work / 'outputs'}",
        cwd=work,
        env=env,
    )
    assert list(work.glob("outputs/train/*/*/adapter/adapter_config.json")), "the run saved its adapter"
