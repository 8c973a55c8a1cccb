"""Helpers for the serving tests: build the registry from the real serve config and run uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from omegaconf import DictConfig

from domaintune.serving.api import Defaults, Limits, create_app
from domaintune.serving.registry import ServedModel, load_registry
from domaintune.utils.config import to_dict
from tests.conftest import compose_train


def serve_cfg(run_dir: Path, out: Path, *extra: str) -> DictConfig:
    return compose_train(["model=tiny", f"run_dir={run_dir}", *extra], out, config_name="serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cfg: DictConfig, models: dict[str, ServedModel] | None = None) -> Iterator[str]:
    """The API on a free local port for the duration of the block; yields its base URL."""
    models = models if models is not None else load_registry(cfg)
    app = create_app(models, Limits(**to_dict(cfg.limits)), Defaults(**to_dict(cfg.generation)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
