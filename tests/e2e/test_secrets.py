"""Secrets given to a run (environment, command line) never reach any file the run writes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY, script


def test_secrets_never_reach_the_run_folder(tmp_path: Path) -> None:
    """Tokens in the environment or on the command line appear in no file of the run: Hydra's saved config
    and overrides, the logs, the reports, the CSV hyperparameters and the W&B (offline) config."""
    env = {"HF_TOKEN": "hf_ENVSECRET0123456789", "MY_SERVICE_KEY": "svc-ENVSECRET-abcdef"}
    cmd = ["train.py", *TINY, "logger=wandb", "+hf_token=hf_CLISECRET9876543210"]
    script(*cmd, f"paths.log_dir={tmp_path}", "eval.generation.max_samples=2", env=env)
    [run] = list(tmp_path.glob("train/*/*"))
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files) and any(p.suffix == ".wandb" for p in files)
    for p in files:
        blob = p.read_bytes()
        for secret in (b"ENVSECRET", b"CLISECRET"):
            assert secret not in blob, f"{secret.decode()} written to {p.relative_to(run)}"
    assert b"***" in (run / ".hydra" / "overrides.yaml").read_bytes()
