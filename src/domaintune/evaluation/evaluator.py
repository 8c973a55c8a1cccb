"""The one evaluation path: base model before training, tuned model after, during training, and
`scripts/evaluate.py`. It scores answer-token loss/perplexity on the eval split, generation metrics on a
subset of it, and optional multiple-choice benchmarks (the forgetting check)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from domaintune.data.chat import ChatRenderer
from domaintune.data.formats import Message, Task
from domaintune.evaluation import bias, memorisation, multiple_choice
from domaintune.evaluation import metrics as gen_metrics
from domaintune.evaluation.choice import choice_evidence, cross_fitted, fit_offsets, label_loglikelihoods, trivial_baseline
from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.generation import GenerationStats, generate, merged_adapter, model_device, with_answer_limit
from domaintune.evaluation.settings import Bootstrap, Calibration, Generation, Memorisation, Selection
from domaintune.models.loss import LossOptions, example_nll
from domaintune.models.objectives import answer_logps
from domaintune.utils.config import settings, to_dict
from domaintune.utils.errors import DomainTuneError, unknown_option
from domaintune.utils.files import locked, write_atomic
from domaintune.utils.hardware import autocast_for
from domaintune.utils.logging import get_logger

log = get_logger(__name__)
# what a multiple-choice benchmark under eval.benchmarks must say (conf/eval/default.yaml documents each)
BENCHMARK_KEYS = ("kind", "dir", "split", "prompt", "delimiter", "max_samples", "batch_size")
# multiple_choice: {question, choices, answer_index} items (PIQA); the bias benchmarks: evaluation/bias.py
BENCHMARK_KINDS = ("multiple_choice", *bias.KINDS)
# Bumped when what a cached result holds changes (2: per-example evidence; 3: key of the result-shaping
# arguments only; 4: answers' stop flags, choice scores, the evaluation's time; 5: generation timing; 6: the
# memorisation check's answers), so older files are not reused.
CACHE_FORMAT = 6


@dataclass
class EvalResult:
    """Scores of one model; `evidence` holds, per quality metric, the per-example rows the score aggregates
    (serialised `Evidence`), which the paired bootstrap and the refinement report read."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float | None = None
    # generation's measured seconds and its worst case (every batch decoding to max_new_tokens at the measured
    # rate): a time budget plans the tuned evaluation with the worst case, whatever lengths the answers take
    timing: dict[str, float] = field(default_factory=dict)
    # the memorisation check's continuations of training prompts (evaluation/memorisation.py)
    memorised: list[dict[str, Any]] = field(default_factory=list)

    def evidence_of(self, name: str) -> Evidence | None:
        d = self.evidence.get(name)
        return Evidence.from_dict(d) if d else None

    def add(self, evidence: dict[str, Evidence], prefix: str = "") -> None:
        for k, e in evidence.items():
            self.metrics[prefix + k] = e.value()
            self.evidence[prefix + k] = e.to_dict()


class EvaluationSet(Protocol):
    """What the evaluator needs of the data: prepared records per split with their tasks, the renderer and
    tokenizer they were encoded with, and loss batches. `DomainDataModule` is one; evaluation does not import
    the DataModule, so any object with these members can be scored (a test set of your own, a benchmark)."""

    tokenizer: PreTrainedTokenizerBase
    renderer: ChatRenderer
    tasks: dict[str, Task]
    records: dict[str, list[dict[str, Any]]]
    # the metric that decides whether adaptation worked (data.primary_metric: a name, or auto)
    primary_metric: str

    def require(self, split: str) -> list[dict[str, Any]]: ...

    def task_of(self, rec: dict[str, Any]) -> Task: ...

    def conversation(self, rec: dict[str, Any]) -> list[Message]: ...

    def eval_dataloader(self, split: str, max_samples: int | None = None) -> DataLoader: ...


