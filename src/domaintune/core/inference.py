"""What the inference scripts share: reuse a training run's config, load its tuned model."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.models.loading import load_adapted, load_model
from domaintune.utils.config import fill_data, fill_eval, fill_missing
from domaintune.utils.errors import DomainTuneError

REUSED = ("model", "data", "eval")


def cli_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def with_run_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """With `run_dir` set, evaluate/chat/generate like that run: its model, data and eval configs and its
    data root are reused, except where the command line picks another option (`data=...`) or sets a key
    (`data.max_samples=...`, applied on top of the run's value)."""
    if not cfg.get("run_dir"):
        return cfg
    saved_path = Path(cfg.run_dir) / ".hydra" / "config.yaml"
    if not saved_path.exists():
        raise DomainTuneError(
            f"'{cfg.run_dir}' is not a training run folder (no .hydra/config.yaml).",
            "Pass the folder a training run printed at its end (outputs/train/<date>/<time>_<data>_<adapter>).",
        )
    saved = OmegaConf.load(saved_path)
    overrides = cli_overrides() if overrides is None else overrides
    chosen = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    with open_dict(cfg):
        for group in REUSED:
            if group in chosen or group not in saved or group not in cfg:
                continue
            node = saved[group]
            for o in overrides:
                key, _, value = o.lstrip("+~").partition("=")
                if key.startswith(group + "."):
                    OmegaConf.update(node, key[len(group) + 1 :], yaml.safe_load(value), merge=True, force_add=True)
            # a run saved by an older version: today's keys it lacks
            fill = {"data": fill_data, "eval": fill_eval}.get(group, fill_missing)
            cfg[group] = fill(node, cfg[group])
        for key in ("data_dir", "cache_dir"):
            if f"paths.{key}" not in chosen and key in saved.get("paths", {}):
                cfg.paths[key] = saved.paths[key]
    return cfg


def adapter_path(cfg: DictConfig) -> Path | None:
    if cfg.get("adapter_path"):
        path = Path(cfg.adapter_path)
    elif cfg.get("run_dir"):
        path = Path(cfg.run_dir) / "adapter"
    else:
        return None
    if not path.is_dir():
        raise DomainTuneError(
            f"There is no adapter at '{path}'.",
            "The run may have stopped before saving it: finish or resume it, or pass adapter_path=<dir>.",
        )
    return path


def load_for_inference(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path | None]:
    """The tuned model of `run_dir` / `adapter_path`, or the base model when neither is given."""
    path = adapter_path(cfg)  # fail on a bad path before spending time on the model
    model, tok = load_model(cfg.model)
    if path is not None:
        model = load_adapted(model, path)
    return model.eval(), tok, path
