"""Caches survive concurrency and damage: two processes on a cold cache both finish with the same result
(one builds, the other waits and reuses), and a damaged cache file is rebuilt, not trusted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start


def prepare(cache: Path, out: Path) -> subprocess.Popen:
    env = {"DOMAINTUNE_CACHE": str(cache)}
    return start("scripts/prepare_data.py", "model=tiny", "data=education", f"paths.log_dir={out}", env=env)


def reports(out: Path) -> dict:
    [path] = list(out.glob("prepare_data/*/*/data_report.json"))
    report = json.loads(path.read_text())
    return {k: report[k] for k in ("splits", "tokens", "labels")}


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_two_processes_on_a_cold_cache_build_once_and_agree(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [prepare(cache, tmp_path / f"out{i}") for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    assert reports(tmp_path / "out0") == reports(tmp_path / "out1")
    reused = [("Loaded the prepared data from the cache" in log) for log in logs]
    assert sorted(reused) == [False, True], "one process prepares the data, the other waits for it and reuses it"
    [data] = list((cache / "data").glob("*.json"))
    assert not list((cache / "data").glob("*.tmp")), "no temporary file is left behind"

    data.write_text(data.read_text()[: len(data.read_text()) // 2])  # a truncated (damaged) cache file
    proc = prepare(cache, tmp_path / "out2")
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-2000:]
    assert "is damaged" in log and "rebuilding it" in log and "Loaded the prepared data from the cache" not in log
    assert reports(tmp_path / "out2") == reports(tmp_path / "out0")
    json.loads(data.read_text())  # rewritten whole
