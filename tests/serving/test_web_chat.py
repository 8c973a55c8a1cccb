"""The web chat in a real headless browser (Debian's chromium driven by selenium): load the page, send one
prompt in the compare view, see both answers stream in side by side; the test saves a screenshot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scripts.devtools.browser import chromium_paths, compare, headless_chromium, screenshot
from tests.conftest import STRICT
from tests.serving.helpers import running, serve_cfg


def _require_chromium() -> None:
    if chromium_paths() is None:
        if STRICT:  # .ci/run installs chromium: there a missing browser fails instead of skipping
            pytest.fail("chromium and chromedriver are required here: apt-get install -y chromium chromium-driver")
        pytest.skip("no chromium/chromedriver (apt-get install -y chromium chromium-driver); .ci/run installs them")


@pytest.fixture
def browser():
    _require_chromium()
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


def _no_horizontal_scroll_and_panes_visible(driver, expected: int) -> None:
    from selenium.webdriver.common.by import By

    width = driver.execute_script("return document.documentElement.clientWidth")
    assert width == expected, "the viewport the test meant"
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width, "no horizontal scrolling"
    for pane in driver.find_elements(By.CSS_SELECTOR, ".pane"):
        box = pane.rect
        assert box["width"] > 100 and box["height"] > 100 and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, box
        for inner in pane.find_elements(By.CSS_SELECTOR, ".pane-head *"):
            right = inner.rect["x"] + inner.rect["width"]
            assert right <= box["x"] + box["width"] + 1, "nothing spills out of its pane"


@pytest.mark.parametrize("width", [1280, 420])
def test_compare_layout_at_desktop_and_phone_width(tiny_run: Path, tmp_path: Path, width: int) -> None:
    _require_chromium()
    driver = headless_chromium(width=width, height=800)
    # a headless window is at least ~500 px wide: emulate the phone's viewport itself
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 700}
    )
    try:
        cfg = serve_cfg(tiny_run, tmp_path, "generation.max_tokens=8", "generation.temperature=0")
        with running(cfg) as url:
            compare(driver, url, "Hello there", timeout=120)
            _no_horizontal_scroll_and_panes_visible(driver, width)
            screenshot(driver, tmp_path / f"compare-{width}.png")
    finally:
        driver.quit()


def test_stop_keeps_the_partial_answer_and_frees_the_server(browser, tiny_run: Path, tmp_path: Path) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = serve_cfg(tiny_run, tmp_path, "generation.temperature=1.0", "limits.max_tokens=1024")
    with running(cfg) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "status").text.endswith("models"))
        browser.find_element(By.ID, "max-tokens").send_keys("1024")
        browser.find_element(By.ID, "prompt").send_keys("Write a very long story")
        browser.find_element(By.ID, "send").click()
        answer = browser.find_element(By.CSS_SELECTOR, "#pane-left .msg.assistant")
        wait.until(lambda _: int(answer.get_attribute("data-pieces") or 0) >= 2)
        assert browser.find_element(By.ID, "send").text == "Stop"
        browser.find_element(By.ID, "send").click()
        wait.until(lambda _: answer.get_attribute("data-state") == "stopped")
        assert browser.find_element(By.ID, "send").text == "Send"
        assert "stopped after" in browser.find_element(By.CSS_SELECTOR, "#pane-left .stats").text
        deadline = time.time() + 30
        while httpx.get(url + "/health").json()["busy"] and time.time() < deadline:
            time.sleep(0.2)
        assert httpx.get(url + "/health").json()["busy"] == 0, "the server stopped generating when the page left"
        # the conversation survives a reload, the partial answer included
        kept = answer.text
        browser.refresh()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pane-left .msg")) == 2)
        assert browser.find_elements(By.CSS_SELECTOR, "#pane-left .msg.assistant")[0].text == kept


def test_answers_render_markdown_but_never_the_models_html(browser, tiny_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with running(serve_cfg(tiny_run, tmp_path)) as url:
        browser.get(url + "/")
        html = browser.execute_script(
            "return bubble(panes[0], 'assistant', arguments[0]).innerHTML",
            '<img src=x onerror="window.hacked=1"> **bold** and `code`\n- one\n- two\n```\n<b>x</b>\n```',
        )
        assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<li>one</li>" in html
        assert "&lt;img" in html and "&lt;b&gt;x&lt;/b&gt;" in html
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg img, .msg b")
        assert browser.execute_script("return window.hacked") is None
