"""Merge a LoRA-family adapter into its base model and save a standard Hugging Face model directory.

python scripts/merge.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig
from peft import PeftModel

from domaintune.core.inference import load_for_inference, with_run_config
from domaintune.models.adapters import is_prompt_learning
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import run_task


def merge(cfg: DictConfig) -> dict[str, float]:
    cfg = with_run_config(cfg)
    if not (cfg.get("run_dir") or cfg.get("adapter_path")):
        raise DomainTuneError("merge needs an adapter.", "Pass run_dir=<training run folder> or adapter_path=<adapter folder>.")
    model, tok, path = load_for_inference(cfg)
    if not isinstance(model, PeftModel):
        raise DomainTuneError(
            f"'{path}' is already a whole model (full or freeze fine-tuning): there is nothing to merge.",
            "Load that folder directly with AutoModelForCausalLM.from_pretrained.",
        )
    if is_prompt_learning(model):
        raise DomainTuneError(
            f"A {model.active_peft_config.peft_type} adapter adds virtual tokens and cannot be merged into weights.",
            "Keep using it with PeftModel, or train a LoRA-family adapter to merge.",
        )
    merged = model.merge_and_unload()
    out = Path(cfg.output) if cfg.get("output") else path.parent / "merged"
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"Merged model saved to {out} (load it with AutoModelForCausalLM.from_pretrained)")
    return {}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="merge")
def main(cfg: DictConfig) -> None:
    run_task(merge, cfg)


if __name__ == "__main__":
    main()
