"""Write the refinement report of a run: findings with the config change to try, the tuned model's label
confusion, length and repetition problems, the learning-curve diagnosis and the largest per-example changes.

python scripts/analyze.py run_dir=outputs/train/2026-11-28/10-00-00_healthcare_lora

Every training run writes the same analysis.md itself; this rewrites it (e.g. with another `top=`) from the
run folder's files alone, without loading a model.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from domaintune.reporting.analysis import write_analysis
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task


def analyze(cfg: DictConfig) -> dict[str, float]:
    path = write_analysis(cfg.run_dir, int(cfg.top))
    print(path.read_text())
    print(f"Refinement report: {path}")
    return {}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="analyze")
def main(cfg: DictConfig) -> None:
    run_task(analyze, cfg)


if __name__ == "__main__":
    main()
