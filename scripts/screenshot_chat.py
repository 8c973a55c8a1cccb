"""Screenshot the web chat's compare view (the README's picture): serve the runs, ask one prompt, save a PNG.

    python scripts/screenshot_chat.py run_dir=<run> prompt="What are the symptoms of anemia?" output=docs/compare_view.png
Needs chromium and chromedriver (apt-get install -y chromium chromium-driver) and selenium (the dev extra).
"""

from __future__ import annotations

import hydra
from devtools.browser import compare, headless_chromium, screenshot
from omegaconf import DictConfig

from domaintune.serving.server import app_from_config, running
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


def shoot(cfg: DictConfig) -> None:
    with running(app_from_config(cfg), str(cfg.host), int(cfg.port)) as url:
        driver = headless_chromium(int(cfg.width), int(cfg.height))
        try:
            compare(driver, url, str(cfg.prompt))
            log.info(f"Saved {screenshot(driver, cfg.output)}")
        finally:
            driver.quit()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="screenshot_chat")
def main(cfg: DictConfig) -> None:
    run_task(shoot, cfg)


if __name__ == "__main__":
    main()
