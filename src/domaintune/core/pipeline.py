"""The flow of one run: check the options, build the objects from config, evaluate the base model, fine-tune,
evaluate again, write the report, model card, lineage and forgetting check. `domaintune.train` is the
Hydra entry point that calls `train()` here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from domaintune.core.budget import TimeBudget, parse_budget
from domaintune.core.callbacks import (
    BestWeights,
    FirstStepTime,
    GenerationMetrics,
    LearningCurves,
    RandomState,
    SaveOnInterrupt,
    Stopwatch,
)
from domaintune.core.checks import check_config
from domaintune.core.inference import cli_overrides
from domaintune.data.audit_report import audit_rows
from domaintune.data.datamodule import DomainDataModule
from domaintune.data.recipe import DataRecipe
from domaintune.evaluation.evaluator import EvalResult, Evaluator
from domaintune.evaluation.forgetting import Forgetting, write_forgetting
from domaintune.evaluation.generation import model_device
from domaintune.models.adapters import apply_adapter, base_model, compile_blocks, parameter_counts, save_adapter
from domaintune.models.checkpointing import Checkpointing, apply_checkpointing
from domaintune.models.continual import latest_per_domain, lineage
from domaintune.models.loading import base_model_id, load_model, model_identity, trained_weights
from domaintune.models.loss import LossOptions
from domaintune.models.module import CausalLMModule
from domaintune.reporting.model_card import write_model_card
from domaintune.reporting.publish import publish
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hardware import autocast_for, resolve_precision
from domaintune.utils.hydra import build, instantiate_all
from domaintune.utils.loggers import log_artifacts, log_to_wandb
from domaintune.utils.logging import get_logger
from domaintune.utils.secrets import redact

log = get_logger(__name__)


# trainer keys that DomainTune reads (the time budget) and Lightning's Trainer does not take
BUDGET_KEYS = ("budget", "budget_warmup_steps", "budget_measure_steps", "budget_eval_factor", "budget_margin_s")


def build_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    loggers = instantiate_all(cfg.get("logger"))
    callbacks = instantiate_all(cfg.get("callbacks")) + list(extra_callbacks or [])
    if not loggers:  # logger=none: Lightning refuses a learning-rate monitor with nowhere to log
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    lightning = OmegaConf.create({k: v for k, v in to_dict(cfg.trainer).items() if k not in BUDGET_KEYS})
    return instantiate(lightning, logger=loggers or False, callbacks=callbacks, precision=precision)


def time_budget(
    cfg: DictConfig, base: EvalResult | None, started: float | None = None, base_evaluation_s: float = 0.0
) -> TimeBudget | None:
    """The `trainer.budget` callback, planning the tuned evaluation from the base evaluation's measured time
    (kept in the base-result cache, so a cached base still informs the plan). `base_evaluation_s`: the wall time
    this run spent on the base evaluation (about 0 when cached), the one part of its setup the budget leaves out."""
    seconds = parse_budget(cfg.trainer.budget)
    if seconds is None or base is None:
        return None
    # the base evaluation's time with its generation replaced by the worst case (every answer to the limit)
    base_s = base.seconds or 0.0
    worst = base_s - base.timing.get("generation_s", 0.0) + base.timing.get("generation_worst_s", 0.0)
    estimate = float(cfg.trainer.budget_eval_factor) * max(worst, base_s)
    return TimeBudget(
        seconds,
        estimate,
        int(cfg.trainer.budget_warmup_steps),
        int(cfg.trainer.budget_measure_steps),
        run_started=started,
        excluded_s=base_evaluation_s,
        margin_s=float(cfg.trainer.budget_margin_s),
    )


@dataclass
class Run:
    """Everything a finished run produced (tests and scripts inspect it)."""

    trainer: pl.Trainer
    module: CausalLMModule
    datamodule: DomainDataModule
    rows: dict[str, dict[str, Any]]
    flat: dict[str, float]


def prepare_training(
    cfg: DictConfig, callbacks: list[pl.Callback] | None = None, base_eval: bool = True, started: float | None = None
) -> tuple[pl.Trainer, CausalLMModule, DomainDataModule, Evaluator, EvalResult | None]:
    """Everything before `trainer.fit`: model, data (+ audit), base evaluation, adapter, module, trainer.

    scripts/benchmark.py times training through this same function (with `base_eval=False`), so the
    benchmark measures the code a run executes, not a copy of it. `started` (a `time.time()`): when the run
    began, for `trainer.budget` (default: now).
    """
    started = time.time() if started is None else started
    checked = check_config(cfg)  # impossible option combinations fail here, before anything loads
    peft, objective = checked.peft, checked.objective
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_zero = rank_zero_only.rank == 0
    pl.seed_everything(cfg.seed, workers=True)
    clock = Stopwatch()

    model, tokenizer = load_model(cfg.model)
    clock.lap("model")
    dm: DomainDataModule = build(
        cfg.data,
        tokenizer=tokenizer,
        packing_allowed=not (peft and peft.is_prompt_learning),
        pairs=objective.needs_pairs,
        choices=objective.needs_choices,
    )
    dm.prepare()
    data_report = dm.write_report(out) if is_zero else None
    clock.lap("data")

    loss = LossOptions.from_config(cfg.model)
    evaluator: Evaluator = build(cfg.eval, data=dm, loss=loss, model_key=model_identity(cfg.model))
    # The base model is scored before any adapter exists: prompt/prefix tuning change outputs from step 0.
    # a primary metric this evaluation does not report is refused here, before any training time is spent.
    # A preference run that continues an adapter (DPO after SFT) is judged against the model it starts from,
    # so its "before" is scored after that adapter is loaded (below), never from the base-model cache.
    from_start = objective.needs_pairs and bool(cfg.adapter.get("init_from"))
    base = evaluator.check_primary(evaluator.run(model, "base")) if is_zero and base_eval and not from_start else None
    clock.lap("base evaluation")

    # Re-seed: the adapter's random init (and everything after) must not depend on whether the base
    # evaluation came from the cache or consumed random numbers (found by the kill-and-resume test).
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = apply_adapter(model, cfg.adapter, peft)
    long_batches = apply_checkpointing(base_model(model), Checkpointing.from_config(cfg.model))
    if from_start and is_zero and base_eval:
        base = evaluator.check_primary(evaluator.run(model, "start"))
        clock.lap("start evaluation")
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.model.compile:
        compile_blocks(model)
    identity = {
        "model": model_identity(cfg.model),
        "adapter": json.dumps(to_dict(cfg.adapter), sort_keys=True, default=str),
        "data": dm.fingerprint(),
        "objective": json.dumps(to_dict(cfg.objective), sort_keys=True, default=str),
    }
    # DPO: the reference log-probabilities of every pair under the policy as training starts (once, before fit),
    # in the precision training runs in, so the policy and its reference agree at the first step
    with autocast_for(cfg.trainer.precision, model_device(model)):
        objective.prepare(model, dm, loss)
    module: CausalLMModule = build(cfg.module, model=model, loss=loss, identity=identity, objective=objective)
    every = evaluator.generation_settings.every_n_epochs
    during: list[pl.Callback] = [GenerationMetrics(evaluator, int(every))] if every else []
    budget = time_budget(cfg, base, started, clock.laps.get("base evaluation", 0.0) + clock.laps.get("start evaluation", 0.0))
    during += [budget] if budget else []
    during += [long_batches] if long_batches else []
    trainer = build_trainer(cfg, extra_callbacks=[*during, FirstStepTime(clock), *(callbacks or [])])
    for lg in trainer.loggers:  # W&B / CSV config: no token or key values; the data fingerprint ties results to data
        lg.log_hyperparams({**redact(to_dict(cfg)), "data_fingerprint": dm.fingerprint()})
    if data_report is not None:
        log_to_wandb(
            trainer.loggers,
            tables={"data/audit": audit_rows(data_report)},
            images={"data/token_lengths": out / "token_lengths.png"},
        )
    return trainer, module, dm, evaluator, base


def fit_and_evaluate(cfg: DictConfig, callbacks: list[pl.Callback] | None = None, started: float | None = None) -> Run | None:
    """Base evaluation, fit, tuned evaluation (best or last weights), report. None on non-zero DDP ranks.
    `started`: when the run began (`prepare_training`)."""
    out = Path(cfg.paths.output_dir)
    best = BestWeights(cfg.eval.selection.monitor, cfg.eval.selection.mode)
    curves = LearningCurves(out / "curves.json", cfg.eval.selection.monitor)
    interrupt = SaveOnInterrupt(out / "checkpoints" / "last.ckpt")
    trainer, module, dm, evaluator, base = prepare_training(
        cfg, [best, curves, RandomState(), interrupt, *(callbacks or [])], started=started
    )
    history = lineage(cfg.adapter.init_from, cfg.data, out)
    forgetting = start = None
    if cfg.adapter.init_from and rank_zero_only.rank == 0:
        domains = {}
        for name, data in latest_per_domain(history, cfg.data).items():  # each domain's own pipeline, test split only
            if name == cfg.data.name and not cfg.data.get("components"):
                domains[name] = dm  # this run's own single-source data: already prepared
                continue
            domains[name] = build(data, tokenizer=dm.tokenizer, packing_allowed=False)
            domains[name].prepare()
        forgetting = Forgetting(cfg.eval, domains, module.loss, evaluator)
        start = forgetting.score(module.model, "start")
    if cfg.train:
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=resolve_checkpoint(cfg))
        except (SIGTERMException, KeyboardInterrupt, SystemExit):
            if interrupt.saved_step is None:
                raise
            again = " ".join(o for o in cli_overrides() if not o.startswith("ckpt_path="))
            raise DomainTuneError(
                f"Training was interrupted (SIGTERM or Ctrl+C) at step {interrupt.saved_step}; the checkpoint "
                f"{interrupt.path} holds it.",
                f"Resume with: python train.py {again} ckpt_path={interrupt.path}",
            ) from None
    weights = choose_weights(cfg, evaluator, trainer, module, best)
    if rank_zero_only.rank != 0:
        return None
    assert base is not None

    tuned = evaluator.run(module.model, "tuned")
    save_adapter(module.model, dm.tokenizer, out / "adapter")
    budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
    from_start = module.objective.needs_pairs and bool(cfg.adapter.get("init_from"))  # "before" = the start model
    info = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "adapter": cfg.adapter.name,
        "objective": module.objective.describe(),
        **({"before": f"the model the run started from (adapter.init_from={cfg.adapter.init_from})"} if from_start else {}),
        "split": ", ".join(evaluator.splits) + " (model selection: validation)",
        "weights": weights,
        "global_step": trainer.global_step,
        "trust_remote_code": bool(cfg.model.trust_remote_code),
        **({"time budget": budget.summary(tuned.seconds)} if budget else {}),
    }
    before = "start" if from_start else "base"
    title = f"{cfg.data.name} / {cfg.adapter.name}: {evaluator.split} split, {before} vs tuned ({weights})"
    rows, flat = publish(out, base, tuned, info, evaluator, title, trainer.loggers, trainer.global_step)
    facts = model_card_facts(cfg, module, dm, evaluator, info, trainer)
    card = write_model_card(out / "adapter", facts, rows, json.loads((out / "data_report.json").read_text()))
    log_artifacts(
        trainer.loggers,
        {
            f"adapter-{cfg.run_name}": ("model", [out / "adapter"], {"fingerprint": facts["fingerprint"], **info}),
            f"data-audit-{cfg.data.name}": (
                "dataset",
                [out / "data_report.json", out / "token_lengths.png"],
                {"fingerprint": facts["fingerprint"], "data": cfg.data.name},
            ),
        },
    )
    log.info(f"Model card: {card}")
    (out / "lineage.json").write_text(json.dumps(history, indent=2))
    if forgetting is not None and start is not None:
        rows_f = forgetting.compare(start, forgetting.score(module.model, "end"))
        write_forgetting(out, rows_f, str(cfg.adapter.init_from), trainer.loggers)
        for domain, metrics in rows_f.items():
            flat.update({f"forgetting/{domain}/{m}": r["change"] for m, r in metrics.items() if r["change"] is not None})
    if best.value is not None:
        flat["selection/val_loss"] = best.value
        flat["selection/step"] = float(best.step or 0)
    log.info(f"Run folder: {out} (adapter in {out / 'adapter'})")
    return Run(trainer, module, dm, rows, flat)


def describe_sources(recipe: DataRecipe) -> str:
    """Where a data recipe reads from, in words for the model card."""
    if recipe.components:
        return "mixture of " + ", ".join(
            f"{name} ({recipe.weights.get(name, '?')}: {describe_sources(c)})" for name, c in recipe.components.items()
        )
    if recipe.hub:
        return f"Hugging Face dataset `{recipe.hub}` (revision {recipe.revision or 'not pinned'})"
    if recipe.files:
        return f"files {recipe.files}"
    return f"folder `{recipe.dir}`"


def model_card_facts(
    cfg: DictConfig,
    module: CausalLMModule,
    dm: DomainDataModule,
    evaluator: Evaluator,
    info: dict[str, Any],
    trainer: pl.Trainer,
) -> dict[str, Any]:
    """What the model card states about this run, read from the objects the run built and used (the module's
    optimization, the DataModule's recipe, the evaluator's bootstrap) rather than from raw config keys."""
    trainable, total = parameter_counts(module.model)
    adapter = to_dict(cfg.adapter.peft) if cfg.adapter.kind == "peft" else {"kind": cfg.adapter.kind}
    return {
        "base_model": base_model_id(cfg.model),
        "base_model_name": str(cfg.model.name),
        "weights_trained_on": trained_weights(cfg.model),
        "adapter": str(cfg.adapter.name),
        "adapter_kind": str(cfg.adapter.kind),
        "trainable": f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)",
        "data": str(cfg.data.name),
        "system_prompt": dm.recipe.task["system_prompt"],
        "sources": describe_sources(dm.recipe),
        "fingerprint": dm.fingerprint(),
        "split": info["split"],
        "weights": info["weights"],
        "interval": evaluator.bootstrap.describe(),
        "trust_remote_code": info["trust_remote_code"],
        "training": {
            "adapter config": json.dumps({k: v for k, v in adapter.items() if not k.startswith("_")}, default=str),
            "objective": module.objective.describe(),
            "optimizer": module.optim.describe(),
            "steps": trainer.global_step,
            "batch size": dm.batch_size,
            "max length (tokens)": dm.recipe.max_length,
            "precision": str(trainer.precision),
            "seed": cfg.seed,
        },
    }


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path`: a file, or the word `last` (the newest last.ckpt of an earlier run with this run_name under
    paths.log_dir). The file is read once here, so a truncated checkpoint fails with the good ones named."""
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path == "last":
        here = Path(cfg.paths.output_dir).resolve()
        found = [
            p
            for p in Path(cfg.paths.log_dir).glob(f"{cfg.task_name}/*/*_{cfg.run_name}/checkpoints/last.ckpt")
            if p.parents[1].resolve() != here
        ]
        if not found:
            raise DomainTuneError(
                f"ckpt_path=last: no earlier '{cfg.run_name}' run under {cfg.paths.log_dir}/{cfg.task_name} left a "
                "checkpoints/last.ckpt.",
                "Pass the file itself: ckpt_path=<run folder>/checkpoints/last.ckpt (and the same run_name and overrides).",
            )
        path = max(found, key=lambda p: p.stat().st_mtime)
        log.info(f"ckpt_path=last: resuming from {path}")
    else:
        path = Path(str(cfg.ckpt_path))
    if not path.is_file():
        raise DomainTuneError(
            f"The checkpoint '{path}' does not exist.", "Pass a run's checkpoints/last.ckpt, or ckpt_path=last."
        )
    try:
        # mmap: the zip's directory and records are checked without reading every tensor (Lightning reads it next)
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        others = sorted((p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: -p.stat().st_mtime)
        raise DomainTuneError(
            f"The checkpoint '{path}' cannot be read ({type(exc).__name__}); it is probably truncated (a crash while "
            "it was written).",
            f"Resume from an earlier one: {', '.join(f'ckpt_path={p}' for p in others)}."
            if others
            else "No other checkpoint is in that folder: start the run again without ckpt_path.",
        ) from None
    return str(path)


def choose_weights(cfg: DictConfig, evaluator: Evaluator, trainer: pl.Trainer, module: CausalLMModule, best: BestWeights) -> str:
    """Restore the best validation weights when `eval.weights: best` (on every rank, so shards stay
    consistent); returns what the report says about the weights it evaluates."""
    monitor = evaluator.selection.monitor
    if not cfg.train:
        return "base model (train=false)"
    stopped = " (stopped early)" if any(isinstance(c, EarlyStopping) and c.stopped_epoch for c in trainer.callbacks) else ""
    if evaluator.weights == "last":
        return f"last, step {trainer.global_step}{stopped}"
    if not best.restore(module):
        log.warning("eval.weights=best, but no validation check ran (trainer.val_check_interval): using the last weights")
        return f"last, step {trainer.global_step}: no validation check ran{stopped}"
    log.info(f"Restored the best weights: step {best.step} of {trainer.global_step}, {monitor}={best.value:.4f}")
    return f"best, step {best.step} of {trainer.global_step} ({monitor}={best.value:.4f}){stopped}"
