"""Run the data pipeline alone: load, preprocess, tokenise; print the audit and write data_report.json.

python scripts/prepare_data.py data=marketing paths.data_dir=../shared/data
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from domaintune.models.loading import load_tokenizer
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import build, run_task


def prepare(cfg: DictConfig) -> dict[str, float]:
    dm = build(cfg.data, tokenizer=load_tokenizer(cfg.model))
    dm.prepare()
    report = dm.write_report(cfg.paths.output_dir)
    print(f"Wrote {Path(cfg.paths.output_dir) / 'data_report.json'} and token_lengths.png")
    return {f"{split}/out": float(v["out"]) for split, v in report["summary"].items()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    run_task(prepare, cfg)


if __name__ == "__main__":
    main()
