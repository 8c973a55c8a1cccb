"""Show the data audit: a printed table per split and step, and a token-length histogram PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_audit(report: dict[str, Any], console: Console | None = None) -> None:
    """One row per split and step: records in/out, what was removed and why, how many were changed."""
    table = Table(title="Data audit (records per split and step)")
    for col in ("split", "step", "in", "out", "removed (why)", "changed"):
        table.add_column(col, justify="right" if col in ("in", "out", "changed") else "left")
    for split, steps in report["splits"].items():
        for i, s in enumerate(steps):
            why = ", ".join(f"{k}: {v}" for k, v in s["removed"].items())
            if s.get("added"):
                why = ", ".join(filter(None, [why, f"added (upsampled): {s['added']}"]))
            table.add_row(split if i == 0 else "", s["step"], str(s["in"]), str(s["out"]), why or "-", str(s["changed"] or "-"))
        table.add_section()
    console = console or Console()
    console.print(table)
    for note in report.get("notes", []):
        console.print(note)
    if report.get("from_cache"):
        console.print(f"(from the cache {report['from_cache']}: preprocessing was skipped)")
    tokens = report.get("tokens", {})
    if tokens:
        lines = [
            f"{split}: {t['examples']} examples, {t['total']} tokens ({t['trained']} trained), length median {t['median']}, "
            f"p95 {t['p95']}, max {t['max']}"
            for split, t in tokens.items()
        ]
        console.print("\n".join(lines))
    if eff := report.get("padding_efficiency"):
        console.print(
            f"padding efficiency (real / processed tokens): {eff['shuffled']:.3f} shuffled, {eff['grouped']:.3f} grouped by "
            f"length, {eff['packed']:.3f} packed"
        )
    if batching := report.get("batching"):
        console.print(f"training batches: {batching['mode']} ({batching['reason']})")


def audit_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The audit as (columns, rows), e.g. for a W&B table."""
    columns = ["split", "step", "in", "out", "removed", "changed"]
    rows = [
        [split, s["step"], s["in"], s["out"], json.dumps(s["removed"]), s["changed"]]
        for split, steps in report["splits"].items()
        for s in steps
    ]
    return columns, rows


def plot_lengths(lengths: dict[str, list[int]], path: str | Path, max_length: int | None = None) -> Path:
    """Histogram of tokens per example for each split (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, values in lengths.items():
        if values:
            ax.hist(values, bins=40, alpha=0.5, label=f"{split} (n={len(values)})")
    if max_length:
        ax.axvline(max_length, color="red", linestyle="--", label=f"max_length={max_length}")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.set_title("Token lengths after preprocessing")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
