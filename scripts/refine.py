"""Run the changes a run's refinement report suggests and measure each against the original run.

python scripts/refine.py run_dir=outputs/train/<date>/<time>_healthcare_lora
python scripts/refine.py run_dir=<run> 'overrides=["trainer.budget=null","trainer.max_steps=70"]' max_changes=2

For each finding of the run's analysis.json that names overrides, a new run repeats the original with that
change (same data, seed and settings); refinement.md then compares each refined tuned model with the
original tuned model on the same test examples (paired intervals) and says which change to keep.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from domaintune.core.refine import refine, write_refinement
from domaintune.evaluation.settings import Bootstrap
from domaintune.utils.config import CONFIG_DIR, settings
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import run_task


def run(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(str(cfg.run_dir))
    if not run_dir.is_dir():
        raise DomainTuneError(
            f"run_dir '{run_dir}' is not a folder.", "Pass a training run's folder: run_dir=outputs/train/<date>/<run>."
        )
    out = Path(cfg.paths.output_dir)
    max_changes = int(cfg.max_changes) if cfg.max_changes is not None else None
    only = [str(t) for t in cfg.only] if cfg.only else None
    trials = refine(
        run_dir,
        out,
        [str(o) for o in cfg.overrides],
        max_changes,
        settings(Bootstrap, cfg.eval.bootstrap, "eval.bootstrap"),
        only,
    )
    path = write_refinement(out, run_dir, trials)
    print(path.read_text())
    print(f"Refinement: {path}")
    return {f"gain/{t.topic}": t.gain for t in trials if t.gain is not None}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="refine")
def main(cfg: DictConfig) -> None:
    run_task(run, cfg)


if __name__ == "__main__":
    main()
