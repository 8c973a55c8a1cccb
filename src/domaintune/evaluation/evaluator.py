"""The one evaluation path: base model before training, tuned model after, during training, and
`scripts/evaluate.py`. It scores answer-token loss/perplexity on the eval split, generation metrics on a
subset of it, and optional multiple-choice benchmarks (the forgetting check)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from domaintune.data.datamodule import DomainDataModule
from domaintune.evaluation import metrics as gen_metrics
from domaintune.evaluation import multiple_choice
from domaintune.evaluation.generation import generate, merged_adapter, model_device
from domaintune.models.module import LossOptions, forward_loss
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError, unknown_option
from domaintune.utils.logging import get_logger

log = get_logger(__name__)
# Settings that do not change results: left out of the base-result cache key.
NOT_IN_KEY = ("device", "cache_base", "cache_dir")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


class Evaluator:
    def __init__(self, cfg: DictConfig | dict[str, Any], datamodule: DomainDataModule, loss: LossOptions, model_key: str = ""):
        self.cfg = to_dict(cfg)
        self.loss_options = loss
        self.dm = datamodule
        self.split = self.cfg.get("split", "validation")
        self.gcfg = self.cfg.get("generation") or {}
        self.model_key = model_key
        general = self.cfg.get("general") or []
        self.general = [general] if isinstance(general, str) else list(general)
        benchmarks = self.cfg.get("benchmarks") or {}
        for name in self.general:
            if name not in benchmarks:
                raise unknown_option("benchmark", name, benchmarks, "Define it under eval.benchmarks or pick a defined one.")
        for task in self.dm.tasks.values():
            gen_metrics.resolve(self.cfg.get("metrics"), task.type)  # unknown metric names fail before any work

    def _device(self, model: nn.Module) -> torch.device:
        if self.cfg.get("device", "auto") == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else model_device(model)
        return torch.device(self.cfg["device"])

    # ------------------------------------------------------------------ loss
    @torch.inference_mode()
    def loss(self, model: nn.Module, label: str) -> dict[str, float]:
        """Token-weighted loss and perplexity over the answer tokens of the eval split."""
        device = model_device(model)
        nll, tokens, seen, started = 0.0, 0, 0, time.perf_counter()
        loader = self.dm.eval_dataloader(self.split, self.cfg.get("max_samples"))
        if len(loader.dataset) == 0:
            raise DomainTuneError(f"The {self.split} split has no examples to evaluate.", "Use another eval.split or more data.")
        bar = tqdm(loader, desc=f"eval {label} loss [{self.split}]", leave=False)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, n = forward_loss(model, batch, self.loss_options)
            nll += float(loss) * int(n)
            tokens += int(n)
            seen += int(batch["n_real"].sum())
            bar.set_postfix(loss=f"{nll / max(tokens, 1):.3f}", tokens_per_s=f"{seen / (time.perf_counter() - started):.0f}")
        mean = nll / max(tokens, 1)
        return {
            "loss": mean,
            "perplexity": math.exp(min(mean, 50.0)),
            "eval_tokens_per_s": seen / max(time.perf_counter() - started, 1e-9),
        }

    # ------------------------------------------------------------------ generation
    def generation(self, model: nn.Module, merge_adapter: bool | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Generate for the first `generation.max_samples` eval records and score them with the task's metrics."""
        limit = self.gcfg.get("max_samples")
        self.dm.require(self.split)
        records = [r for r in self.dm.records[self.split] if self.dm.task_of(r).type != "text"]
        records = records[: int(limit)] if limit is not None else records
        if not records:
            return {}, []
        convs = [self.dm.conversation(r) for r in records]
        merge = self.cfg["merge_adapter"] if merge_adapter is None else merge_adapter
        outs, speed = generate(model, self.dm.tokenizer, self.dm.renderer, convs, self.gcfg, merge)
        samples = [
            {
                "id": r["_src"],
                "task": r.get("_task", ""),
                "prompt": c[-2]["content"] if len(c) >= 2 else "",
                "reference": self.dm.task_of(r).reference(r),
                "output": o.text,
            }
            for r, c, o in zip(records, convs, outs, strict=True)
        ]
        scores: dict[str, float] = {"generated_tokens_per_s": speed}
        for name, task in self.dm.tasks.items():
            mine = [(s, r) for s, r in zip(samples, records, strict=True) if r.get("_task", "") == name]
            names = gen_metrics.resolve(self.cfg.get("metrics"), task.type)
            if not mine or not names:
                continue
            prefix = f"gen/{name}/" if name else "gen/"
            values = gen_metrics.score(names, [s["output"] for s, _ in mine], [task.references(r) for _, r in mine], task.labels)
            scores.update({prefix + k: v for k, v in values.items()})
        return scores, samples

    # ------------------------------------------------------------------ benchmarks
    def benchmarks(self, model: nn.Module) -> dict[str, float]:
        out = {}
        for name in self.general:
            b = self.cfg["benchmarks"][name]
            split = b.get("split", "validation")
            items = multiple_choice.load_items(b["dir"], split if isinstance(split, str) else list(split), b.get("max_samples"))
            scores = multiple_choice.evaluate(
                model,
                self.dm.tokenizer,
                items,
                b["prompt"],
                b["delimiter"],
                int(b["batch_size"]),
                bool(self.cfg["share_context"]),
                self.loss_options.answer_only_logits,
                name,
            )
            out.update({f"mc/{name}/{k}": v for k, v in scores.items()})
        return out

    # ------------------------------------------------------------------ all together
    def cache_path(self) -> Path | None:
        if not self.cfg.get("cache_base", True) or not self.cfg.get("cache_dir"):
            return None
        ids = hashlib.sha256()
        for ex in self.dm.require(self.split):
            ids.update(json.dumps(ex["input_ids"]).encode())
        key = json.dumps({k: v for k, v in self.cfg.items() if k not in NOT_IN_KEY}, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{self.model_key}|{key}|{ids.hexdigest()}".encode()).hexdigest()[:20]
        return Path(str(self.cfg["cache_dir"])).expanduser() / "eval" / f"base-{digest}.json"

    def run(self, model: nn.Module, label: str) -> EvalResult:
        """Evaluate `model`; the base model's result is reused from the cache when nothing that shapes it changed."""
        cache = self.cache_path() if label == "base" and self.model_key else None
        if cache is not None and cache.exists():
            log.info(f"Base-model results reused from {cache} (same model, data and eval config)")
            return EvalResult(**json.loads(cache.read_text()))
        was_training, original = model.training, model_device(model)
        model.to(self._device(model)).eval()
        log.info(f"Evaluating the {label} model on the {self.split} split")
        # A LoRA-family adapter is folded into the weights for the whole evaluation (restored bit for bit
        # afterwards): the tuned model is then scored as fast as the base model.
        with merged_adapter(model, bool(self.cfg["merge_adapter"])) as fast:
            metrics = self.loss(fast, label)
            gen_scores, samples = self.generation(fast, merge_adapter=False)
            metrics.update(gen_scores)
            metrics.update(self.benchmarks(fast))
        model.to(original).train(was_training)
        result = EvalResult(metrics, samples)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(asdict(result)))
        return result
