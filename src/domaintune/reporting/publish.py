"""The one tail of `train.py` and `scripts/evaluate.py`: intervals and verdicts, report files, W&B, console.

Both entry points hand their base and tuned `EvalResult`s here, so a report looks and means the same
whichever wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from domaintune.evaluation.evaluator import EvalResult, Evaluator
from domaintune.evaluation.evidence import Evidence
from domaintune.reporting.analysis import write_analysis
from domaintune.reporting.report import compare, fmt, print_table, samples_table, write_report
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
    by_id = {t["id"]: t for t in tuned}
    with path.open("w") as f:
        for b in base:
            line = {k: b[k] for k in ("id", "task", "prompt", "reference")}
            # *_stopped: False where the answer ran into max_new_tokens without its end-of-turn token
            line["base"], line["base_stopped"] = b["output"], b.get("stopped", True)
            if by_id:
                t = by_id.get(b["id"]) or {}
                line["tuned"], line["tuned_stopped"] = t.get("output"), t.get("stopped", True)
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def write_memorisation(folder: Path, base: EvalResult | None, tuned: EvalResult | None) -> Path | None:
    """memorisation.jsonl: each checked training record with the base and tuned continuations and their longest
    verbatim run of the training answer (analysis.md lists the worst)."""
    results = {stage: r for stage, r in (("base", base), ("tuned", tuned)) if r is not None and r.memorised}
    if not results:
        return None
    path = folder / "memorisation.jsonl"
    by_stage = {stage: {m["id"]: m for m in r.memorised} for stage, r in results.items()}
    with path.open("w") as f:
        for row in next(iter(results.values())).memorised:
            line = {k: row[k] for k in ("id", "prompt", "reference")}
            for stage, found in by_stage.items():
                mine = found.get(row["id"]) or {}
                line[stage], line[f"{stage}_longest"] = mine.get("output"), mine.get("longest")
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def headline(name: str, row: dict[str, Any] | None) -> str:
    """`gen/token_f1: 21.93 -> 23.26, +1.32 [-0.25, 2.75], no detectable change` (the report's first line)."""
    if row is None:
        return name
    if row["base"] is None or row["tuned"] is None:
        return f"{name}: {fmt(row['base'] if row['tuned'] is None else row['tuned'])}"
    interval = f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]" if row["ci_low"] is not None else ""
    return f"{name}: {fmt(row['base'])} -> {fmt(row['tuned'])}, {row['change']:+.4g}{interval}, {row['verdict'] or 'no interval'}"


def above_baselines(evaluator: Evaluator, result: EvalResult) -> dict[str, dict[str, Any]]:
    """For each accuracy of a labelled task: the model's accuracy with a bootstrap interval of its own, against the
    best trivial baseline (majority label or chance). Beating the base model is not enough for a classifier: a
    base model below chance makes a near-chance tuned model look like a gain."""
    out = {}
    for metric, (value, how) in evaluator.trivial_baselines().items():
        e = result.evidence_of(metric)
        if e is None or not e.n:
            continue
        ci = evaluator.bootstrap.single(e, metric)
        above = ci.low > value
        out[metric] = {
            "baseline": value,
            "above": above,
            "text": f"{metric} {e.value():.1f} [{ci.low:.1f}, {ci.high:.1f}] is {'above' if above else 'NOT above'} "
            f"{value:.1f}, {how}",
        }
    return out


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
    intervals = boot.paired(base.evidence, tuned.evidence) if base and tuned else {}
    rows = compare(base.metrics if base else {}, tuned.metrics if tuned else {}, intervals, boot.warn_relative_width)
    first, second = (base or tuned), (tuned or base)
    assert first is not None and second is not None, "publish needs at least one result"
    primary = evaluator.primary
    rows = {primary: rows[primary], **rows} if primary in rows else rows  # the report leads with it
    info = {
        **info,
        "primary metric": headline(primary, rows.get(primary)),
        "interval": boot.describe(),
        "max_new_tokens": f"{evaluator.answer_limit['max_new_tokens']} ({evaluator.answer_limit['how']})",
    }
    baselines = above_baselines(evaluator, second)
    if baselines:
        info["trivial baseline"] = "; ".join(b["text"] for b in baselines.values())
    write_report(folder, rows, info, first.samples, second.samples, int(evaluator.generation_settings.num_samples), primary)
    write_per_example(folder, {"base": base, "tuned": tuned})
    write_generations(folder, first.samples, second.samples if base and tuned else [])
    write_memorisation(folder, base, tuned)
    flat = {f"{key}/{k}": r[key] for k, r in rows.items() for key in FLAT_KEYS if r[key] is not None}
    # one name for every domain's deciding metric, so a sweep can optimise it whatever the task (primary/tuned ...)
    flat.update({f"primary/{key}": rows[primary][key] for key in FLAT_KEYS if primary in rows and rows[primary][key] is not None})
    flat.update({f"above_baseline/{k}": float(b["above"]) for k, b in baselines.items()})
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
