"""Base-vs-tuned reporting: metrics.json, samples.md and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Metrics where a lower value is better; every other metric is better when higher.
LOWER_IS_BETTER = ("loss", "perplexity")
# Speeds describe the machine, not the model: reported, but never called better or worse.
NEUTRAL = ("tokens_per_s",)


def direction(metric: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither."""
    if any(metric.endswith(n) for n in NEUTRAL):
        return 0
    return -1 if any(metric.endswith(n) for n in LOWER_IS_BETTER) else 1


def compare(base: dict[str, float], tuned: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Per metric: base, tuned, change and relative change (None where undefined)."""
    rows = {}
    for name in [*base, *[k for k in tuned if k not in base]]:
        b, t = base.get(name), tuned.get(name)
        change = t - b if b is not None and t is not None else None
        rel = change / abs(b) if change is not None and b not in (None, 0) else None
        improved = None if change is None or direction(name) == 0 else change * direction(name) > 0
        rows[name] = {"base": b, "tuned": t, "change": change, "relative_change": rel, "improved": improved}
    return rows


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (0 < abs(x) < 1e-3) else f"{x:.{digits}f}"


def print_table(rows: dict[str, dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("metric", "base", "tuned", "change", "relative"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, r in rows.items():
        mark = {True: " [green]better[/]", False: " [red]worse[/]", None: ""}[r["improved"]]
        rel = f"{100 * r['relative_change']:+.1f}%" if r["relative_change"] is not None else "-"
        table.add_row(name, _fmt(r["base"]), _fmt(r["tuned"]), _fmt(r["change"]) + mark, rel)
    (console or Console()).print(table)


def write_metrics(folder: Path, rows: dict[str, dict[str, Any]], info: dict[str, Any]) -> Path:
    path = folder / "metrics.json"
    payload = {
        **info,
        "base": {k: r["base"] for k, r in rows.items()},
        "tuned": {k: r["tuned"] for k, r in rows.items()},
        "change": {k: r["change"] for k, r in rows.items()},
        "relative_change": {k: r["relative_change"] for k, r in rows.items()},
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text or "(empty)").splitlines() or ["(empty)"])


def write_samples(folder: Path, base: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> Path:
    """Side-by-side generations of the base and the tuned model for the same prompts."""
    path = folder / "samples.md"
    lines = ["# Samples: base vs tuned", ""]
    for i, (b, t) in enumerate(zip(base, tuned, strict=True), start=1):
        lines += [
            f"## {i}. `{b['id']}`",
            "",
            "**Prompt**",
            "",
            _quote(b["prompt"]),
            "",
            "**Reference**",
            "",
            _quote(b["reference"]),
            "",
            "**Base model**",
            "",
            _quote(b["output"]),
            "",
            "**Tuned model**",
            "",
            _quote(t["output"]),
            "",
        ]
    path.write_text("\n".join(lines))
    return path
