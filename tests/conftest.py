"""Shared fixtures: an isolated cache, offline W&B, and the real Hydra config composed for the tiny model."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

# before anything imports huggingface_hub / datasets: they read the offline switch once, at import time
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from domaintune.utils.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# the domains with a data config, shipped samples and a real dataset in ../shared/data
DOMAINS = ["healthcare", "marketing", "education", "fact_checking", "customer_service", "finance"]

# Fast settings for the tiny model: few records, short generations, a few steps, no W&B network.
TINY = [
    "model=tiny",
    "data.max_samples=24",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "eval.max_samples=8",
    "eval.generation.max_samples=8",
    "eval.generation.num_samples=2",
    "eval.generation.max_new_tokens=4",
    # exact comparisons (merged vs unmerged, cached vs fresh) hold on every CPU in full precision
    "eval.precision=32-true",
    "trainer.max_steps=3",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache per test session (the tiny model and tokenizer are built once), W&B offline and quiet."""
    saved = dict(os.environ)
    os.environ["DOMAINTUNE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each, no contention
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    yield
    os.environ.clear()
    os.environ.update(saved)


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml exactly as `python train.py` would, with its Hydra node set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def cfg_tiny(tmp_path: Path) -> DictConfig:
    return compose_train([*TINY, "logger=csv"], tmp_path)


@pytest.fixture
def make_cfg(tmp_path: Path):
    """Factory: compose the tiny config with extra overrides (later ones win)."""

    def make(*extra: str, output_dir: Path | None = None) -> DictConfig:
        return compose_train([*TINY, *extra], output_dir or tmp_path)

    return make


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's real tokenizer and chat template (extracted from the embedded GGUF once per session)."""
    from domaintune.models.loading import load_tokenizer

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["model=tiny"])
    return load_tokenizer(cfg.model)


def wandb_blob(path: Path, expected: bytes, timeout: float = 60) -> bytes:
    """The bytes of an offline W&B run file once `expected` is in it: W&B's service process writes the file
    and can lag behind `wandb.finish()` on a loaded machine (seen in CI as a header-only file)."""
    import time

    deadline = time.time() + timeout
    while expected not in (blob := path.read_bytes()) and time.time() < deadline:
        time.sleep(0.5)
    return blob


# .ci/run sets this: there a missing development dependency (lm-eval, chromium) fails its tests instead of
# skipping them, so a broken extra cannot turn an equality test into a silent skip
STRICT = os.environ.get("DOMAINTUNE_CI") == "1"


def require(module: str, how: str) -> Any:
    """Import a development dependency: skipped locally when it is missing, a failure under CI."""
    if STRICT:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(f"{module} is required under CI ({how}): {exc}")
    return pytest.importorskip(module, reason=f"{module} is not installed ({how})")


def script(
    *args: str,
    stdin: str | None = None,
    ok: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess:
    """Run a repository script as a user would (`python <script> ...` from the repository root): every test
    that runs a script goes through here or `start`. `env` adds to the environment."""
    out = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, **(env or {})},
    )
    if ok:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def start(*args: str, env: dict[str, str] | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start a repository script in the background (a server, a run to be killed), output merged into stdout."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=new_session,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `python train.py` run of the tiny model (Hydra saves its config there, as for users), shared by
    the inference-script and serving tests. Tests must not write into it."""
    logs = tmp_path_factory.mktemp("logs")
    script("train.py", *TINY, "logger=none", "optim.lr=1e-2", "data=education", f"paths.log_dir={logs}")
    [out] = list(logs.glob("train/*/*"))
    return out


def expected_verdict(low: float, high: float, higher_is_better: bool) -> str:
    """The verdict a change's interval implies, written out independently of evaluation/evidence.py: a test that
    compares the reported verdict with this one catches a verdict that does not follow from its interval."""
    if low <= 0 <= high:
        return "no detectable change"
    return "better" if (low > 0) == higher_is_better else "worse"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write records as JSON lines (the data tests' source files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_rows(n: int) -> list[dict]:
    """n distinct question/answer records."""
    return [{"question": f"What is item {i}?", "answer": f"Item {i} is a thing number {i}."} for i in range(n)]
