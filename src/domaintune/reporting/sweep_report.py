"""Turn a multirun folder into one comparison: a table (markdown + CSV), a heatmap and overlaid curves.

Jobs are read from their folders, so the report works while a sweep runs, after it crashed, or for jobs
launched elsewhere: a job is `ok` (metrics.json), `failed` (failure.json, with its error) or `incomplete`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from domaintune.reporting.report import direction
from domaintune.utils.errors import DomainTuneError

VALUES = ("relative_change", "change", "tuned", "base")
# `metric="primary"`: each job's own deciding metric (a cross-domain sweep compares token F1 in one row with
# macro-F1 in another, each against its own base model)
PRIMARY = "primary"
# read from each job's metrics.json besides the values: the paired bootstrap interval, its n and verdict
EVIDENCE = ("ci_low", "ci_high", "n", "verdict")


@dataclass
class Job:
    folder: Path
    num: int
    overrides: dict[str, str]
    data: str
    adapter: str
    status: str
    error: str = ""
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    # the job's primary metric (its data config's `primary_metric`), which `metric="primary"` stands for
    primary: str | None = None

    def name(self, metric: str) -> str:
        return (self.primary or "?") if metric == PRIMARY else metric

    def sign(self, metric: str) -> int:
        """+1 if higher is better for this job's `metric`, -1 if lower (the primary may be the loss)."""
        return direction(self.name(metric)) or 1

    def value(self, metric: str, kind: str) -> float | None:
        v = self.metrics.get(kind, {}).get(self.name(metric))
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    def verdict(self, metric: str) -> str:
        """`[low, high] verdict` of the change, or `-` for jobs of older versions / descriptive metrics."""
        low, high, verdict = (self.metrics.get(k, {}).get(self.name(metric)) for k in ("ci_low", "ci_high", "verdict"))
        return f"[{low:.4g}, {high:.4g}] {verdict or ''}".strip() if low is not None and high is not None else "-"


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    return dict(o.lstrip("+~").split("=", 1) for o in items or [] if "=" in o)


def _names(folder: Path, scored: Any = None) -> tuple[str, str]:
    """data and adapter names from the job's saved config (their values are plain strings there). A
    `scripts/evaluate.py` job scored a saved run: its own config is the defaults, so the names come from the run it
    scored (`scored`: the adapter folder named in its metrics.json, inside that run's folder)."""
    run = Path(str(scored)).parent if scored and "/" in str(scored) else None
    source = run if run is not None and (run / ".hydra" / "config.yaml").exists() else folder
    cfg = yaml.safe_load((source / ".hydra" / "config.yaml").read_text()) or {}
    return str((cfg.get("data") or {}).get("name", "?")), str((cfg.get("adapter") or {}).get("name", "?"))


def _curve(folder: Path, key: str = "val/loss") -> list[tuple[int, float]]:
    """The validation curve from curves.json (every run of this version, any logger), else the CSV log."""
    if (folder / "curves.json").exists():
        return [(int(s), float(v)) for s, v in json.loads((folder / "curves.json").read_text()).get(key, [])]
    path = folder / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key) not in (None, "")]


def _job_order(folder: Path) -> tuple[int, str]:
    head = folder.name.split("_")[0]
    return (int(head), "") if head.isdigit() else (-1, folder.name)


def collect(sweep: Path) -> list[Job]:
    if not sweep.is_dir():
        raise DomainTuneError(f"The sweep folder '{sweep}' does not exist.", "Pass outputs/multirun/<date>/<time>.")
    jobs = []
    # multirun jobs are numbered folders (`3_data=...`); any other folder of run folders (e.g. a day of
    # single runs, outputs/train/<date>) is reported too, its runs numbered in name order
    folders = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=_job_order)
    for k, folder in enumerate(folders):
        num = int(folder.name.split("_")[0]) if folder.name.split("_")[0].isdigit() else k
        payload = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else None
        data, adapter = _names(folder, (payload or {}).get("adapter"))
        job = Job(folder, num, _overrides(folder), data, adapter, "incomplete", curve=_curve(folder))
        if (folder / "failure.json").exists():
            job.status, job.error = "failed", json.loads((folder / "failure.json").read_text())["error"]
        elif payload is not None:
            job.status, job.metrics = "ok", {k: payload.get(k, {}) for k in (*VALUES, *EVIDENCE)}
            job.primary = payload.get("primary")
        jobs.append(job)
    if not jobs:
        raise DomainTuneError(f"'{sweep}' holds no job folders (with .hydra/).", "Pass the folder a multirun printed.")
    return jobs


