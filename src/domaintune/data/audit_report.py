"""The data audit: its types (`StepReport`, `Audit`) and how it is shown (a printed table per split and
step, a W&B table, a token-length histogram PNG).

Per split and step the audit records how many records went in and out, why each removed record was removed,
how many were changed, and a few examples. `Audit.check()` proves the counts add up, so nothing leaves the
pipeline unaccounted for.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MAX_EXAMPLES = 3


@dataclass
class StepReport:
    step: str
    records_in: int
    records_out: int
    removed: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    added: int = 0  # records a step adds (upsampling in a mixture)
    examples: list[dict[str, str]] = field(default_factory=list)

    def remove(self, src: str, reason: str, detail: str = "") -> None:
        """Count one removed record under `reason`; the first few become examples in the audit."""
        self.removed[reason] = self.removed.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"record": src, "removed": detail or reason})

    def change(self, src: str, detail: str) -> None:
        """Count one record a step changed; the first few become examples in the audit."""
        self.changed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"record": src, "changed": detail})

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "in": self.records_in,
            "out": self.records_out,
            "removed": dict(self.removed),
            "changed": self.changed,
            "added": self.added,
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepReport:
        return cls(d["step"], d["in"], d["out"], dict(d["removed"]), d["changed"], d["added"], list(d["examples"]))


class Audit:
    """Per split, the ordered list of steps with their counts."""

    def __init__(self) -> None:
        self.splits: dict[str, list[StepReport]] = {}
        self.notes: list[str] = []

    def add(self, split: str, report: StepReport) -> None:
        self.splits.setdefault(split, []).append(report)

    def check(self) -> None:
        """Raise if any step's counts do not add up (a bug, never a user error)."""
        for split, steps in self.splits.items():
            for prev, cur in itertools.pairwise(steps):
                assert prev.records_out == cur.records_in, f"{split}: {prev.step} -> {cur.step} count mismatch"
            for s in steps:
                assert s.records_in - sum(s.removed.values()) + s.added == s.records_out, f"{split}/{s.step} does not add up"

    def summary(self) -> dict[str, dict[str, int]]:
        return {split: {"in": steps[0].records_in, "out": steps[-1].records_out} for split, steps in self.splits.items() if steps}

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": {split: [s.to_dict() for s in steps] for split, steps in self.splits.items()},
            "summary": self.summary(),
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Audit:
        audit = cls()
        audit.splits = {split: [StepReport.from_dict(s) for s in steps] for split, steps in d["splits"].items()}
        audit.notes = list(d["notes"])
        return audit


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
