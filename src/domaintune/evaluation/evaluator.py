"""The one evaluation path: base model before training, tuned model after, and scripts/evaluate.py."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from domaintune.data.datamodule import DomainDataModule
from domaintune.evaluation.generation import generate, model_device
from domaintune.models.module import forward_loss
from domaintune.utils.config import to_dict
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


class Evaluator:
    def __init__(self, cfg: DictConfig | dict[str, Any], datamodule: DomainDataModule):
        self.cfg = to_dict(cfg)
        self.dm = datamodule
        self.split = self.cfg.get("split", "validation")

    def _device(self, model: nn.Module) -> torch.device:
        if self.cfg.get("device", "auto") == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else model_device(model)
        return torch.device(self.cfg["device"])

    @torch.inference_mode()
    def loss(self, model: nn.Module, label: str) -> dict[str, float]:
        """Token-weighted loss and perplexity over the answer tokens of the eval split."""
        device = model_device(model)
        nll, tokens, seen, started = 0.0, 0, 0, time.perf_counter()
        loader = self.dm.eval_dataloader(self.split, self.cfg.get("max_samples"))
        for batch in tqdm(loader, desc=f"eval {label} loss [{self.split}]", leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, n = forward_loss(model, batch)
            nll += float(loss) * int(n)
            tokens += int(n)
            seen += int(batch["n_real"].sum())
        mean = nll / max(tokens, 1)
        return {
            "loss": mean,
            "perplexity": math.exp(min(mean, 50.0)),
            "eval_tokens_per_s": seen / max(time.perf_counter() - started, 1e-9),
        }

    def samples(self, model: nn.Module) -> tuple[list[dict[str, Any]], float]:
        """Generate for the first `generation.num_samples` eval records (deterministic choice)."""
        gcfg = self.cfg.get("generation") or {}
        n = int(gcfg.get("num_samples", 0))
        if n <= 0:
            return [], 0.0
        self.dm.require(self.split)
        records = [r for r in self.dm.records[self.split] if self.dm.task_of(r).type != "text"][:n]
        if not records:
            return [], 0.0
        convs = [self.dm.conversation(r) for r in records]
        outs, speed = generate(model, self.dm.tokenizer, self.dm.renderer, convs, gcfg)
        samples = [
            {
                "id": r["_src"],
                "prompt": c[-2]["content"] if len(c) >= 2 else "",
                "reference": self.dm.task_of(r).reference(r),
                "output": o.text,
            }
            for r, c, o in zip(records, convs, outs, strict=True)
        ]
        return samples, speed

    def run(self, model: nn.Module, label: str) -> EvalResult:
        was_training = model.training
        original = model_device(model)
        model.to(self._device(model)).eval()
        log.info(f"Evaluating the {label} model on the {self.split} split")
        metrics = self.loss(model, label)
        samples, speed = self.samples(model)
        if samples:
            metrics["generated_tokens_per_s"] = speed
        model.to(original).train(was_training)
        return EvalResult(metrics, samples)
