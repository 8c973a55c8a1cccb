"""The one tail of `train.py` and `scripts/evaluate.py`: intervals and verdicts, report files, W&B, console.

Both entry points hand their base and tuned `EvalResult`s here, so a report looks and means the same
whichever wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from domaintune.evaluation.analysis import write_analysis
from domaintune.evaluation.evaluator import EvalResult, Evaluator
from domaintune.evaluation.evidence import Evidence, paired_intervals
from domaintune.evaluation.report import compare, print_table, samples_table, write_report
from domaintune.utils.loggers import log_to_wandb
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

FLAT_KEYS = ("base", "tuned", "change", "ci_low", "ci_high")


def example_value(e: Evidence, row: Any) -> float | None:
    """A human-readable per-example value (None where the metric is only defined over a corpus)."""
    if e.kind == "mean":
        return float(row)
    if e.kind in ("loss", "perplexity"):
        loss = row[0] / max(row[1], 1)
        return loss if e.kind == "loss" else math.exp(min(loss, 50.0))
    if e.kind == "ratio":
        return row[0] / max(row[1], 1e-9)
    if e.kind == "macro_f1":
        return 100.0 * (row[0] == row[1])
    return None  # bleu / chrf: per-sentence statistics, scored only in sum


def write_per_example(folder: Path, results: dict[str, EvalResult | None]) -> Path:
    """per_example.jsonl: one line per (stage, metric, example) with the raw row the bootstrap resamples
    and a readable value; `scripts/analyze.py` and pandas read it back."""
    path = folder / "per_example.jsonl"
    with path.open("w") as f:
        for stage, result in results.items():
            for metric, d in (result.evidence if result else {}).items():
                e = Evidence.from_dict(d)
                for i, row in zip(e.ids, e.rows, strict=True):
                    line = {"stage": stage, "metric": metric, "kind": e.kind, "id": i, "value": example_value(e, row), "row": row}
                    if e.params:
                        line["params"] = e.params
                    f.write(json.dumps(line) + "\n")
    return path


def write_generations(folder: Path, base: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> Path:
    """generations.jsonl: every scored generation (samples.md shows only the first few), base and tuned."""
    path = folder / "generations.jsonl"
    by_id = {t["id"]: t["output"] for t in tuned}
    with path.open("w") as f:
        for b in base:
            line = {k: b[k] for k in ("id", "task", "prompt", "reference")}
            line["base"] = b["output"]
            if by_id:
                line["tuned"] = by_id.get(b["id"])
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def publish(
    folder: Path,
    base: EvalResult | None,
    tuned: EvalResult | None,
    info: dict[str, Any],
    evaluator: Evaluator,
    title: str,
    loggers: list[Any] | tuple[Any, ...] = (),
    step: int | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Compare, write report.md / metrics.json / samples.md / per_example.jsonl, log to W&B and print the
    table. Returns the rows and the flat metrics (`tuned/loss`, `ci_low/gen/rougeL`, ...) sweepers read."""
    boot = evaluator.bootstrap
    intervals = (
        paired_intervals(base.evidence, tuned.evidence, int(boot["resamples"]), float(boot["confidence"]), int(boot["seed"]))
        if base and tuned
        else {}
    )
    rows = compare(base.metrics if base else {}, tuned.metrics if tuned else {}, intervals, boot["warn_relative_width"])
    info = {**info, "interval": f"paired bootstrap, {boot['resamples']} resamples, {100 * float(boot['confidence']):g}%"}
    first, second = (base or tuned), (tuned or base)
    assert first is not None and second is not None, "publish needs at least one result"
    write_report(folder, rows, info, first.samples, second.samples, int(evaluator.gcfg["num_samples"]))
    write_per_example(folder, {"base": base, "tuned": tuned})
    write_generations(folder, first.samples, second.samples if base and tuned else [])
    flat = {f"{key}/{k}": r[key] for k, r in rows.items() for key in FLAT_KEYS if r[key] is not None}
    comparison = (
        ["metric", "n", *FLAT_KEYS, "verdict"],
        [[k, r["n"], *[r[key] for key in FLAT_KEYS], r["verdict"] or ""] for k, r in rows.items()],
    )
    samples = samples_table(first.samples, second.samples)
    log_to_wandb(list(loggers), tables={"eval/comparison": comparison, "eval/samples": samples})
    for lg in loggers:
        lg.log_metrics({f"eval/{k}": v for k, v in flat.items()}, step=step)
        lg.save()  # fit() already finalised the loggers; flush what came after
    print_table(rows, title=title)
    analysis = write_analysis(folder, evaluator.analysis_top)
    log.info(f"Refinement report: {analysis}")
    return rows, flat
