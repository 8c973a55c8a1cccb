"""Export a training run's tuned model (adapter merged) as GGUF, an Ollama model, or merged Hugging Face weights.

python scripts/export.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora format=gguf quantization=q8_0
python scripts/export.py run_dir=<run> format=ollama      # then: ollama create my-model -f <run>/export-ollama/Modelfile
python scripts/export.py run_dir=<run> format=hf          # = scripts/merge.py
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from domaintune.core.inference import with_run_config
from domaintune.export.merged import export
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(lambda c: export(with_run_config(c)), cfg)


if __name__ == "__main__":
    main()
