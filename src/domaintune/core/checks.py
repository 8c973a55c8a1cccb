"""Option combinations that cannot work, rejected before any model or data is loaded.

Each rule names the options involved and the fix. The hardware facts are arguments (not read inside the
rules) so that tests can walk every shipped trainer config through them on a CPU-only machine.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig

from domaintune.core.budget import parse_budget
from domaintune.data.packing import check_packing
from domaintune.data.recipe import DataRecipe
from domaintune.data.settings import Dedup, Pii
from domaintune.evaluation.settings import Bootstrap, Calibration, Generation, Selection
from domaintune.models.adapters import peft_config
from domaintune.models.checkpointing import Checkpointing
from domaintune.models.continual import check_init_from
from domaintune.models.objectives import Objective
from domaintune.utils.config import settings, to_dict
from domaintune.utils.errors import DomainTuneError, unread_keys
from domaintune.utils.hydra import build
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Hardware:
    gpus: int
    bf16_gpu: bool
    deepspeed_installed: bool

    @classmethod
    def here(cls) -> Hardware:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(gpus, gpus > 0 and torch.cuda.is_bf16_supported(), importlib.util.find_spec("deepspeed") is not None)


def strategy_name(strategy: Any) -> str:
    """'fsdp', 'deepspeed', 'ddp', ... from a strategy string or a `_target_` node."""
    if isinstance(strategy, dict | DictConfig):
        target = str(strategy.get("_target_", "")).rsplit(".", 1)[-1].lower()
        return target.removesuffix("strategy")
    return str(strategy or "auto").lower()


@dataclass(frozen=True)
class Checked:
    """What the checks built from the config, for the run to use as it is (not to build again)."""

    # the adapter's PEFT config (None for full/freeze fine-tuning)
    peft: PeftConfig | None
    # what training optimises (conf/objective)
    objective: Objective


def check_config(cfg: DictConfig, hw: Hardware | None = None) -> Checked:
    """Raise a DomainTuneError for the first combination of trainer, precision, adapter, objective and data
    options that cannot run on this hardware. Returns what it built on the way (the PEFT config, the
    objective): built here once, the run uses these same objects."""
    hw = hw or Hardware.here()
    check_keys(cfg)
    for where in _object_configs(cfg):
        if where.endswith("preprocess"):  # the typed blocks check their own values (data/settings.py)
            node = OmegaConf.select(cfg, where)
            settings(Pii, node.pii, f"{where}.pii")
            settings(Dedup, node.dedup, f"{where}.dedup")
    t = cfg.trainer
    strategy = strategy_name(t.get("strategy"))
    accelerator = str(t.accelerator).lower()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and hw.gpus > 0)
    devices = t.devices
    precision = str(t.precision)

    if accelerator in ("gpu", "cuda") and hw.gpus == 0:
        raise DomainTuneError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU, and none is visible to torch.",
            "Run on a machine with a GPU, or train on the CPU with trainer=default (or trainer.accelerator=cpu).",
        )
    if strategy.startswith(("fsdp", "deepspeed")) and not on_gpu:
        raise DomainTuneError(
            f"The {strategy} strategy shards the model across GPUs and does not run on the CPU "
            f"(trainer.accelerator={accelerator}).",
            "Use trainer=ddp trainer.accelerator=cpu for data parallelism on CPU cores, or run trainer=fsdp on GPUs.",
        )
    if strategy.startswith("deepspeed") and not hw.deepspeed_installed:
        raise DomainTuneError(
            "trainer=deepspeed needs the `deepspeed` package, which is not installed (it is not a DomainTune dependency: it "
            "builds CUDA kernels).",
            "Install it into this environment with `pip install deepspeed` (a CUDA toolkit must be present), "
            "or use trainer=fsdp.",
        )
    if on_gpu and isinstance(devices, int) and devices > hw.gpus:
        raise DomainTuneError(
            f"trainer.devices={devices} but {hw.gpus} GPU(s) are visible.",
            f"Set trainer.devices={hw.gpus} (or trainer.devices=auto).",
        )
    if not on_gpu and precision.startswith("16"):
        raise DomainTuneError(
            f"trainer.precision={precision} (fp16) on the CPU: fp16 matrix products are unusably slow on CPUs (one took 43 s).",
            "Use trainer.precision=auto (bf16 where the CPU has native bf16, else fp32).",
        )
    if on_gpu and precision.startswith("bf16") and not hw.bf16_gpu:
        raise DomainTuneError(
            f"trainer.precision={precision} but this GPU has no bf16 support.",
            "Use trainer.precision=auto (it picks 16-mixed there) or 32-true.",
        )
    clip_algorithm = str(t.gradient_clip_algorithm)
    if strategy.startswith("deepspeed") and t.get("gradient_clip_val") and clip_algorithm != "norm":
        raise DomainTuneError(
            f"DeepSpeed clips gradients by norm only (trainer.gradient_clip_algorithm={clip_algorithm}).",
            "Set trainer.gradient_clip_algorithm=norm or trainer.gradient_clip_val=null.",
        )
    if parse_budget(t.budget) is not None and (devices not in (1, "1") or strategy not in ("auto", "single_device")):
        raise DomainTuneError(
            f"trainer.budget={t.budget} plans the steps from one process's measured speed; with trainer.devices={devices} "
            f"(strategy {strategy}) the processes could plan different step counts.",
            "Use trainer.max_steps for multi-device runs (a budgeted single-device run's report gives its step count).",
        )
    Checkpointing.from_config(cfg.model)
    peft = peft_config(cfg.adapter)
    check_packing(cfg.data.get("packing"), bool(peft and peft.is_prompt_learning))
    check_init_from(cfg.adapter, peft)
    check_evaluation(cfg.eval)
    return Checked(peft, check_objective(cfg))


def check_objective(cfg: DictConfig) -> Objective:
    """The objective (its own checks run as it is built); a preference objective needs preference pairs, the
    choice objective a label set."""
    objective: Objective = build(cfg.objective)
    parts = cfg.data.get("components") or {}
    tasks = [c.task for c in parts.values()] if parts else [cfg.data.task]
    if objective.needs_choices:
        label_sets = {tuple(t.get("labels") or ()) for t in tasks}
        if () in label_sets or len(label_sets) != 1:
            raise DomainTuneError(
                f"objective=choice trains the choice among a task's labels, and data={cfg.data.name} "
                + ("has a task without a label set." if () in label_sets else "mixes tasks with different label sets."),
                "Use objective=choice with one label task (data.task.labels set, e.g. data=fact_checking), or objective=sft.",
            )
    elif objective.needs_pairs:
        types = {str(t.type) for t in tasks}
        if types != {"preference"}:
            raise DomainTuneError(
                f"objective={objective.name} trains on preference pairs, and data={cfg.data.name} has task type "
                f"{', '.join(sorted(types))}.",
                "Train on pairs: data=preferences (illustrative), pairs made from a run's own failures (python "
                "scripts/make_preferences.py run_dir=<an SFT run>, then data=custom data.dir=<its pairs folder> "
                "data.task.type=preference), or your own {prompt, chosen, rejected} files.",
            )
    if (objective.needs_pairs or objective.needs_choices) and cfg.data.get("packing") is True:
        rows = "a prompt and every label's answer" if objective.needs_choices else "chosen + rejected answers"
        raise DomainTuneError(
            f"data.packing=true with objective={objective.name}: its rows are {rows}, not packed.",
            "Use data.packing=auto or false.",
        )
    return objective


def _object_configs(cfg: DictConfig) -> list[str]:
    """The config nodes that `hydra.utils.instantiate` turns into DomainTune objects, by their full keys."""
    parts = [f"data.components.{name}.preprocess" for name in (cfg.data.get("components") or {})]
    return ["data", "data.preprocess", *parts, "eval", "optim", "module", "objective"]


def check_keys(cfg: DictConfig) -> None:
    """Each object config against its class's arguments: a misspelt or stale key (`+data.max_lenght=...`) is
    refused here, before anything loads, instead of failing when the object is built or, worse, being
    ignored. The DataModule takes its serving keys by name and the rest as its `DataRecipe`, which checks
    them (mixture components included)."""
    for where in _object_configs(cfg):
        node = OmegaConf.select(cfg, where)
        if not isinstance(node, DictConfig):
            continue
        if "_target_" not in node:  # e.g. `+data.components.x.preprocess.html=false` replaced the inherited block
            raise DomainTuneError(
                f"{where} is {to_dict(node)}: an override replaced the whole block (it lost `_target_` and every "
                "other key) instead of changing one key.",
                f"Change the key for every component (data.preprocess.<key>=...), or write a data config whose {where} "
                "block is complete (start from conf/data/_base.yaml).",
            )
        params = inspect.signature(get_object(node._target_)).parameters
        unknown = {str(k) for k in node if not str(k).startswith("_")} - set(params)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            DataRecipe.from_keys({k: node[k] for k in unknown}, where, ignore=frozenset(params))
        elif unknown:
            raise unread_keys(where, unknown, (k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)))


def check_evaluation(e: DictConfig) -> None:
    """Evaluation options that would otherwise fail only after training (or mean something else)."""
    if e.weights not in ("best", "last"):
        raise DomainTuneError(f"eval.weights={e.weights!r} is not an option.", "Use eval.weights=best or eval.weights=last.")
    # the typed blocks check their own values (evaluation/settings.py); built here, before anything loads
    settings(Selection, e.selection, "eval.selection")
    settings(Bootstrap, e.bootstrap, "eval.bootstrap")
    settings(Generation, e.generation, "eval.generation")
    settings(Calibration, e.calibration, "eval.calibration")
    splits = [e.split] if isinstance(e.split, str) else list(e.split)
    if not splits or len(set(splits)) != len(splits):
        raise DomainTuneError(
            f"eval.split={list(splits)} must name at least one split, each once.", "E.g. eval.split=[test,validation]."
        )
