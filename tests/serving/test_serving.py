"""scripts/serve.py's API with the official openai client: models, streamed and whole answers, OpenAI's
options and errors, bounded size and concurrency, and a load test that loses no request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
from omegaconf import OmegaConf

from domaintune.serving.engine import StopScanner
from domaintune.serving.registry import load_registry
from domaintune.utils.errors import DomainTuneError
from tests.conftest import script, start
from tests.serving.helpers import running, serve_cfg

HI = [{"role": "user", "content": "What is a lesson plan?"}]


@pytest.fixture(scope="module")
def served(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = serve_cfg(tiny_run, tmp_path_factory.mktemp("serve"), "limits.max_concurrent=2", "limits.max_tokens=64")
    models = load_registry(cfg)
    with running(cfg, models) as url:
        yield url, models, cfg


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_base_and_each_tuned_run(served, client, tiny_run: Path) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {"base", tiny_run.name}
    info = listed[tiny_run.name].model_extra["domaintune"]
    assert info["kind"] == "tuned" and info["data"] == "education" and info["adapter"] == "lora"
    trained = OmegaConf.load(tiny_run / ".hydra" / "config.yaml").data.task.system_prompt
    assert trained and info["system_prompt"] == trained, "the run's own system prompt, not the serve config's"
    # its task, and how its questions were asked in training (the web chat's placeholder)
    assert info["task_type"] == "summarization"
    assert info["prompt_format"] == "Summarise in one sentence:\n\n<document>"


def test_answer_is_the_models_own_greedy_continuation_of_the_training_rendering(served, client, tiny_run: Path) -> None:
    """Same rendering as training (the run's system prompt is added when the request has none) and the
    same greedy tokens as calling generate on the served model directly."""
    _, models, _ = served
    model = models[tiny_run.name]
    reply = client.chat.completions.create(model=tiny_run.name, messages=HI, max_tokens=6, temperature=0)
    ids = model.renderer.prompt_ids([{"role": "system", "content": model.system_prompt}, *HI])
    with torch.inference_mode():
        out = model.model.generate(
            input_ids=torch.tensor([ids]),
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=model.renderer.stop_token_ids(),
            pad_token_id=model.tokenizer.pad_token_id,
        )
    expected = model.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == out.shape[1] - len(ids)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.model == tiny_run.name


def test_stream_gives_the_same_text_in_pieces_then_usage(client) -> None:
    whole = client.chat.completions.create(model="base", messages=HI, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="base", messages=HI, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content and len(deltas) >= 2
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 12


def test_stop_strings_end_the_answer_and_are_left_out(client) -> None:
    ask = {"model": "base", "messages": HI, "max_tokens": 24, "temperature": 1.0, "seed": 7}  # seeded: varied, repeatable
    full = client.chat.completions.create(**ask).choices[0].message.content
    stop = full.strip()[len(full.strip()) // 2 :][:3]
    cut = full[: full.find(stop)]
    assert stop.strip() and cut, full
    for stream in (False, True):
        if stream:
            pieces = client.chat.completions.create(**ask, stop=[stop], stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        else:
            reply = client.chat.completions.create(**ask, stop=stop)
            text = reply.choices[0].message.content
            assert reply.choices[0].finish_reason == "stop"
        assert text == cut, (stream, stop, full)


def test_sampling_honours_temperature_top_p_and_seed(client) -> None:
    ask = {"model": "base", "messages": HI, "max_tokens": 12, "temperature": 1.5, "top_p": 1.0}
    a = client.chat.completions.create(**ask, seed=1).choices[0].message.content
    assert a == client.chat.completions.create(**ask, seed=1).choices[0].message.content, "a seed makes sampling repeatable"
    others = {client.chat.completions.create(**ask, seed=s).choices[0].message.content for s in (2, 3, 4)}
    assert others - {a}, "temperature > 0 samples"


def test_stop_scanner_holds_back_a_stop_string_split_over_pieces() -> None:
    scanner = StopScanner(["END"])
    out = [scanner.feed(t) for t in ["Hello E", "N", "D and more"]]
    assert "".join(out) == "Hello " and scanner.stopped and scanner.flush() == ""
    plain = StopScanner([])
    assert plain.feed("abc") == "abc" and plain.flush() == ""


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        ({"model": "nope"}, 404, "GET /v1/models lists: base"),
        ({"temperature": 3}, 400, "temperature"),
        ({"logprobs": True}, 400, "logprobs: not supported"),
        ({"n": 2}, 400, "n:"),
        ({"max_tokens": 65}, 400, "limit of 64 tokens"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
        ({"messages": [{"role": "user", "content": "word " * 3000}]}, 400, "exceeds the model's context"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(served, extra: dict, status: int, words: str) -> None:
    body = {"model": "base", "messages": HI, **extra}
    res = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=60)
    assert res.status_code == status and words in res.json()["error"]["message"], res.text


def test_oversized_and_malformed_bodies(served, client) -> None:
    url = served[0] + "/v1/chat/completions"
    big = json.dumps({"model": "base", "messages": [{"role": "user", "content": "x" * 300_000}]})
    res = httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=60)
    assert res.status_code == 413 and "at most 262144" in res.json()["error"]["message"]

    def chunked():  # no Content-Length: the server must count while reading
        for _ in range(40):
            yield b"x" * 10_000

    res = httpx.post(url, content=chunked(), timeout=60)
    assert res.status_code == 413
    res = httpx.post(url, content=b"{not json", timeout=60)
    assert res.status_code == 400 and "Invalid chat request" in res.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="base", messages=HI, presence_penalty=0.5)


def test_a_full_queue_answers_503_and_recovers(tiny_run: Path, tmp_path: Path) -> None:
    """One slot, no waiting line: while a generation holds the slot, the next request is refused (503 with
    Retry-After) instead of piling up; once it finishes, requests are served again."""
    cfg = serve_cfg(tiny_run, tmp_path, "limits.max_concurrent=1", "limits.max_queue=0")
    models = load_registry(cfg)
    release, entered = threading.Event(), threading.Event()
    original = models["base"].model.generate

    def held(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    models["base"].model.generate = held
    body = {"model": "base", "messages": HI, "max_tokens": 3}
    with running(cfg, models) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=60)
        assert entered.wait(30)
        busy = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]["message"]
        release.set()
        assert first.result().status_code == 200
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert httpx.get(url + "/health").json()["busy"] == 0


def test_a_client_that_leaves_mid_stream_frees_its_slot(served) -> None:
    url = served[0]
    body = {"model": "base", "messages": HI, "max_tokens": 64, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as res:
        next(res.iter_lines())
    deadline = time.time() + 30
    while httpx.get(url + "/health").json()["busy"] and time.time() < deadline:
        time.sleep(0.1)
    assert httpx.get(url + "/health").json()["busy"] == 0


def test_load_50_requests_8_at_once_loses_none(served, client, tiny_run: Path) -> None:
    """Under load every request gets its own answer: greedy, so each must equal the answer the same request
    gets alone (a lost, swapped or truncated answer differs), streamed or not."""

    def one(i: int) -> str:
        model = "base" if i % 2 else tiny_run.name
        ask = {"model": model, "messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": 8, "temperature": 0}
        if i % 3 == 0:
            chunks = list(client.chat.completions.create(**ask, stream=True))
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
            return "".join(c.choices[0].delta.content or "" for c in chunks)
        reply = client.chat.completions.create(**ask)
        assert reply.usage.completion_tokens >= 1
        return reply.choices[0].message.content

    alone = [one(i) for i in range(50)]  # one at a time: both models, streamed and not (i % 3 == 0)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(50)))
    differ = [i for i in range(50) if answers[i] != alone[i]]
    assert not differ, f"requests {differ} answered differently under load than alone"
    assert httpx.get(served[0] + "/health").json()["busy"] == 0


def test_serve_script_refuses_a_folder_without_runs(tmp_path: Path) -> None:
    out = script("scripts/serve.py", f"run_dir={tmp_path}", "model=tiny", f"paths.log_dir={tmp_path}", ok=False)
    assert out.returncode == 1 and "neither a training run folder" in out.stdout + out.stderr


def test_serve_script_answers_the_openai_client(tiny_run: Path, tmp_path: Path) -> None:
    """The README's command: `python scripts/serve.py run_dir=<run>`, then any OpenAI client."""
    from tests.serving.helpers import free_port

    port = free_port()
    proc = start("scripts/serve.py", f"run_dir={tiny_run}", "model=tiny", f"port={port}", f"paths.log_dir={tmp_path}")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.stdout.read()[-3000:]  # type: ignore[union-attr]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model=tiny_run.name, messages=HI, max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens >= 1 and "<html" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_run_dir_takes_runs_and_sweep_folders(tiny_run: Path, tmp_path: Path) -> None:
    """A sweep folder stands for each of its jobs that saved an adapter (a failed job has none)."""
    import shutil

    from domaintune.serving.registry import run_dirs

    sweep = tmp_path / "multirun"
    for job in ("0_education_lora", "1_education_ia3"):
        shutil.copytree(tiny_run / ".hydra", sweep / job / ".hydra")
        (sweep / job / "adapter").mkdir()
    shutil.copytree(tiny_run / ".hydra", sweep / "2_failed" / ".hydra")
    assert run_dirs([str(sweep)]) == [sweep / "0_education_lora", sweep / "1_education_ia3"]
    assert run_dirs([str(tiny_run), str(sweep)])[0] == tiny_run
    with pytest.raises(DomainTuneError, match="neither a training run folder"):
        run_dirs([str(tmp_path / "nothing")])
