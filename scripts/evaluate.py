"""Evaluate a training run, an adapter or the base model with the same Evaluator that training uses.

python scripts/evaluate.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora eval.split=test
python scripts/evaluate.py data=education eval.general=piqa            # the base model only
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from domaintune.core.checks import check_evaluation, check_keys
from domaintune.core.inference import adapter_path, with_run_config
from domaintune.evaluation.evaluator import Evaluator
from domaintune.models.loading import load_adapted, load_model, model_identity
from domaintune.models.loss import LossOptions
from domaintune.reporting.publish import publish
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import build, run_task


def evaluate(cfg: DictConfig) -> dict[str, float]:
    cfg = with_run_config(cfg)
    check_keys(cfg)  # before anything loads, as a training run does
    check_evaluation(cfg.eval)
    path = adapter_path(cfg)
    model, tok = load_model(cfg.model)
    dm = build(cfg.data, tokenizer=tok)
    evaluator: Evaluator = build(cfg.eval, data=dm, loss=LossOptions.from_config(cfg.model), model_key=model_identity(cfg.model))
    base = evaluator.check_primary(evaluator.run(model, "base")) if cfg.compare_base or path is None else None
    tuned = evaluator.check_primary(evaluator.run(load_adapted(model, path), "tuned")) if path is not None else None
    info = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "adapter": str(path) if path else "none (base model)",
        "split": ", ".join(evaluator.splits),
    }
    title = f"{cfg.data.name}: {evaluator.split} split" + (", base vs tuned" if base and tuned else "")
    _, flat = publish(Path(cfg.paths.output_dir), base, tuned, info, evaluator, title)
    print(f"Report: {Path(cfg.paths.output_dir) / 'report.md'}")
    return flat


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
