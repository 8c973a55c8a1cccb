"""The web chat in a real headless browser (Debian's chromium driven by selenium): load the page, send one
prompt in the compare view, see both answers stream in side by side; the test saves a screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.devtools.browser import chromium_paths, compare, headless_chromium, screenshot
from tests.conftest import STRICT
from tests.serving.helpers import running, serve_cfg


@pytest.fixture
def browser():
    if chromium_paths() is None:
        if STRICT:  # .ci/run installs chromium: there a missing browser fails instead of skipping
            pytest.fail("chromium and chromedriver are required here: apt-get install -y chromium chromium-driver")
        pytest.skip("no chromium/chromedriver (apt-get install -y chromium chromium-driver); .ci/run installs them")
    driver = headless_chromium()
    yield driver
    driver.quit()


def test_compare_view_streams_base_and_tuned_answers_side_by_side(browser, tiny_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    cfg = serve_cfg(tiny_run, tmp_path, "generation.max_tokens=24", "generation.temperature=1.0")
    with running(cfg) as url:
        panes = compare(browser, url, "How do I plan a first lesson on fractions?", timeout=120)
        left = browser.find_element(By.CSS_SELECTOR, "#pane-left select").get_attribute("value")
        right = browser.find_element(By.CSS_SELECTOR, "#pane-right select").get_attribute("value")
        assert (left, right) == (tiny_run.name, "base"), "compare view: tuned on the left, base on the right"
        assert browser.find_element(By.ID, "system").get_attribute("value"), "the tuned run's system prompt is filled in"
        assert [p.get_attribute("data-state") for p in panes] == ["done", "done"]
        assert all(int(p.get_attribute("data-pieces") or 0) >= 2 for p in panes), "each answer arrived in streamed pieces"
        assert all("tokens/s" in s.text for s in browser.find_elements(By.CSS_SELECTOR, ".pane .stats"))
        shot = screenshot(browser, tmp_path / "compare.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cited_sentences_are_listed_under_a_cited_answer(browser, tiny_run: Path, tmp_path: Path) -> None:
    """The page's own citation code, in the browser: an answer "false [1, 3]" to a message with numbered
    sentences lists those sentences under the answer, and names a cited number the message does not have. The
    page also shows the run's prompt format (education: "Summarise in one sentence:" + <document>) as the
    prompt's placeholder, so a user asks the way the model learnt."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = serve_cfg(tiny_run, tmp_path)
    with running(cfg) as url:
        browser.get(url + "/")
        prompt = browser.find_element(By.ID, "prompt")
        WebDriverWait(browser, 30).until(lambda _: "<document>" in (prompt.get_attribute("placeholder") or ""))
        assert "Summarise in one sentence:" in prompt.get_attribute("placeholder")
        message = "Claim: masks help.\nAbstract:\n[1] First finding.\n[2] Unrelated.\n[3] Second finding."
        shown = browser.execute_script(
            "const out = bubble(panes[0], 'assistant', arguments[1]);return showCitations(out, arguments[0], arguments[1]);",
            message,
            "false [1, 3] [7]",
        )
        assert shown == 3
        items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#pane-left .cited li")]
        assert items == ["[1] First finding.", "[3] Second finding.", "[7] (your message has no sentence [7])"]
