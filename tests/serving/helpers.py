"""Helpers for the serving tests: build the registry from the real serve config and run uvicorn in a thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from domaintune.serving.registry import ServedModel
from domaintune.serving.server import app_from_config
from domaintune.serving.server import running as serve_running
from tests.conftest import compose_train


def serve_cfg(run_dir: Path, out: Path, *extra: str) -> DictConfig:
    return compose_train(["model=tiny", f"run_dir={run_dir}", *extra], out, config_name="serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cfg: DictConfig, models: dict[str, ServedModel] | None = None) -> Iterator[str]:
    """The API of the serve config on a free local port for the duration of the block; yields its base URL."""
    with serve_running(app_from_config(cfg, models), "127.0.0.1", free_port()) as url:
        yield url
