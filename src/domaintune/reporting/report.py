"""Base-vs-tuned reporting: metrics.json, report.md, samples.md and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from domaintune.evaluation.evidence import Interval, too_wide, verdict

# Metrics where a lower value is better; every other metric is better when higher.
# (bias benchmarks: lm-eval's directions; pct_stereotype is 50 and a bias score 0 where no bias is measured)
# (memorisation: reproducing training answers verbatim is how private data leaks)
LOWER_IS_BETTER = (
    "loss",
    "perplexity",
    "unparseable_rate",
    "pct_stereotype",
    "likelihood_diff",
    "bias_score",
    "verbatim_rate",
    "longest_match",
)
# Descriptions of the output or the machine, not quality: reported, never called better or worse.
NEUTRAL = ("_per_s", "length_words", "length_ratio", "at_limit_rate")


def direction(metric: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither."""
    if metric.endswith(NEUTRAL):
        return 0
    return -1 if metric.endswith(LOWER_IS_BETTER) else 1


def compare(
    base: dict[str, float],
    tuned: dict[str, float],
    intervals: dict[str, Interval] | None = None,
    warn_relative_width: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Per metric: base, tuned, change, relative change (None where undefined), whether the point estimate
    improved, and, where per-example evidence gave a paired bootstrap interval on the change: its bounds, the
    number of examples, the verdict (better / worse / no detectable change) and whether it is too wide."""
    rows = {}
    intervals = intervals or {}
    for name in [*base, *[k for k in tuned if k not in base]]:
        b, t = base.get(name), tuned.get(name)
        change = t - b if b is not None and t is not None else None
        rel = change / abs(b) if change is not None and b not in (None, 0) else None
        improved = None if change is None or direction(name) == 0 or change == 0 else change * direction(name) > 0
        ci = intervals.get(name)
        rows[name] = {
            "base": b,
            "tuned": t,
            "change": change,
            "relative_change": rel,
            "improved": improved,
            "ci_low": ci.low if ci else None,
            "ci_high": ci.high if ci else None,
            "n": ci.n if ci else None,
            "verdict": verdict(ci, direction(name)),
            "too_wide": bool(warn_relative_width) and too_wide(ci, b, t, float(warn_relative_width or 0)),
        }
    return rows


def wide_intervals(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One line per metric whose interval is too wide to decide (the report and the console warn)."""
    return [
        f"{name}: change {fmt(r['change'])}, interval [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] over n={r['n']} "
        "is too wide to decide; score more examples (eval.max_samples, eval.generation.max_samples) to narrow it"
        for name, r in rows.items()
        if r["too_wide"]
    ]


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{digits}f}"


def _rel(r: dict[str, Any]) -> str:
    return f"{100 * r['relative_change']:+.1f}%" if r["relative_change"] is not None else "-"


def _ci(r: dict[str, Any]) -> str:
    return f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if r["ci_low"] is not None else "-"


def _verdict(r: dict[str, Any]) -> str:
    """The interval's verdict where there is one; speeds and lengths are descriptive (no verdict)."""
    if r["verdict"] is None:
        return ""
    return r["verdict"] + (" (interval too wide)" if r["too_wide"] else "")


COLOURS = {"better": "green", "worse": "red", "no detectable change": "yellow"}


def print_table(rows: dict[str, dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("metric", "n", "base", "tuned", "change", "95% interval", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    for name, r in rows.items():
        v = _verdict(r)
        table.add_row(
            name,
            str(r["n"] or "-"),
            fmt(r["base"]),
            fmt(r["tuned"]),
            fmt(r["change"]),
            _ci(r),
            f"[{COLOURS[r['verdict']]}]{v}[/]" if v else "",
        )
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: rich would wrap the table at 80 columns
            console.width = max(console.width, 150)
    console.print(table)
    for line in wide_intervals(rows):
        console.print(f"[yellow]warning[/]: {line}")


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text or "(empty)").splitlines() or ["(empty)"])


def write_report(
    folder: Path,
    rows: dict[str, dict[str, Any]],
    info: dict[str, Any],
    base_samples: list[dict[str, Any]],
    tuned_samples: list[dict[str, Any]],
    num_samples: int,
    primary: str | None = None,
) -> None:
    """metrics.json (machine-readable; `primary` names the deciding metric), report.md (the table) and samples.md
    (generations side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = ("base", "tuned", "change", "relative_change", "ci_low", "ci_high", "n", "verdict", "too_wide")
    payload = {**info, "primary": primary, **{key: {k: r[key] for k, r in rows.items()} for key in keys}}
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2))

    # a preference run that continued an adapter compares with the model it started from (info["before"])
    before = "start" if info.get("before") else "base"
    lines = [f"# {info.get('data', '')} / {info.get('adapter', '')}: {before} vs tuned", ""]
    if info.get("primary metric"):
        lines += [f"**Primary metric** {info['primary metric']}", ""]
    lines += [f"- {k}: `{v}`" for k, v in info.items()]
    lines += [
        "",
        "| metric | n | base | tuned | change | relative | 95% interval | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['n'] or '-'} | {fmt(r['base'])} | {fmt(r['tuned'])} | {fmt(r['change'])} | {_rel(r)} "
            f"| {_ci(r)} | {_verdict(r)} |"
        )
    wide = wide_intervals(rows)
    if wide:
        lines += ["", "**Too little evidence to decide:**", "", *[f"- {w}" for w in wide]]
    lines += [
        "",
        "The interval is a paired bootstrap interval on the change (tuned - base), resampling the n examples both",
        "models were scored on; the verdict is better or worse only when it excludes zero. Lower is better for loss,",
        "perplexity and unparseable_rate; speeds and lengths are descriptive (no verdict). Generation metrics",
        "(gen/*) are on a 0-100 scale; choice/* score the likeliest label (classification), choice/calibrated/*",
        "after one offset per label fitted on eval.calibration.split (each model its own); mc/* are",
        "multiple-choice benchmarks (the forgetting check). gen/at_limit_rate: % of answers that ran into",
        "max_new_tokens without stopping. gen_positions_per_s: decoding steps x rows per second, finished rows",
        "included (a batch decodes until its longest answer stops, so answer tokens/s would measure answer lengths).",
        "Per-example scores: per_example.jsonl; generations: samples.md; error analysis: analysis.md.",
    ]
    (folder / "report.md").write_text("\n".join(lines) + "\n")

    md = ["# Samples: base vs tuned", ""]
    for i, (b, t) in enumerate(zip(base_samples[:num_samples], tuned_samples[:num_samples], strict=True), start=1):
        md += [f"## {i}. `{b['id']}`", ""]
        for title, text in (
            ("Prompt", b["prompt"]),
            ("Reference", b["reference"]),
            ("Base model", b["output"]),
            ("Tuned model", t["output"]),
        ):
            md += [f"**{title}**", "", _quote(text), ""]
    (folder / "samples.md").write_text("\n".join(md))


def samples_table(base: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Generations as (columns, rows) for a W&B table."""
    columns = ["id", "prompt", "reference", "base output", "tuned output"]
    return columns, [[b["id"], b["prompt"], b["reference"], b["output"], t["output"]] for b, t in zip(base, tuned, strict=True)]
