"""The refinement loop end to end on the tiny model: scripts/refine.py runs a suggested change as a new run and
compares it with the original on the same test examples; scripts/compare.py compares any two runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.conftest import script


def test_refine_runs_each_suggested_change_and_compares_it(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    findings = [
        {"topic": "planted", "text": "a planted finding", "change": "a higher rate", "overrides": ["optim.lr=5e-2"]},
        {"topic": "same change again", "text": "", "change": "", "overrides": ["optim.lr=5e-2"]},
        {"topic": "data only", "text": "", "change": "add records", "overrides": []},
        {"topic": "not asked for", "text": "", "change": "", "overrides": ["optim.lr=1e-1"]},
    ]
    (run / "analysis.json").write_text(json.dumps(findings))
    out = script(
        "scripts/refine.py", f"run_dir={run}", f"paths.log_dir={tmp_path / 'logs'}", "only=[planted,'same change again']"
    )
    [folder] = list((tmp_path / "logs" / "refine").glob("*/*"))
    trials = json.loads((folder / "refinement.json").read_text())
    assert [t["topic"] for t in trials] == ["planted"], "each distinct change once, of the topics asked for"
    trial = trials[0]
    assert not trial["error"] and trial["primary"] == "gen/rougeL"
    command = (Path(trial["folder"]) / "refine_command.txt").read_text()
    assert "data=education" in command and "optim.lr=5e-2" in command and "optim.lr=1e-2" not in command
    row = trial["rows"]["gen/rougeL"]
    assert row["n"] == 8 and row["verdict"] in ("better", "worse", "no detectable change")
    original = json.loads((run / "metrics.json").read_text())["tuned"]["gen/rougeL"]
    assert row["base"] == original, "the original run's tuned model is the comparison's baseline"
    assert (Path(trial["folder"]) / "report.md").exists()
    md = (folder / "refinement.md").read_text()
    assert "| planted | `optim.lr=5e-2` |" in md and "## Decision" in md and "Refinement:" in out.stdout
    bad = script("scripts/refine.py", f"run_dir={run}", f"paths.log_dir={tmp_path / 'logs'}", "only=[typo]", ok=False)
    assert "only=['typo'] names no runnable finding" in bad.stdout + bad.stderr

    # any two runs: the refined one against the original, through the CLI
    cmp = script("scripts/compare.py", f"run_a={run}", f"run_b={trial['folder']}", f"paths.log_dir={tmp_path / 'logs'}")
    assert "gen/rougeL" in cmp.stdout and "Comparison:" in cmp.stdout
    [cfolder] = list((tmp_path / "logs" / "compare").glob("*/*"))
    saved = json.loads((cfolder / "comparison.json").read_text())
    assert saved["rows"]["gen/rougeL"]["change"] == row["change"]


def test_compare_refuses_runs_of_other_examples(tiny_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    lines = (other / "per_example.jsonl").read_text().splitlines()
    (other / "per_example.jsonl").write_text("\n".join(line.replace("test.jsonl:", "validation.jsonl:") for line in lines) + "\n")
    out = script("scripts/compare.py", f"run_a={tiny_run}", f"run_b={other}", f"paths.log_dir={tmp_path}", ok=False)
    assert out.returncode == 1
    said = " ".join((out.stdout + out.stderr).split())
    expected = r"scored loss on different examples: 8 only in run_a, 8 only in run_b \(e\.g\. `\S*test\.jsonl:\d+`\)"
    assert re.search(expected, said), said[-800:]
