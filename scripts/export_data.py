"""Export a processed split as chat fine-tuning JSONL (the bridge to hosted fine-tuning such as OpenAI's).

python scripts/export_data.py data=customer_service format=openai output=cs_train.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from domaintune.models.loading import load_tokenizer
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.errors import unknown_option
from domaintune.utils.hydra import build, run_task

FORMATS = ("openai",)


def export(cfg: DictConfig) -> dict[str, float]:
    if cfg.format not in FORMATS:
        raise unknown_option("export format", cfg.format, FORMATS, "Set format=openai.")
    dm = build(cfg.data, tokenizer=load_tokenizer(cfg.model))
    dm.require(cfg.split)
    path = Path(cfg.output or Path(cfg.paths.output_dir) / f"{cfg.data.name}_{cfg.split}.{cfg.format}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in dm.records[cfg.split]:
            f.write(json.dumps({"messages": dm.conversation(rec)}, ensure_ascii=False) + "\n")
    print(f"Wrote {len(dm.records[cfg.split])} {cfg.split} conversations to {path}")
    return {"records": float(len(dm.records[cfg.split]))}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export_data")
def main(cfg: DictConfig) -> None:
    run_task(export, cfg)


if __name__ == "__main__":
    main()
