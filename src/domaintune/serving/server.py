"""Build the API from a serve config, and run it in a background thread (the screenshot script and the tests
talk to a live server in the same process; scripts/serve.py runs it in the foreground with `uvicorn.run`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from omegaconf import DictConfig

from domaintune.serving.api import Defaults, Limits, create_app
from domaintune.serving.registry import ServedModel, load_registry
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError


def app_from_config(cfg: DictConfig, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The API with conf/serve.yaml's limits and defaults, over `models` (loaded from `cfg` when not given)."""
    models = load_registry(cfg) if models is None else models
    return create_app(models, Limits(**to_dict(cfg.limits)), Defaults(**to_dict(cfg.generation)))


@contextmanager
def running(app: FastAPI, host: str, port: int, timeout: float = 30) -> Iterator[str]:
    """Serve `app` on host:port in a daemon thread for the duration of the block; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise DomainTuneError(f"The server did not start on {host}:{port} within {timeout:g} s.", "Pick a free port (port=...).")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