def varying(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs: what the sweep compares."""
    keys = sorted({k for j in jobs for k in j.overrides})
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def _fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f}%" if kind == "relative_change" else f"{v:.4g}"


def best_per_cell(jobs: list[Job], metric: str, kind: str) -> dict[tuple[str, str], Job]:
    """The best finished job for each (data, adapter), by the metric's direction (extra sweep axes collapse)."""
    best: dict[tuple[str, str], Job] = {}
    for j in jobs:
        v = j.value(metric, kind)
        if j.status != "ok" or v is None:
            continue
        cell = (j.data, j.adapter)
        if cell not in best or j.sign(metric) * v > j.sign(metric) * best[cell].value(metric, kind):  # type: ignore[operator]
            best[cell] = j
    return best


def heatmap(jobs: list[Job], metric: str, kind: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datas = sorted({j.data for j in jobs})
    adapters = sorted({j.adapter for j in jobs})
    best = best_per_cell(jobs, metric, kind)
    grid = np.full((len(datas), len(adapters)), np.nan)
    # each job's own primary may run either way (the loss): its changes are turned so that up is better
    turned = metric == PRIMARY and kind in ("change", "relative_change")
    for (d, a), j in best.items():
        scale = (100 if kind == "relative_change" else 1) * (j.sign(metric) if turned else 1)
        grid[datas.index(d), adapters.index(a)] = j.value(metric, kind) * scale  # type: ignore[operator]
    sign = 1 if metric == PRIMARY else direction(metric) or 1
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(adapters), 1.2 + 0.7 * len(datas)))
    finite = grid[np.isfinite(grid)]
    if kind in ("change", "relative_change"):  # centred on "no change", so the colour says better or worse
        lim = float(np.abs(finite).max()) if finite.size else 1.0
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    # green = better whatever the metric's direction; the colour bar keeps the real values
    im = ax.imshow(grid, cmap="RdYlGn" if sign > 0 else "RdYlGn_r", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(adapters)), adapters)
    ax.set_yticks(range(len(datas)), datas)
    for r in range(len(datas)):
        for c in range(len(adapters)):
            failed = any(j.status != "ok" for j in jobs if (j.data, j.adapter) == (datas[r], adapters[c]))
            text = "failed" if np.isnan(grid[r, c]) and failed else ("-" if np.isnan(grid[r, c]) else f"{grid[r, c]:+.1f}")
            dark = np.isfinite(grid[r, c]) and abs(im.norm(grid[r, c]) - 0.5) > 0.35  # deep red/green cell
            ax.text(c, r, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    unit = " (%)" if kind == "relative_change" else ""
    ax.set_title(f"{metric}: {kind.replace('_', ' ')} vs base{unit}")
    fig.colorbar(im, ax=ax, label="green = better (higher is better)" if sign > 0 else "green = better (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(jobs: list[Job], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for j in jobs:
        if j.curve:
            steps, values = zip(*j.curve, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=f"{j.num}: {j.data}/{j.adapter}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss (answer tokens)")
    ax.set_title("Validation loss per job")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rows(jobs: list[Job], metrics: list[str]) -> tuple[list[str], list[list[Any]]]:
    keys = varying(jobs)
    columns = ["job", "status", "data", "adapter", *keys]
    for m in metrics:
        columns += [f"{k}/{m}" for k in ("base", "tuned", "change", "relative_change", *EVIDENCE)]
    columns.append("error")
    table = []
    for j in jobs:
        row: list[Any] = [j.num, j.status, j.data, j.adapter, *[j.overrides.get(k, "") for k in keys]]
        for m in metrics:
            row += [j.value(m, k) for k in ("base", "tuned", "change", "relative_change", *EVIDENCE)]
        table.append([*row, j.error])
    return columns, table


def write(sweep: Path, metric: str = PRIMARY, kind: str = "relative_change", wandb_log: bool = True) -> dict[str, Path]:
    """Write sweep_report.{md,csv}, sweep_heatmap.png and sweep_curves.png into the sweep folder."""
    if kind not in VALUES:
        raise DomainTuneError(f"Unknown value kind '{kind}'.", f"Use one of {', '.join(VALUES)}.")
    jobs = collect(sweep)
    known = sorted({m for j in jobs for m in j.metrics.get("tuned", {})})
    if metric == PRIMARY and not any(j.primary for j in jobs if j.status == "ok"):
        raise DomainTuneError(
            "metric=primary, but no finished job names its primary metric (runs of an older version).",
            f"Name a metric instead, one of: {', '.join(known)}.",
        )
    if known and metric != PRIMARY and metric not in known:
        raise DomainTuneError(f"No job has the metric '{metric}'.", f"Choose one of: {', '.join(known)}.")
    # the CSV (and the W&B table) hold every metric; loss, perplexity and the chosen one first
    primaries = [j.primary for j in jobs if j.primary]
    shown = list(dict.fromkeys([*primaries, *[m for m in ("loss", "perplexity", metric) if m in known or not known], *known]))
    columns, table = rows(jobs, shown)
    with (sweep / "sweep_report.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(table)
    heat = heatmap(jobs, metric, kind, sweep / "sweep_heatmap.png")
    curve = curves(jobs, sweep / "sweep_curves.png")

    keys = varying(jobs)
    # runs that vary neither data nor adapter in their overrides (e.g. a folder of single runs) are labelled by both
    shown_keys = keys if {"data", "adapter"} & set(keys) else ["data / adapter", *keys]
    lines = [
        f"# Sweep report: `{sweep}`",
        "",
        f"{sum(j.status == 'ok' for j in jobs)} ok, {sum(j.status == 'failed' for j in jobs)} failed, "
        f"{sum(j.status == 'incomplete' for j in jobs)} incomplete; varying: {', '.join(keys) or '-'}.",
        "",
        f"| job | {' | '.join(shown_keys)} | status | metric | base | tuned | change | relative | 95% interval, verdict |",
        "|---|" + "---|" * len(shown_keys) + "---|---|---:|---:|---:|---:|---|",
    ]
    for j in jobs:
        vals = [_fmt(j.value(metric, k), k) for k in ("base", "tuned", "change", "relative_change")]
        over = " | ".join(j.overrides.get(k, f"{j.data} / {j.adapter}" if k == "data / adapter" else "") for k in shown_keys)
        lines.append(f"| {j.num} | {over} | {j.status} | {j.name(metric)} | {' | '.join(vals)} | {j.verdict(metric)} |")
    best = best_per_cell(jobs, metric, kind)
    if best:
        winner = max(best.values(), key=lambda j: j.sign(metric) * j.value(metric, kind))  # type: ignore[operator]
        lines += [
            "",
            f"Best {kind.replace('_', ' ')} of {metric}: job {winner.num} ({winner.data} / {winner.adapter}), "
            f"{_fmt(winner.value(metric, kind), kind)}.",
        ]
    task = [m for m in known if m.startswith(("gen/", "choice/", "mc/")) and direction(m) and m != metric]  # lengths: descriptive
    if task:
        lines += ["", "## Task metrics (base → tuned)", ""]
        for j in jobs:
            pairs = [
                f"{m} {_fmt(j.value(m, 'base'), 'base')} → {_fmt(j.value(m, 'tuned'), 'tuned')} ({j.verdict(m)})"
                for m in task
                if j.value(m, "tuned") is not None
            ]
            lines.append(f"- job {j.num} ({j.data} / {j.adapter}): " + ("; ".join(pairs) or "-"))
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        lines += ["", "## Failed jobs", ""] + [f"- job {j.num} (`{j.folder.name}`): {j.error}" for j in failed]
    lines += [
        "",
        f"![heatmap]({heat.name}) ![curves]({curve.name})",
        "",
        f"Heatmap: {metric} {kind.replace('_', ' ')} of the tuned model against the base model, by data (rows) and "
        "adapter (columns), best job per cell; green is better. Curves: validation loss during training.",
        "All columns of every metric: sweep_report.csv.",
    ]
    (sweep / "sweep_report.md").write_text("\n".join(lines) + "\n")
    if wandb_log:
        _to_wandb(sweep, columns, table, heat, curve)
    return {"md": sweep / "sweep_report.md", "csv": sweep / "sweep_report.csv", "heatmap": heat, "curves": curve}


def _to_wandb(sweep: Path, columns: list[str], table: list[list[Any]], heat: Path, curve: Path) -> None:
    import wandb

    from domaintune.utils.loggers import wandb_mode

    run = wandb.init(
        project="domaintune",
        group=f"sweep-{sweep.parent.name}_{sweep.name}",
        job_type="sweep_report",
        name=f"report-{sweep.parent.name}_{sweep.name}",
        dir=str(sweep),
        mode=wandb_mode(),
    )
    run.log(
        {
            "sweep/table": wandb.Table(columns=columns, data=table),  # None marks a metric a job lacks
            "sweep/heatmap": wandb.Image(str(heat)),
            "sweep/curves": wandb.Image(str(curve)),
        }
    )
    run.finish()
