"""The forgetting check of a continued run: did training on the new data cost what the earlier stages learnt?

Every domain in the run's lineage (each earlier stage's data and this run's own) is re-scored on its test
split (answer-token loss, per example) with the weights the run started from and the weights it ends with,
plus the general benchmarks (eval.general). Each change gets the same paired bootstrap interval and verdict
as the main report, so "no detectable forgetting" is a measured statement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from domaintune.evaluation.evaluator import EvalResult, EvaluationSet, Evaluator
from domaintune.models.loss import LossOptions
from domaintune.reporting.report import compare, fmt
from domaintune.utils.config import to_dict
from domaintune.utils.hydra import build
from domaintune.utils.loggers import log_to_wandb

GENERAL = "general"


class Forgetting:
    def __init__(self, eval_cfg: DictConfig, domains: dict[str, EvaluationSet], loss: LossOptions, general: Evaluator):
        """One loss-only evaluator per domain (test split, eval.max_samples records, no generation: the check
        is about what the model still knows, and generation would multiply its cost by the domain count)."""
        loss_only = {**to_dict(eval_cfg.generation), "max_samples": 0}
        self.bootstrap = general.bootstrap
        self.evaluators: dict[str, Evaluator] = {
            name: build(eval_cfg, data=data, loss=loss, split="test", general=None, generation=loss_only)
            for name, data in domains.items()
        }
        self.general = general if general.general else None

    def score(self, model: nn.Module, stage: str) -> dict[str, EvalResult]:
        out = {name: ev.run(model, f"{stage} ({name})") for name, ev in self.evaluators.items()}
        if self.general is not None:
            out[GENERAL] = self.general.general_benchmarks(model, stage)
        return out

    def compare(self, start: dict[str, EvalResult], end: dict[str, EvalResult]) -> dict[str, dict[str, dict[str, Any]]]:
        """Per domain: start-vs-end rows (base = start) with paired intervals and verdicts."""
        rows = {}
        for name in start:
            a, b = start[name], end[name]
            intervals = self.bootstrap.paired(a.evidence, b.evidence)
            quality = {k: v for k, v in a.metrics.items() if k in a.evidence}
            rows[name] = compare(quality, {k: b.metrics[k] for k in quality}, intervals, self.bootstrap.warn_relative_width)
        return rows


def write_forgetting(folder: Path, rows: dict[str, dict[str, dict[str, Any]]], start_from: str, loggers: list[Any]) -> Path:
    """forgetting.json, a "Forgetting" section appended to report.md, and a W&B table."""
    (folder / "forgetting.json").write_text(json.dumps({"start_from": start_from, "domains": rows}, indent=2))
    header = ["domain", "metric", "n", "start", "end", "change", "ci_low", "ci_high", "verdict"]
    table = [
        [d, m, r["n"], r["base"], r["tuned"], r["change"], r["ci_low"], r["ci_high"], r["verdict"] or ""]
        for d, metrics in rows.items()
        for m, r in metrics.items()
    ]
    lines = [
        "",
        "## Forgetting (continued adaptation)",
        "",
        f"Started from `{start_from}`. Each domain the model was trained on, re-scored on its test split with the "
        "weights the run started from (start) and ended with (end); `general`: the general benchmarks.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table:
        d, m, n, *values, verdict = row
        interval_and_values = [fmt(v) if v is not None else "-" for v in values]
        lines.append(f"| {d} | {m} | {n or '-'} | " + " | ".join(interval_and_values) + f" | {verdict or '-'} |")
    with (folder / "report.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    log_to_wandb(loggers, tables={"eval/forgetting": (header, table)})
    return folder / "forgetting.json"
