"""Drive the web chat in headless Chromium (selenium): the browser test and scripts/screenshot_chat.py share it.

Selenium is a development extra (`pip install -e '.[dev]'`); Chromium and its driver come from the system
(`apt-get install -y chromium chromium-driver`). The driver is given explicitly, because Selenium Manager
would try to download one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from domaintune.utils.errors import DomainTuneError


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1280, height: int = 800) -> Any:
    paths = chromium_paths()
    if paths is None:
        raise DomainTuneError(
            "Chromium and chromedriver were not found on PATH.",
            "Install them: apt-get install -y chromium chromium-driver (Debian/Ubuntu).",
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.set_page_load_timeout(60)
    return driver


ANSWERS = "#pane-left .msg.assistant, #pane-right .msg.assistant"


def compare(driver: Any, url: str, prompt: str, timeout: float = 600) -> list[Any]:
    """Open the compare view, send `prompt` to both panes, wait until both answers finished; returns them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url.rstrip("/") + "/?compare=1")
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.ID, "status").text.endswith("models"))
    driver.find_element(By.ID, "prompt").send_keys(prompt)
    driver.find_element(By.ID, "send").click()
    wait.until(
        lambda d: (
            {e.get_attribute("data-state") for e in d.find_elements(By.CSS_SELECTOR, ANSWERS)} <= {"done", "error"}
            and len(d.find_elements(By.CSS_SELECTOR, ANSWERS)) == 2
        )
    )
    return driver.find_elements(By.CSS_SELECTOR, ANSWERS)


def screenshot(driver: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise DomainTuneError(f"The browser could not write a screenshot to '{path}'.", "Check that the folder is writable.")
    return path
