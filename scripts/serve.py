"""Serve the base model and tuned runs through an OpenAI-compatible API, with a web chat at http://127.0.0.1:8000/.

    python scripts/serve.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora
    python scripts/serve.py run_dir=multirun/2026-11-27/10-00-00 port=8080
    DOMAINTUNE_API_KEY=<secret> python scripts/serve.py run_dir=... host=0.0.0.0   # reachable from elsewhere
Any OpenAI client works: base_url=http://127.0.0.1:8000/v1, api_key=<the key, or anything without one>,
model=<an id from GET /v1/models>.
"""

from __future__ import annotations

import hydra
import uvicorn
from omegaconf import DictConfig

from domaintune.serving.registry import load_registry
from domaintune.serving.server import app_from_config, check_address
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


def serve(cfg: DictConfig) -> None:
    check_address(cfg)  # a public address without a key, or a taken port, stops here before anything loads
    models = load_registry(cfg)
    app = app_from_config(cfg, models)
    log.info(f"Serving {', '.join(models)} on http://{cfg.host}:{cfg.port}/ (web chat) and http://{cfg.host}:{cfg.port}/v1")
    # uvicorn's own access log would print nothing we need; ours (domaintune.access) has the model and no contents
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level="warning", access_log=False)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="serve")
def main(cfg: DictConfig) -> None:
    run_task(serve, cfg)


if __name__ == "__main__":
    main()
