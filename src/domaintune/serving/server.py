"""Build the API from a serve config, and run it in a background thread (the screenshot script and the tests
talk to a live server in the same process; scripts/serve.py runs it in the foreground with `uvicorn.run`)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from omegaconf import DictConfig, ListConfig

from domaintune.serving.api import Defaults, Limits, create_app
from domaintune.serving.registry import ServedModel, load_registry
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError


def api_keys(cfg: DictConfig) -> list[str]:
    """serve.api_key as a list (one key, a list of keys, or none)."""
    raw = cfg.get("api_key")
    keys = [] if raw is None else [str(k) for k in raw] if isinstance(raw, ListConfig | list) else [str(raw)]
    blank = [k for k in keys if not k.strip()]
    if blank:
        raise DomainTuneError("api_key holds an empty key, which any client could send.", "Give real keys, or api_key=null.")
    return keys


def check_address(cfg: DictConfig) -> None:
    """Before any model loads: a non-loopback address needs a key, and the port must be free (found in a second,
    not after the minutes a model takes to load)."""
    host, port = str(cfg.host), int(cfg.port)
    if not api_keys(cfg) and not _loopback(host):
        raise DomainTuneError(
            f"host={host} makes the server reachable from other machines, and no api_key is set: anyone who can reach "
            f"port {port} could use it.",
            "Set api_key=<a secret> (or the environment variable DOMAINTUNE_API_KEY), or serve on host=127.0.0.1.",
        )
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DomainTuneError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                "Another server probably has that port: stop it, or pick another with port=<number>.",
            ) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def app_from_config(cfg: DictConfig, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The API with conf/serve.yaml's limits, defaults and keys, over `models` (loaded from `cfg` when not given)."""
    keys = api_keys(cfg)
    models = load_registry(cfg) if models is None else models
    return create_app(models, Limits(**to_dict(cfg.limits)), Defaults(**to_dict(cfg.generation)), keys)


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
