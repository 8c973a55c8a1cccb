"""Tuned against tuned: two finished runs compared on the same examples, with paired intervals.

A run's report compares its tuned model with its base model. Refinement asks another question: is run B's
tuned model better than run A's? Both runs keep every score per example (per_example.jsonl), so the same
paired bootstrap answers it without loading a model, provided both were scored on the same examples; when
they were not (another split, other records, another max_samples), the comparison is refused with the
difference named, since unpaired scores would mix a change of model with a change of test set.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.settings import Bootstrap
from domaintune.reporting.report import compare, direction, fmt
from domaintune.utils.errors import DomainTuneError


def run_evidence(run_dir: str | Path, stage: str = "tuned") -> dict[str, Evidence]:
    """Per metric, the evidence a run's `stage` model was scored with (from per_example.jsonl)."""
    path = Path(run_dir) / "per_example.jsonl"
    if not path.exists():
        raise DomainTuneError(
            f"'{run_dir}' has no per_example.jsonl, so its per-example scores cannot be compared.",
            "Pass a folder written by train.py or scripts/evaluate.py of this version.",
        )
    ids: dict[str, list[str]] = defaultdict(list)
    rows: dict[str, list[Any]] = defaultdict(list)
    kinds: dict[str, tuple[str, dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        x = json.loads(line)
        if x["stage"] != stage:
            continue
        ids[x["metric"]].append(x["id"])
        rows[x["metric"]].append(x["row"])
        kinds[x["metric"]] = (x["kind"], x.get("params") or {})
    if not ids:
        raise DomainTuneError(f"'{run_dir}' holds no {stage} model scores.", "Pass a run that trained (train=true).")
    return {m: Evidence(kinds[m][0], ids[m], rows[m], kinds[m][1]) for m in ids}


def run_facts(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def check_same_examples(a: dict[str, Evidence], b: dict[str, Evidence], names: tuple[str, str]) -> list[str]:
    """The metrics both runs scored; raises, naming the difference, if a shared metric was scored on other
    examples in one run than in the other."""
    shared = [m for m in a if m in b]
    if not shared:
        raise DomainTuneError(
            f"{names[0]} and {names[1]} share no metric (one has {sorted(a)[:6]}, the other {sorted(b)[:6]}).",
            "Compare runs of the same task and evaluation.",
        )
    for metric in shared:
        only_a, only_b = set(a[metric].ids) - set(b[metric].ids), set(b[metric].ids) - set(a[metric].ids)
        if only_a or only_b:
            example = sorted(only_a or only_b)[0]
            raise DomainTuneError(
                f"{names[0]} and {names[1]} scored {metric} on different examples: {len(only_a)} only in {names[0]}, "
                f"{len(only_b)} only in {names[1]} (e.g. `{example}`), so a paired comparison would mix a change of model "
                "with a change of test set.",
                "Evaluate both on the same split and records (same data, eval.split, eval.max_samples and "
                "eval.generation.max_samples), e.g. with scripts/evaluate.py run_dir=<run> on the same settings.",
            )
    return shared


def compare_runs(run_a: str | Path, run_b: str | Path, bootstrap: Bootstrap) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Rows as in a run's report, with run A's tuned model in the `base` column and run B's in `tuned`, and
    the primary metric (B's, which must be A's too)."""
    a, b = run_evidence(run_a), run_evidence(run_b)
    fa, fb = run_facts(run_a), run_facts(run_b)
    if fa.get("split") and fb.get("split") and fa["split"] != fb["split"]:
        raise DomainTuneError(
            f"run_a was evaluated on '{fa['split']}', run_b on '{fb['split']}'.", "Compare runs evaluated on the same split."
        )
    shared = check_same_examples(a, b, ("run_a", "run_b"))
    intervals = bootstrap.paired({m: a[m].to_dict() for m in shared}, {m: b[m].to_dict() for m in shared})
    rows = compare({m: a[m].value() for m in shared}, {m: b[m].value() for m in shared}, intervals)
    primary = fb.get("primary")
    if primary and primary != fa.get("primary"):
        raise DomainTuneError(
            f"run_a is decided by {fa.get('primary')}, run_b by {primary}.", "Compare runs of the same data config."
        )
    if primary in rows:
        rows = {primary: rows[primary], **rows}
    return rows, primary


def worse_metrics(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Task metrics (not the loss or descriptive rows) that got worse beyond doubt."""
    return [m for m, r in rows.items() if r["verdict"] == "worse" and direction(m) != 0 and "/" in m]


def markdown(rows: dict[str, dict[str, Any]], title: str, primary: str | None) -> list[str]:
    lines = [f"# {title}", ""]
    if primary in rows:
        r = rows[primary]
        lines += [f"**Primary metric** {primary}: {fmt(r['base'])} -> {fmt(r['tuned'])} ({r['verdict']})", ""]
    lines += ["| metric | n | run_a | run_b | change | 95% interval | verdict |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if r["ci_low"] is not None else "-"
        values = " | ".join(fmt(r[k]) for k in ("base", "tuned", "change"))
        lines.append(f"| {name} | {r['n'] or '-'} | {values} | {ci} | {r['verdict'] or ''} |")
    lines += [
        "",
        "Both columns are tuned models scored on the same examples; the interval is a paired bootstrap interval on",
        "run_b - run_a, and the verdict says whether run_b is better or worse beyond doubt.",
    ]
    return lines


def write_comparison(
    folder: Path, rows: dict[str, dict[str, Any]], title: str, primary: str | None, extra: dict[str, Any]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps({**extra, "primary": primary, "rows": rows}, indent=2))
    path = folder / "comparison.md"
    path.write_text("\n".join(markdown(rows, title, primary)) + "\n")
    return path
