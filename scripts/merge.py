"""Merge a LoRA-family adapter into its base model and save a standard Hugging Face model directory, with its card.

python scripts/merge.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora
(the same as `python scripts/export.py run_dir=<run> format=hf`, written to <run>/merged by default)
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from domaintune.core.inference import adapter_path, with_run_config
from domaintune.export.merged import export
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task


def merge(cfg: DictConfig) -> dict[str, float]:
    cfg = with_run_config(cfg)
    with open_dict(cfg):
        cfg.format = "hf"
        if not cfg.get("output") and (cfg.get("run_dir") or cfg.get("adapter_path")):
            cfg.output = str(Path(str(adapter_path(cfg))).parent / "merged")
    export(cfg)
    return {}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="merge")
def main(cfg: DictConfig) -> None:
    run_task(merge, cfg)


if __name__ == "__main__":
    main()
