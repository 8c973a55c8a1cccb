"""Which models a server answers for: the base model and every tuned run it was given, each loaded once.

A tuned run is served with its own copy of the base weights (adapter merged in when it can be), so requests
to different models never wait on an adapter switch and the base model stays untouched for the compare view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.inference import load_for_inference, with_run_config
from domaintune.data.chat import ChatRenderer, renderer_for
from domaintune.data.formats import Task
from domaintune.models.adapters import base_model, is_prompt_learning
from domaintune.models.loading import load_model, model_identity
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class ServedModel:
    """One model the API answers for, with what it needs to render prompts exactly as in training."""

    id: str
    kind: str  # "base" or "tuned"
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    renderer: ChatRenderer
    system_prompt: str | None
    context_length: int
    info: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def stop_ids(self) -> list[int]:
        """The ids that end an answer, found once (the renderer renders a probe conversation to find them)."""
        return self.renderer.stop_token_ids()

    def describe(self) -> dict[str, Any]:
        """The entry of GET /v1/models: OpenAI's fields plus what the web chat shows."""
        return {
            "id": self.id,
            "object": "model",
            "created": int(self.info.get("created", 0)),
            "owned_by": "domaintune",
            "domaintune": {"kind": self.kind, "system_prompt": self.system_prompt, **self.info},
        }


def run_dirs(paths: list[str]) -> list[Path]:
    """Training run folders from run folders and/or sweep folders (a folder whose subfolders are runs)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / ".hydra" / "config.yaml").exists():
            found.append(path)
            continue
        children = sorted(p.parent.parent for p in path.glob("*/.hydra/config.yaml") if (p.parent.parent / "adapter").is_dir())
        if not children:
            raise DomainTuneError(
                f"'{raw}' is neither a training run folder (with .hydra/config.yaml) nor a sweep folder of runs with adapters.",
                "Pass run_dir=<the folder a training run printed at its end> or a multirun folder "
                "(multirun/<date>/<time>); several: run_dir='[<run1>,<run2>]'.",
            )
        found.extend(children)
    return found


def _served(
    id_: str, kind: str, model: torch.nn.Module, tok: PreTrainedTokenizerBase, cfg: DictConfig, info: dict[str, Any]
) -> ServedModel:
    mergeable = isinstance(model, PeftModel) and not is_prompt_learning(model)
    if kind == "tuned" and bool(cfg.serve.merge_adapter) and mergeable:
        # serving never trains: fold the adapter in for good, so the tuned model answers as fast as the base
        model = model.merge_and_unload()
    model.eval()
    base = base_model(model)
    renderer = renderer_for(cfg.data, tok)
    if kind == "tuned":
        # how the run's questions were asked, and its task (the web chat lists a cited fact-check's sources)
        task = Task(**to_dict(cfg.data.task))
        info = {**info, "task_type": task.type, "prompt_format": task.prompt_format()}
    return ServedModel(
        id=id_,
        kind=kind,
        model=model,
        tokenizer=tok,
        renderer=renderer,
        system_prompt=cfg.data.task.get("system_prompt") or None,
        context_length=int(getattr(base.config, "max_position_embeddings", renderer.max_length)),
        info=info,
    )


def load_registry(cfg: DictConfig) -> dict[str, ServedModel]:
    """The base model of each distinct model config (once) and every tuned run of `cfg.run_dir`.

    Ids: `base` (or `base-<model name>` when runs use several base models) and each run's folder name
    (with its parent's name when two runs share a folder name, as sweep jobs `0`, `1`... do).
    """
    paths = cfg.run_dir if OmegaConf.is_list(cfg.run_dir) else [cfg.run_dir] if cfg.run_dir else []
    runs = run_dirs([str(p) for p in paths])
    run_cfgs = []
    for run in runs:
        one = cfg.copy()
        with open_dict(one):
            one.run_dir = str(run)
            one.adapter_path = None
        run_cfgs.append(with_run_config(one, overrides=[]))
    bases: dict[str, DictConfig] = {}
    for c in run_cfgs or [cfg]:
        bases.setdefault(model_identity(c.model), c)
    served: dict[str, ServedModel] = {}
    for c in bases.values():
        id_ = "base" if len(bases) == 1 else f"base-{c.model.name}"
        model, tok = load_model(c.model)
        served[id_] = _served(id_, "base", model, tok, c, {"model": str(c.model.name)})
    names = [r.name for r in runs]
    for run, c in zip(runs, run_cfgs, strict=True):
        id_ = run.name if names.count(run.name) == 1 else f"{run.parent.name}-{run.name}"
        model, tok, path = load_for_inference(c)
        info = {
            "model": str(c.model.name),
            "data": str(c.data.name),
            "adapter": _saved_adapter_name(run),
            "run_dir": str(run),
            "created": int(path.stat().st_mtime) if path else 0,
        }
        served[id_] = _served(id_, "tuned", model, tok, c, info)
        log.info(f"Serving {id_}: {info['adapter']} on {info['data']} from {run}")
    return served


def _saved_adapter_name(run: Path) -> str:
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    return str(saved.get("adapter", {}).get("name", ""))
