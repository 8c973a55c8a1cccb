"""A guarded server: API keys checked on every endpoint but the chat page (official openai client: no key, wrong
key, right key), a public address refused without a key and a taken port found before any model loads, OpenAI-
shaped errors for every path and method, text-part contents, and an access log without contents or keys."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import script
from tests.serving.helpers import free_port, running, serve_cfg

HI = [{"role": "user", "content": "Hello"}]
KEY = "sk-test-9f8e7d"


@pytest.fixture(scope="module")
def guarded(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = serve_cfg(tiny_run, tmp_path_factory.mktemp("guarded"), f"api_key=[{KEY},second-key]", "generation.max_tokens=4")
    with running(cfg) as url:
        yield url


def test_requests_need_a_right_key(guarded: str, caplog: pytest.LogCaptureFixture) -> None:
    for key, error in (("unused", "The API key is not valid"), (KEY + "x", "The API key is not valid")):
        client = openai.OpenAI(base_url=guarded + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match=error):
            client.models.list()
    no_key = httpx.post(guarded + "/v1/chat/completions", json={"model": "base", "messages": HI}, timeout=30)
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    assert "No API key was given" in no_key.json()["error"]["message"]
    assert httpx.get(guarded + "/health", timeout=30).status_code == 401, "every endpoint but the page"
    assert "<html" in httpx.get(guarded + "/", timeout=30).text, "the chat page itself loads, then asks for the key"
    with caplog.at_level(logging.INFO, logger="domaintune.access"):
        for key in (KEY, "second-key"):
            client = openai.OpenAI(base_url=guarded + "/v1", api_key=key, max_retries=0)
            reply = client.chat.completions.create(model="base", messages=HI, temperature=0)
            assert reply.choices[0].message.content is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "domaintune.access"]
    assert any(line.startswith("POST /v1/chat/completions 200") and "model=base" in line for line in lines), lines
    assert not any(KEY in line or "Hello" in line for line in lines), "no key and no message contents in the log"


def test_every_path_and_method_answers_in_openais_shape(guarded: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    missing = httpx.get(guarded + "/v1/nothing", headers=auth, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(guarded + "/v1/chat/completions", headers=auth, timeout=30)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_content_as_text_parts_is_read_and_other_parts_refused(guarded: str) -> None:
    client = openai.OpenAI(base_url=guarded + "/v1", api_key=KEY, max_retries=0)
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    as_parts = client.chat.completions.create(model="base", messages=parts, temperature=0)
    as_text = client.chat.completions.create(model="base", messages=HI, temperature=0)
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with pytest.raises(openai.BadRequestError, match="image_url are not supported"):
        client.chat.completions.create(model="base", messages=image)


def test_a_public_address_without_a_key_and_a_taken_port_stop_before_loading(tiny_run: Path, tmp_path: Path) -> None:
    started = time.time()
    out = script("scripts/serve.py", f"run_dir={tiny_run}", "model=tiny", "host=0.0.0.0", f"paths.log_dir={tmp_path}", ok=False)
    assert out.returncode == 1 and "host=0.0.0.0 makes the server reachable" in out.stdout + out.stderr
    assert "Set api_key=" in out.stdout + out.stderr and "Serving" not in out.stdout + out.stderr
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        out = script(
            "scripts/serve.py", f"run_dir={tiny_run}", "model=tiny", f"port={port}", f"paths.log_dir={tmp_path}", ok=False
        )
    assert out.returncode == 1 and f"Cannot listen on 127.0.0.1:{port}" in out.stdout + out.stderr
    assert "pick another with port=" in out.stdout + out.stderr
    assert time.time() - started < 60, "both refused without loading a model"
