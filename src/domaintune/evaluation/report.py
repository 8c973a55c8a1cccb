"""Base-vs-tuned reporting: metrics.json, report.md, samples.md and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Metrics where a lower value is better; every other metric is better when higher.
LOWER_IS_BETTER = ("loss", "perplexity", "unparseable_rate")
# Descriptions of the output or the machine, not quality: reported, never called better or worse.
NEUTRAL = ("tokens_per_s", "length_words", "length_ratio")


def direction(metric: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither."""
    if metric.endswith(NEUTRAL):
        return 0
    return -1 if metric.endswith(LOWER_IS_BETTER) else 1


def compare(base: dict[str, float], tuned: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per metric: base, tuned, change, relative change (None where undefined) and whether it improved."""
    rows = {}
    for name in [*base, *[k for k in tuned if k not in base]]:
        b, t = base.get(name), tuned.get(name)
        change = t - b if b is not None and t is not None else None
        rel = change / abs(b) if change is not None and b not in (None, 0) else None
        improved = None if change is None or direction(name) == 0 or change == 0 else change * direction(name) > 0
        rows[name] = {"base": b, "tuned": t, "change": change, "relative_change": rel, "improved": improved}
    return rows


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{digits}f}"


def _rel(r: dict[str, Any]) -> str:
    return f"{100 * r['relative_change']:+.1f}%" if r["relative_change"] is not None else "-"


def print_table(rows: dict[str, dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("metric", "base", "tuned", "change", "relative"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, r in rows.items():
        mark = {True: " [green]better[/]", False: " [red]worse[/]", None: ""}[r["improved"]]
        table.add_row(name, _fmt(r["base"]), _fmt(r["tuned"]), _fmt(r["change"]) + mark, _rel(r))
    (console or Console()).print(table)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text or "(empty)").splitlines() or ["(empty)"])


def write_report(
    folder: Path,
    rows: dict[str, dict[str, Any]],
    info: dict[str, Any],
    base_samples: list[dict[str, Any]],
    tuned_samples: list[dict[str, Any]],
    num_samples: int,
) -> None:
    """metrics.json (machine-readable), report.md (the table) and samples.md (generations side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {**info, **{key: {k: r[key] for k, r in rows.items()} for key in ("base", "tuned", "change", "relative_change")}}
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2))

    lines = [f"# {info.get('data', '')} / {info.get('adapter', '')}: base vs tuned", ""]
    lines += [f"- {k}: `{v}`" for k, v in info.items()]
    lines += ["", "| metric | base | tuned | change | relative | |", "|---|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        verdict = {True: "better", False: "worse", None: ""}[r["improved"]]
        lines.append(f"| {name} | {_fmt(r['base'])} | {_fmt(r['tuned'])} | {_fmt(r['change'])} | {_rel(r)} | {verdict} |")
    lines += [
        "",
        "Lower is better for loss, perplexity and unparseable_rate; speeds and lengths are descriptive.",
        "Generation metrics (gen/*) are on a 0-100 scale; mc/* are multiple-choice benchmarks (the forgetting check).",
        "Generations: samples.md.",
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
