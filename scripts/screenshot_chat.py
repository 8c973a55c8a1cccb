"""Screenshot the web chat's compare view (the README's picture): serve the runs, ask one prompt, save a PNG.

    python scripts/screenshot_chat.py run_dir=<run> prompt="What are the symptoms of anemia?" output=docs/compare_view.png
Needs chromium and chromedriver (apt-get install -y chromium chromium-driver) and selenium (the dev extra).
"""

from __future__ import annotations

import threading
import time

import hydra
import uvicorn
from omegaconf import DictConfig

from domaintune.serving.api import Defaults, Limits, create_app
from domaintune.serving.browser import compare, headless_chromium, screenshot
from domaintune.serving.registry import load_registry
from domaintune.utils.config import CONFIG_DIR, to_dict
from domaintune.utils.hydra import run_task
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


def shoot(cfg: DictConfig) -> None:
    app = create_app(load_registry(cfg), Limits(**to_dict(cfg.limits)), Defaults(**to_dict(cfg.generation)))
    server = uvicorn.Server(uvicorn.Config(app, host=str(cfg.host), port=int(cfg.port), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.1)
    driver = headless_chromium(int(cfg.width), int(cfg.height))
    try:
        compare(driver, f"http://{cfg.host}:{cfg.port}", str(cfg.prompt))
        log.info(f"Saved {screenshot(driver, cfg.output)}")
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=30)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="screenshot_chat")
def main(cfg: DictConfig) -> None:
    run_task(shoot, cfg)


if __name__ == "__main__":
    main()
