"""Compare two runs' tuned models on the same test examples, with paired bootstrap intervals.

python scripts/compare.py run_a=outputs/train/<date>/<run A> run_b=outputs/train/<date>/<run B>

Reads each run's per_example.jsonl (no model is loaded); refused, naming the difference, when the two were
scored on different examples. Writes comparison.md / comparison.json in its own run folder and prints them.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from domaintune.evaluation.settings import Bootstrap
from domaintune.reporting.compare import compare_runs, worse_metrics, write_comparison
from domaintune.reporting.report import print_table
from domaintune.utils.config import CONFIG_DIR, settings
from domaintune.utils.hydra import run_task


def run(cfg: DictConfig) -> dict[str, float]:
    rows, primary = compare_runs(cfg.run_a, cfg.run_b, settings(Bootstrap, cfg.eval.bootstrap, "eval.bootstrap"))
    title = f"{Path(cfg.run_b).name} (run_b) vs {Path(cfg.run_a).name} (run_a)"
    path = write_comparison(Path(cfg.paths.output_dir), rows, title, primary, {"run_a": str(cfg.run_a), "run_b": str(cfg.run_b)})
    print_table(rows, title=title)
    worse = worse_metrics(rows)
    if worse:
        print(f"Worse beyond doubt in run_b: {', '.join(worse)}")
    print(f"Comparison: {path}")
    return {f"change/{k}": r["change"] for k, r in rows.items() if r["change"] is not None}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="compare")
def main(cfg: DictConfig) -> None:
    run_task(run, cfg)


if __name__ == "__main__":
    main()
