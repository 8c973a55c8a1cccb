"""The refinement loop, closed: run each change a run's refinement report suggests, and measure it.

`analysis.json` lists findings, each with the overrides that try its change. For each, a new run repeats the
original (its own command-line overrides, so the same data, seed and settings) with the change applied, in a
folder of the refinement; then its tuned model is compared with the original run's tuned model on the same
test examples (evaluation/compare.py), and `refinement.md` says which change to keep: the one that makes the
primary metric better beyond doubt with no task metric worse beyond doubt (the largest such gain if several).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from domaintune.evaluation.settings import Bootstrap
from domaintune.reporting.compare import compare_runs, worse_metrics
from domaintune.reporting.report import fmt
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

# overrides of the original run that must not be repeated: where it ran and whether it resumed
NOT_REPEATED = ("hydra.", "ckpt_path=", "paths.output_dir=")


@dataclass
class Trial:
    topic: str
    overrides: list[str]
    folder: Path
    error: str = ""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    primary: str | None = None

    @property
    def gain(self) -> float | None:
        row = self.rows.get(self.primary or "")
        return None if row is None else row["change"]

    @property
    def keep(self) -> bool:
        row = self.rows.get(self.primary or "")
        return bool(row and row["verdict"] == "better" and not worse_metrics(self.rows))


def suggestions(run_dir: Path, only: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """(topic, overrides) of each runnable finding in analysis.json (of the `only` topics), each distinct change
    once, under the first topic that names it."""
    path = run_dir / "analysis.json"
    if not path.exists():
        raise DomainTuneError(
            f"'{run_dir}' has no analysis.json (the refinement report's findings).",
            "Pass a run folder written by train.py, or write it first: python scripts/analyze.py run_dir=<run>.",
        )
    findings = [f for f in json.loads(path.read_text()) if f.get("overrides")]
    unknown = sorted(set(only or []) - {f["topic"] for f in findings})
    if unknown:
        raise DomainTuneError(
            f"only={unknown} names no runnable finding of this run's refinement report.",
            f"Its runnable findings: {', '.join(dict.fromkeys(f['topic'] for f in findings)) or 'none'}.",
        )
    seen: dict[tuple[str, ...], str] = {}
    for finding in findings:
        key = tuple(finding["overrides"])
        if key not in seen and (not only or finding["topic"] in only):
            seen[key] = finding["topic"]
    return [(topic, list(key)) for key, topic in seen.items()]


def original_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        raise DomainTuneError(
            f"'{run_dir}' has no .hydra/overrides.yaml, so the run cannot be repeated with a change.",
            "Pass a run folder written by `python train.py` (Hydra saves the command line there).",
        )
    return [o for o in yaml.safe_load(path.read_text()) or [] if not o.startswith(NOT_REPEATED)]


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def preset_keys(name: str) -> set[str]:
    """Dotted keys an experiment preset sets (conf/experiment/<name>.yaml)."""
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    if not path.exists():
        return set()
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    keys: set[str] = set()

    def walk(d: Any, prefix: str) -> None:
        for k, v in d.items():
            if k == "defaults":
                continue
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(f"{prefix}{k}")

    walk(node or {}, "")
    return keys


def merge(original: list[str], change: list[str], extra: list[str]) -> list[str]:
    """The refinement run's overrides: the original's, then the user's `extra` ones (how to repeat the original,
    e.g. its planned step count instead of its time budget), then the change.

    A later group wins over an earlier one: an override of the same key is dropped, and so is one that sets a
    key the change's experiment preset sets (a command-line value would otherwise beat the preset's). Two
    experiment presets are both applied (`experiment=[a,b]`)."""
    changed = {_key(o) for o in change}
    presets = [o.split("=", 1)[1] for o in change if _key(o) == "experiment"]
    covered = set().union(*(preset_keys(p) for p in presets)) if presets else set()

    def beaten(key: str, by: set[str]) -> bool:
        return key in by or any(key == c or key.startswith(c + ".") for c in covered)

    extra_keys = {_key(o) for o in extra}
    earlier = [o.split("=", 1)[1].strip("[]") for o in original if _key(o) == "experiment" and presets]
    kept = [o for o in original if not (_key(o) == "experiment" and presets) and not beaten(_key(o), changed | extra_keys)]
    extra = [o for o in extra if not beaten(_key(o), changed)]
    if earlier:
        change = [f"experiment=[{','.join([*earlier, *presets])}]" if _key(o) == "experiment" else o for o in change]
    return [*kept, *extra, *change]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def run_trial(trial: Trial, overrides: list[str]) -> None:
    """One refinement run (`python -m domaintune.train`, as a user would), its output in `trial.folder`; the run's
    console output passes through (its progress bars), and its last lines are kept as the error if it fails."""
    cmd = [sys.executable, "-m", "domaintune.train", *overrides, f"hydra.run.dir={trial.folder}"]
    log.info(f"Refinement run '{trial.topic}': {' '.join(cmd[3:])}")
    tail: deque[str] = deque(maxlen=5)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            if line.strip():
                tail.append(line.strip())
    trial.folder.mkdir(parents=True, exist_ok=True)
    (trial.folder / "refine_command.txt").write_text(" ".join(cmd) + "\n")
    if child.returncode != 0:
        trial.error = " ".join(tail)[-600:] or f"exit code {child.returncode}"


def refine(
    run_dir: Path, out: Path, extra: list[str], max_changes: int | None, boot: Bootstrap, only: list[str] | None = None
) -> list[Trial]:
    """Run every suggested change of `run_dir` (those of the `only` topics, at most `max_changes`) and compare
    each with the original."""
    original = original_overrides(run_dir)
    trials = []
    for k, (topic, change) in enumerate(suggestions(run_dir, only)[:max_changes]):
        trial = Trial(topic, change, out / f"{k}_{slug(topic)}")
        run_trial(trial, merge(original, change, extra))
        if not trial.error:
            try:
                trial.rows, trial.primary = compare_runs(run_dir, trial.folder, boot)
            except DomainTuneError as exc:
                trial.error = exc.paragraph()
        trials.append(trial)
    return trials


def write_refinement(out: Path, run_dir: Path, trials: list[Trial]) -> Path:
    """refinement.md (the table and the decision) and refinement.json."""
    lines = [f"# Refinement of `{run_dir}`", ""]
    if not trials:
        lines += ["The refinement report suggests no change that a run can try (no finding with overrides).", ""]
    else:
        primary = next((t.primary for t in trials if t.primary), "primary")
        lines += [
            f"Each change repeats the original run with it applied; both tuned models scored on the same test examples "
            f"(paired bootstrap intervals on refined - original). Primary metric: {primary}.",
            "",
            f"| change | overrides | {primary}: original | refined | change | 95% interval | verdict | task metrics worse |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for t in trials:
            if t.error:
                lines.append(f"| {t.topic} | `{' '.join(t.overrides)}` | failed: {t.error[:200]} | | | | | |")
                continue
            r = t.rows.get(t.primary or "")
            if r is None:
                lines.append(f"| {t.topic} | `{' '.join(t.overrides)}` | primary metric not reported | | | | | |")
                continue
            ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if r["ci_low"] is not None else "-"
            worse = ", ".join(worse_metrics(t.rows)) or "none"
            lines.append(
                f"| {t.topic} | `{' '.join(t.overrides)}` | {fmt(r['base'])} | {fmt(r['tuned'])} | {fmt(r['change'])} "
                f"| {ci} | {r['verdict']} | {worse} |"
            )
        kept = [t for t in trials if t.keep]
        best = max(kept, key=lambda t: abs(t.gain or 0.0)) if kept else None
        lines += ["", "## Decision", ""]
        if best:
            lines.append(
                f"Keep **{best.topic}** (`{' '.join(best.overrides)}`): {primary} better beyond doubt by "
                f"{fmt(best.gain)}, no task metric worse beyond doubt. Its run: `{best.folder}`."
            )
        else:
            lines.append(
                "Keep the original settings: no change made the primary metric better beyond doubt without making a "
                "task metric worse beyond doubt."
            )
    path = out / "refinement.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    summary = [
        {
            "topic": t.topic,
            "overrides": t.overrides,
            "folder": str(t.folder),
            "error": t.error,
            "primary": t.primary,
            "gain": t.gain,
            "keep": t.keep,
            "rows": t.rows,
        }
        for t in trials
    ]
    (out / "refinement.json").write_text(json.dumps(summary, indent=2))
    return path
