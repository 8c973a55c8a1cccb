"""Preference pairs from a finished run's own failures on its training split, for objective=dpo / orpo.

    python scripts/make_preferences.py run_dir=outputs/train/<date>/<time>_healthcare_lora
    python train.py objective=dpo adapter.init_from=<run_dir> data=preferences data.dir=<run_dir>/preferences ...

The command to train on the pairs (with the run's own metrics and adapter) is printed at the end.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from domaintune.core.inference import with_run_config
from domaintune.core.preferences import Choice, failures, write_pairs
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task


def make(cfg: DictConfig) -> dict[str, float]:
    cfg = with_run_config(cfg)
    choice = Choice(
        max_records=cfg.max_records,
        worst_share=float(cfg.worst_share),
        validation_share=float(cfg.validation_share),
        seed=int(cfg.seed),
        label_balance=bool(cfg.label_balance),
    )
    pairs, audit = failures(cfg, choice)
    out = Path(cfg.output) if cfg.get("output") else Path(cfg.run_dir) / "preferences"
    write_pairs(out, pairs, audit)
    metrics = ",".join(cfg.eval.metrics) if not isinstance(cfg.eval.metrics, str) else cfg.eval.metrics
    if metrics == "auto":  # the run's own task metrics, so the preference run reports what the run reported
        from domaintune.evaluation.metrics import DEFAULTS

        metrics = ",".join(DEFAULTS[str(cfg.data.task.type)])
    adapter = OmegaConf.load(Path(cfg.run_dir) / ".hydra" / "config.yaml").adapter.name
    print(f"Pairs: {audit['pairs']} (skipped: {audit['skipped']}); audit in {out / 'pairs_audit.json'}")
    print(
        "Train on them, continuing the run's adapter:\n"
        f"  python train.py objective=dpo adapter={adapter} adapter.init_from={cfg.run_dir} data=preferences "
        f"data.dir={out} 'eval.metrics=[{metrics}]' data.max_length={audit['max_length']}"
        + (" 'data.task.labels=[" + ",".join(f'"{x}"' for x in audit["labels"]) + "]'" if audit["labels"] else "")
    )
    return {k: float(v) for k, v in audit["pairs"].items()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="make_preferences")
def main(cfg: DictConfig) -> None:
    run_task(make, cfg)


if __name__ == "__main__":
    main()
