"""Continued adaptation: start training from an earlier run's adapter (`adapter.init_from`).

The earlier adapter must have been trained with the same adapter settings as configured now (a LoRA of rank
8 cannot continue as rank 16); the check reads only small JSON files, so a mismatch fails before any model
or data loads and names every differing setting. Each run records its lineage (`lineage.json`: the data
configs every earlier stage trained on), which the forgetting check re-scores after the new training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn

from domaintune.utils.config import fill_data, to_dict
from domaintune.utils.errors import DomainTuneError

# PEFT config fields that record where/how an adapter was saved, not what it is
BOOKKEEPING = {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping", "task_type"}


def adapter_dir(init_from: str) -> Path:
    """The adapter folder of `init_from`: a training run folder (its `adapter/`) or an adapter folder itself."""
    path = Path(init_from)
    for candidate in (path / "adapter", path):
        if (candidate / "adapter_config.json").exists() or (candidate / "config.json").exists():
            return candidate
    raise DomainTuneError(
        f"adapter.init_from='{init_from}' holds no adapter (adapter_config.json) or model (config.json), nor does its "
        "adapter/ folder.",
        "Pass a finished training run folder (outputs/train/<date>/<time>_<data>_<adapter>) or the adapter folder in it.",
    )


def saved_kind(path: Path) -> str:
    return "peft" if (path / "adapter_config.json").exists() else "weights"


def check_init_from(adapter: DictConfig, peft_config: Any | None) -> Path | None:
    """The adapter folder to start from, after checking it matches the configured adapter (or None)."""
    if not adapter.get("init_from"):
        return None
    path = adapter_dir(str(adapter.init_from))
    kind = saved_kind(path)
    if (adapter.kind == "peft") != (kind == "peft"):
        saved = "a PEFT adapter" if kind == "peft" else "whole-model weights (adapter=full or freeze)"
        raise DomainTuneError(
            f"adapter.init_from='{adapter.init_from}' holds {saved}, but this run is configured as adapter={adapter.name} "
            f"(kind {adapter.kind}).",
            "Continue with the adapter config the earlier run used (see its .hydra/config.yaml), e.g. adapter=lora.",
        )
    if kind != "peft":
        return path
    saved = json.loads((path / "adapter_config.json").read_text())
    wanted = peft_config.to_dict()
    differ = []
    for key, value in wanted.items():
        if key in BOOKKEEPING or key not in saved:
            continue
        if key == "target_modules" and value == "all-linear":
            continue  # PEFT saves the modules all-linear resolved to; the names are checked when the weights load
        mine = sorted(value) if isinstance(value, list | set | tuple) else value
        theirs = sorted(saved[key]) if isinstance(saved[key], list) else saved[key]
        if mine != theirs:
            differ.append(f"{key}: saved {theirs!r}, configured {mine!r}")
    if differ:
        raise DomainTuneError(
            f"adapter.init_from='{adapter.init_from}' was trained with other adapter settings than this run's "
            f"adapter={adapter.name}: {'; '.join(differ)}.",
            "Set the same values (e.g. adapter.peft.r=<saved>) to continue that adapter, or drop adapter.init_from to "
            "start a new one.",
        )
    return path


def start_from(model: nn.Module, path: Path, trainable: bool = True) -> nn.Module:
    """Load the earlier adapter (trainable) onto the base model, or its whole-model weights into it."""
    if saved_kind(path) == "peft":
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise DomainTuneError(f"adapter.init_from: '{path}' has config.json but no .safetensors weights.", "Pass a complete run.")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied heads are not saved
    if real_missing or unexpected:
        raise DomainTuneError(
            f"adapter.init_from: the weights in '{path}' do not fit this model ({len(real_missing)} missing, "
            f"{len(unexpected)} unexpected, e.g. {(real_missing + unexpected)[:3]}).",
            "Continue with the same model config the earlier run used (model=...).",
        )
    return model


def lineage(init_from: str | None, data: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Every domain the model has been trained on, oldest first: the earlier run's lineage (when init_from is a
    run folder that has one) plus this run's data (a mixture counts as its components)."""
    earlier: list[dict[str, Any]] = []
    if init_from:  # a run folder, or the adapter folder inside one
        folders = (Path(init_from), Path(init_from).parent)
        files = [p / "lineage.json" for p in folders if (p / "lineage.json").exists()]
        runs = [p for p in folders if (p / ".hydra" / "config.yaml").exists()]
        if files:
            earlier = json.loads(files[0].read_text())
        elif runs:  # a run written before lineage.json existed: its own data is its lineage
            saved = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
            earlier = [{"name": str(d.name), "run_dir": str(runs[0]), "data": _portable(d)} for d in _parts(saved.data)]
    return [*earlier, *({"name": str(d.name), "run_dir": str(run_dir), "data": _portable(d)} for d in _parts(data))]


def _parts(data: DictConfig) -> list[DictConfig]:
    """A data config's domains: a mixture's components, else itself."""
    return [data.components[k] for k in data.components] if data.get("components") else [data]


def _portable(data: DictConfig) -> dict[str, Any]:
    """A resolved data config whose relative folders are made absolute (a later run may start elsewhere)."""
    spec = to_dict(data)
    if spec.get("dir") and Path(spec["dir"]).exists():
        spec["dir"] = str(Path(spec["dir"]).resolve())
    return spec


def latest_per_domain(entries: list[dict[str, Any]], today: DictConfig) -> dict[str, DictConfig]:
    """One data config per domain name (the most recent stage's), in first-seen order; an entry written by an
    older version gets the keys it lacks from `today` (this run's data config, mixture keys left out)."""
    out: dict[str, DictConfig] = {}
    for e in entries:
        out[e["name"]] = fill_data(OmegaConf.create(e["data"]), today)
    return out