class Evaluator:
    """Built by `hydra.utils.instantiate(cfg.eval, data=..., loss=...)`; the keys are documented in
    conf/eval/default.yaml. `weights`, `selection`, `bootstrap` and `analysis_top` are the evaluation's policy
    that training (which weights to score) and `publish` (intervals, refinement report) read from here."""

    def __init__(
        self,
        data: EvaluationSet,
        loss: LossOptions,
        model_key: str = "",
        *,
        split: str | list[str],
        weights: str,
        selection: dict[str, str] | Selection,
        bootstrap: dict[str, Any] | Bootstrap,
        max_samples: int | None,
        merge_adapter: bool,
        device: str,
        precision: str,
        metrics: str | list[str],
        generation: dict[str, Any] | Generation,
        choices: dict[str, Any],
        calibration: dict[str, Any] | Calibration,
        share_context: bool,
        general: str | list[str] | None,
        benchmarks: dict[str, dict[str, Any]],
        memorisation: dict[str, Any] | Memorisation,
        analysis_top: int,
        cache_base: bool,
        cache_dir: str | None,
    ):
        """`model_key` names the base model for the base-result cache (empty: never cached)."""
        self.loss_options = loss
        self.dm = data
        # the first split is the report's; further ones (e.g. [test, validation]) add prefixed metrics
        self.splits = [split] if isinstance(split, str) else list(split)
        if not self.splits:
            raise DomainTuneError(
                "eval.split is an empty list.", "Name a split, e.g. eval.split=test or eval.split=[test,validation]."
            )
        self.split = self.splits[0]
        self.weights = weights
        self.selection = settings(Selection, selection, "eval.selection")
        self.bootstrap = settings(Bootstrap, bootstrap, "eval.bootstrap")
        self.max_samples, self.merge_adapter, self.device = max_samples, bool(merge_adapter), device
        self.precision = str(precision)
        self.metrics, self.share_context = metrics, bool(share_context)
        wanted = settings(Generation, generation, "eval.generation")
        self.choices = to_dict(choices)
        self.calibration = settings(Calibration, calibration, "eval.calibration")
        # `max_new_tokens: auto` becomes a number here, from the training references (the report states it and
        # how it was found); the resolved number is part of the base-result cache key below
        self.generation_settings, self.answer_limit = with_answer_limit(self.dm, wanted)
        self.primary = gen_metrics.primary_metric(self.dm.primary_metric, [t.type for t in self.dm.tasks.values()])
        self.benchmark_specs, self.analysis_top = to_dict(benchmarks), int(analysis_top)
        self.memorisation = settings(Memorisation, memorisation, "eval.memorisation")
        self.cache_dir = Path(str(cache_dir)).expanduser() if cache_base and cache_dir else None
        self.model_key = model_key
        self.general = [general] if isinstance(general, str) else list(general or [])
        for name in self.general:
            if name not in self.benchmark_specs:
                raise unknown_option(
                    "benchmark", name, self.benchmark_specs, "Define it under eval.benchmarks or pick a defined one."
                )
            lacking = [k for k in BENCHMARK_KEYS if k not in self.benchmark_specs[name]]
            if lacking:
                raise DomainTuneError(
                    f"eval.benchmarks.{name} lacks {', '.join(lacking)}.",
                    f"Give each of {', '.join(BENCHMARK_KEYS)} (eval.benchmarks.piqa in conf/eval/default.yaml shows them).",
                )
            if self.benchmark_specs[name]["kind"] not in BENCHMARK_KINDS:
                raise unknown_option(
                    f"eval.benchmarks.{name}.kind", self.benchmark_specs[name]["kind"], BENCHMARK_KINDS, "Pick one of them."
                )
        for task in self.dm.tasks.values():
            gen_metrics.resolve(metrics, task.type)  # unknown metric names fail before any work
        # what shapes a model's results (the base-result cache key); device, cache and report policy do not
        self.result_key = {
            "split": self.splits,
            "max_samples": max_samples,
            "precision": self.precision,
            # the metrics as resolved per task, with the task types and label sets: `metrics: auto` scores a qa
            # task and preference pairs of the same questions differently although their prompts tokenise alike
            "metrics": {name: gen_metrics.resolve(metrics, t.type) for name, t in self.dm.tasks.items()},
            "tasks": {name: [t.type, t.labels] for name, t in self.dm.tasks.items()},
            "generation": self.generation_settings.options(),
            "choices": self.choices,
            # only when on: results without calibration are the same whatever its unused settings say
            **({"calibration": dataclasses.asdict(self.calibration)} if self.calibration.split else {}),
            "share_context": self.share_context,
            "general": self.general,
            "benchmarks": self.benchmark_specs,
            "memorisation": dataclasses.asdict(self.memorisation),
        }

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast where bf16 is fast (`precision: auto` decides as the trainer's does), else full precision.
        Base and tuned models are always scored in the same precision, so their paired changes stay comparable."""
        return autocast_for(self.precision, device)

    def _device(self, model: nn.Module) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else model_device(model)
        return torch.device(self.device)

    # ------------------------------------------------------------------ loss
    @torch.inference_mode()
    def loss(self, model: nn.Module, label: str, split: str) -> tuple[dict[str, float], dict[str, Evidence]]:
        """Token-weighted loss and perplexity over the answer tokens of a split, kept per example."""
        device = model_device(model)
        nll: list[float] = []
        tokens: list[int] = []
        seen, started = 0, time.perf_counter()
        loader = self.dm.eval_dataloader(split, self.max_samples)
        if len(loader.dataset) == 0:
            raise DomainTuneError(f"The {split} split has no examples to evaluate.", "Use another eval.split or more data.")
        bar = tqdm(loader, desc=f"eval {label} loss [{split}]", leave=False)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            row_nll, row_tokens = example_nll(model, batch, self.loss_options)
            nll += row_nll.tolist()
            tokens += row_tokens.tolist()
            seen += int(batch["n_real"].sum())
            bar.set_postfix(
                loss=f"{sum(nll) / max(sum(tokens), 1):.3f}", tokens_per_s=f"{seen / (time.perf_counter() - started):.0f}"
            )
        ids = [r["_src"] for r in self.dm.records[split][: len(nll)]]
        rows = [[a, b] for a, b in zip(nll, tokens, strict=True)]
        evidence = {"loss": Evidence("loss", ids, rows), "perplexity": Evidence("perplexity", ids, rows)}
        return {"eval_tokens_per_s": seen / max(time.perf_counter() - started, 1e-9)}, evidence

    # ------------------------------------------------------------------ generation
    def generation(
        self, model: nn.Module, split: str, merge_adapter: bool | None = None
    ) -> tuple[dict[str, float], dict[str, Evidence], list[dict[str, Any]], GenerationStats]:
        """Generate for the first `generation.max_samples` records of a split and score them with the task's
        metrics: (speed, evidence per metric, the generations, what generating took)."""
        records = self.generated_records(split)
        if not records:
            return {}, {}, [], GenerationStats()
        convs = [self.dm.conversation(r) for r in records]
        merge = self.merge_adapter if merge_adapter is None else merge_adapter
        outs, stats = generate(
            model,
            self.dm.tokenizer,
            self.dm.renderer,
            convs,
            self.generation_settings.options(),
            merge,
            desc=f"generate [{split}]",
        )
        samples = [
            {
                "id": r["_src"],
                "task": r.get("_task", ""),
                "prompt": c[-2]["content"] if len(c) >= 2 else "",
                "reference": self.dm.task_of(r).reference(r),
                "output": o.text,
                "stopped": o.stopped,
            }
            for r, c, o in zip(records, convs, outs, strict=True)
        ]
        # how many answers ran into max_new_tokens without stopping (descriptive: base and tuned side by side)
        evidence: dict[str, Evidence] = {
            "gen/at_limit_rate": Evidence("mean", [s["id"] for s in samples], [100.0 * (not s["stopped"]) for s in samples])
        }
        for name, task in self.dm.tasks.items():
            mine = [(s, r) for s, r in zip(samples, records, strict=True) if r.get("_task", "") == name]
            names = gen_metrics.resolve(self.metrics, task.type)
            if not mine or not names:
                continue
            prefix = f"gen/{name}/" if name else "gen/"
            found = gen_metrics.score_records(names, task, [s["output"] for s, _ in mine], [r for _, r in mine])
            evidence.update({prefix + k: v for k, v in found.items()})
        return {"gen_positions_per_s": stats.positions_per_s}, evidence, samples, stats

    # ------------------------------------------------------------------ preference pairs
    @torch.inference_mode()
    def preference(self, model: nn.Module, split: str) -> dict[str, Evidence]:
        """For preference data: does the model find the better answer likelier? Per pair, the summed answer
        log-probability of chosen minus rejected (`pref/margin`), and whether it is positive (`pref/accuracy`,
        %): the before/after of a DPO or ORPO run, with paired intervals like every other metric."""
        if not any(t.type == "preference" for t in self.dm.tasks.values()):
            return {}
        self.dm.require(split)
        # the loader serves the split's first max_samples examples, aligned with its records
        ids = [r["_src"] for r in self.dm.records[split]][: self.max_samples or None]
        margins: list[float] = []
        device = model_device(model)
        for batch in self.dm.eval_dataloader(split, self.max_samples, pairs=True):
            logps, _ = answer_logps(model, {k: v.to(device) for k, v in batch.items()}, self.loss_options)
            pairs = int(batch["pairs"])
            margins += (logps[:pairs] - logps[pairs:]).float().tolist()
        return {
            "pref/accuracy": Evidence("mean", ids, [100.0 * (m > 0) for m in margins]),
            "pref/margin": Evidence("mean", ids, margins),
        }

    # ------------------------------------------------------------------ labels by likelihood
    def choice(self, model: nn.Module, split: str, memo: dict[tuple[str, str], Any]) -> dict[str, Evidence]:
        """For tasks with a label set: each label's log-likelihood as the answer to the record's prompt, the most
        likely one taken as the model's answer (the multiple-choice scorer, lm-eval's definition): accuracy and
        macro-F1 that no answer wording or parsing can blur. With `eval.calibration.split` set, also the same
        scores moved by per-label offsets fitted on that split (choice/calibrated/*); `memo` keeps one
        evaluation's label log-likelihoods per (task, split), so the fitted split is scored once."""
        if not self.choices["enabled"]:
            return {}
        out: dict[str, Evidence] = {}
        for name, task in self.dm.tasks.items():
            # labels by likelihood need the task's response template; preference pairs have none (their labels,
            # when given, still score generated answers: gen/accuracy, gen/macro_f1)
            if not task.labels or task.type == "preference" or not self._task_records(name, split):
                continue
            items, lls = self._label_lls(model, name, split, memo)
            prefix = f"choice/{name}/" if name else "choice/"
            out.update({prefix + k: v for k, v in choice_evidence(items, lls, task.labels).items()})
            if self.calibration.split:
                calibrated = self._calibrated(model, name, split, lls, items, memo)
                out.update({f"{prefix}calibrated/{k}": v for k, v in choice_evidence(items, calibrated, task.labels).items()})
        return out

    def _task_records(self, name: str, split: str) -> list[dict[str, Any]]:
        self.dm.require(split)
        return [r for r in self.dm.records[split] if r.get("_task", "") == name]

    def _label_lls(self, model: nn.Module, name: str, split: str, memo: dict[tuple[str, str], Any]) -> Any:
        if (name, split) not in memo:
            memo[name, split] = label_loglikelihoods(
                model,
                self.dm,
                self.dm.tasks[name],
                self._task_records(name, split),
                int(self.choices["batch_size"]),
                self.share_context,
                self.loss_options,
            )
        return memo[name, split]

    def _calibrated(
        self, model: nn.Module, name: str, split: str, lls: torch.Tensor, items: list[Any], memo: dict[tuple[str, str], Any]
    ) -> torch.Tensor:
        """The split's label scores plus offsets fitted on the calibration split (cross-fitted when they are the same)."""
        fit_split, labels = str(self.calibration.split), self.dm.tasks[name].labels or []
        if not self._task_records(name, fit_split):
            raise DomainTuneError(
                f"eval.calibration.split={fit_split} has no records of the label task{f' {name}' if name else ''}, "
                "so no label offsets can be fitted on it.",
                "Point eval.calibration.split at a labelled split of the same task (e.g. validation), or set it to null.",
            )
        if fit_split == split:
            return cross_fitted(lls, torch.tensor([i.answer for i in items]), self.calibration.folds)
        fit_items, fit_lls = self._label_lls(model, name, fit_split, memo)
        offsets = fit_offsets(fit_lls, torch.tensor([i.answer for i in fit_items]))
        log.info(
            f"Label calibration on {fit_split} ({len(fit_items)} records): offsets "
            + ", ".join(f"{label} {float(o):+.3f}" for label, o in zip(labels, offsets, strict=True))
        )
        return lls + offsets

    # ------------------------------------------------------------------ benchmarks
    def benchmarks(self, model: nn.Module) -> dict[str, Evidence]:
        out: dict[str, Evidence] = {}
        for name in self.general:
            b = self.benchmark_specs[name]
            split = b["split"] if isinstance(b["split"], str) else list(b["split"])
            if b["kind"] in bias.KINDS:
                fields, scorer = bias.KINDS[b["kind"]]
                how = bias.Scoring(
                    b["prompt"], b["delimiter"], int(b["batch_size"]), self.share_context, self.loss_options.answer_only_logits
                )
                records = bias.load_records(b["dir"], split, b["max_samples"], fields)
                out.update({f"mc/{name}/{k}": v for k, v in scorer(model, self.dm.tokenizer, records, how, name).items()})
                continue
            items = multiple_choice.load_items(b["dir"], split, b["max_samples"])
            evidence = multiple_choice.evaluate(
                model,
                self.dm.tokenizer,
                items,
                b["prompt"],
                b["delimiter"],
                int(b["batch_size"]),
                self.share_context,
                self.loss_options.answer_only_logits,
                name,
            )
            out.update({f"mc/{name}/{k}": v for k, v in evidence.items()})
        return out

    @functools.cached_property
    def memorisation_sample(self) -> memorisation.Sample:
        """The training records the memorisation check continues, drawn once (tokenising every training answer):
        the cache key and the base and tuned checks all use this draw."""
        return memorisation.training_sample(self.dm, self.memorisation)

    # ------------------------------------------------------------------ all together
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        ids = hashlib.sha256()
        for split in self.splits:
            for ex in self.dm.require(split):
                ids.update(json.dumps(ex["input_ids"]).encode())
        for rec, _, _ in self.memorisation_sample:  # the training answers it continues
            ids.update(json.dumps(self.dm.conversation(rec)).encode())
        key = json.dumps(self.result_key, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{CACHE_FORMAT}|{self.model_key}|{key}|{ids.hexdigest()}".encode()).hexdigest()[:20]
        return self.cache_dir / "eval" / f"base-{digest}.json"

    def run(self, model: nn.Module, label: str) -> EvalResult:
        """Evaluate `model`; the base model's result is reused from the cache when nothing that shapes it changed."""
        cache = self.cache_path() if label == "base" and self.model_key else None
        if cache is None:
            return self._evaluate(model, label)
        # parallel sweep jobs on a cold cache: one evaluates the base model, the others wait and reuse it
        with locked(cache):
            if cache.exists():
                try:
                    result = EvalResult(**json.loads(cache.read_text()))
                    log.info(f"Base-model results reused from {cache} (same model, data and eval config)")
                    return result
                except (ValueError, TypeError) as exc:
                    log.warning(f"The base-result cache {cache} is damaged ({exc}); evaluating again")
            result = self._evaluate(model, label)
            write_atomic(cache, json.dumps(asdict(result)))
            return result

    def check_primary(self, result: EvalResult) -> EvalResult:
        """The primary metric must be one this evaluation reports (found after the base evaluation, before any
        training time is spent)."""
        if self.primary not in result.metrics:
            family = self.primary.split("/", 1)[0] + "/"
            if "/" in self.primary and not any(k.startswith(family) for k in result.metrics):
                # that whole family was switched off (e.g. eval.generation.max_samples=0 for a quick run): said, not fatal
                log.warning(
                    f"The primary metric {self.primary} is not scored in this run (no {family}* metric: generation or "
                    "label scoring is switched off); the report cannot say whether adapting worked by it."
                )
                return result
            quality = sorted(k for k in result.evidence if "/" not in k or k.startswith(("gen/", "choice/")))
            raise DomainTuneError(
                f"data.primary_metric={self.primary} is not among the metrics this evaluation reports ({', '.join(quality)}).",
                "Set data.primary_metric to one of them (or auto), or add the metric with eval.metrics.",
            )
        return result

    def trivial_baselines(self) -> dict[str, tuple[float, str]]:
        """Per accuracy metric of a labelled task: the best accuracy a model that ignores its input reaches on the
        report's split (the majority label or chance), which a classifier must beat, not just its base model."""
        out: dict[str, tuple[float, str]] = {}
        generated = self.generated_records(self.split)
        for name, task in self.dm.tasks.items():
            if not task.labels or task.type == "preference":  # pairs carry answers, not a label field
                continue
            prefix = name + "/" if name else ""
            for kind, records in (("choice", self.dm.records[self.split]), ("gen", generated)):
                mine = [r for r in records if r.get("_task", "") == name]
                if mine:
                    out[f"{kind}/{prefix}accuracy"] = trivial_baseline(mine, task.labels)
                    if kind == "choice" and self.calibration.split:
                        out[f"choice/{prefix}calibrated/accuracy"] = out[f"{kind}/{prefix}accuracy"]
        return out

    def generated_records(self, split: str) -> list[dict[str, Any]]:
        """The records a split's generation metrics are scored on: the first `generation.max_samples` with an answer."""
        limit = self.generation_settings.max_samples
        self.dm.require(split)
        records = [r for r in self.dm.records[split] if self.dm.task_of(r).type != "text"]
        return records[: int(limit)] if limit is not None else records

    def general_benchmarks(self, model: nn.Module, label: str) -> EvalResult:
        """Only the general benchmarks (eval.general): the forgetting check scores them at the start and end of
        a continued run."""
        return self._evaluate(model, label, splits=[])

    def _evaluate(self, model: nn.Module, label: str, splits: list[str] | None = None) -> EvalResult:
        started = time.perf_counter()
        splits = self.splits if splits is None else splits
        was_training, original = model.training, model_device(model)
        model.to(self._device(model)).eval()
        what = f"the {' and '.join(splits)} split{'s' if len(splits) > 1 else ''}" if splits else ", ".join(self.general)
        log.info(f"Evaluating the {label} model on {what}")
        result = EvalResult({})
        memo: dict[tuple[str, str], Any] = {}  # label log-likelihoods per (task, split), shared by the splits
        # A LoRA-family adapter is folded into the weights for the whole evaluation (restored bit for bit
        # afterwards): the tuned model is then scored as fast as the base model.
        with merged_adapter(model, self.merge_adapter) as fast, self._autocast(model_device(model)):
            for split in splits:
                prefix = "" if split == self.split else f"{split}/"
                speed, evidence = self.loss(fast, label, split)
                gen_speed, gen_evidence, samples, stats = self.generation(fast, split, merge_adapter=False)
                result.add({**evidence, **self.choice(fast, split, memo), **self.preference(fast, split), **gen_evidence}, prefix)
                result.metrics.update({prefix + k: v for k, v in {**speed, **gen_speed}.items()})
                worst = stats.answers * int(self.generation_settings.max_new_tokens) / max(stats.positions_per_s, 1e-9)
                result.timing["generation_s"] = result.timing.get("generation_s", 0.0) + stats.seconds
                result.timing["generation_worst_s"] = result.timing.get("generation_worst_s", 0.0) + worst
                if not prefix:
                    result.samples = samples
            result.add(self.benchmarks(fast))
            if splits:  # not for the forgetting check's benchmarks-only evaluations
                found, result.memorised = memorisation.check(
                    fast, self.dm, self.memorisation_sample, self.memorisation, self.generation_settings, merge_adapter=False
                )
                result.add(found)
        model.to(original).train(was_training)
        # how long this evaluation took: a time budget plans the tuned evaluation from the base one's
        result.seconds = time.perf_counter() - started
        return result
