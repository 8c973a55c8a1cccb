"""Batched generation with the same prompt rendering as training."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from domaintune.data.chat import ChatRenderer
from domaintune.data.formats import Message
from domaintune.evaluation.settings import Generation as GenerationSettings
from domaintune.models.adapters import is_prompt_learning
from domaintune.utils.errors import DomainTuneError


@dataclass
class Generation:
    text: str
    n_tokens: int
    # False: the answer ran into max_new_tokens without its end-of-turn token (cut off, or never stopping)
    stopped: bool = True


@dataclass
class GenerationStats:
    """What one `generate` call did. A batch decodes until its longest answer stops, so answer tokens per second
    mostly measure how long the answers are (a model that answers briefly "generates" slowly); `positions`
    counts every row's decoding steps, finished rows included, which is the decoder's work whatever the answers'
    lengths: `positions_per_s` compares two models like with like."""

    answers: int = 0
    answer_tokens: int = 0
    positions: int = 0
    seconds: float = 0.0
    at_limit: int = 0

    @property
    def positions_per_s(self) -> float:
        return self.positions / max(self.seconds, 1e-9)

    @property
    def answer_tokens_per_s(self) -> float:
        return self.answer_tokens / max(self.seconds, 1e-9)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def generate_options(
    cfg: dict[str, Any], renderer: ChatRenderer, tokenizer: PreTrainedTokenizerBase, stop_ids: list[int] | None = None
) -> dict[str, Any]:
    """`model.generate` keyword arguments from a generation config: greedy unless do_sample, stopping at
    the template's end-of-turn token or EOS (shared by batch generation, chat.py and the server, which passes
    the `stop_ids` it found once instead of re-rendering the probe per request)."""
    sampling = bool(cfg["do_sample"])
    options = {"temperature": float(cfg["temperature"]), "top_p": float(cfg["top_p"])} if sampling else {}
    return {
        "max_new_tokens": int(cfg["max_new_tokens"]),
        "do_sample": sampling,
        "repetition_penalty": float(cfg["repetition_penalty"]),
        "eos_token_id": stop_ids if stop_ids is not None else renderer.stop_token_ids(),
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
        **options,
    }


def answer_limit(data: Any, cfg: GenerationSettings) -> dict[str, Any]:
    """`max_new_tokens` for evaluation: the number given, or for `auto` the `auto_percentile` percentile of the
    training references' token lengths (+1: the end-of-turn token), at most `auto_cap`, so that neither model
    is cut off mid-answer by a limit that suits another task. Returns the number and how it was found (the
    report states both). Only the training split is read: the answers being scored never set their own limit.
    """
    if cfg.max_new_tokens != "auto":
        return {"max_new_tokens": int(cfg.max_new_tokens), "how": "eval.generation.max_new_tokens"}
    data.require("train")
    records = [r for r in data.records["train"] if data.task_of(r).type != "text"]
    if not records:
        raise DomainTuneError(
            "eval.generation.max_new_tokens=auto takes the limit from the training answers' lengths, and this data has "
            "no training record with an answer.",
            "Give a number instead, e.g. eval.generation.max_new_tokens=256.",
        )
    refs = [data.task_of(r).reference(r) for r in records]
    lengths = np.array([len(ids) + 1 for ids in data.tokenizer(refs, add_special_tokens=False)["input_ids"]])
    pct, cap = float(cfg.auto_percentile), int(cfg.auto_cap)
    found = int(np.percentile(lengths, pct, method="higher"))
    limit = min(found, cap)
    return {
        "max_new_tokens": limit,
        "how": f"auto: {pct:g}th percentile of {len(lengths)} training answers' token lengths = {found}"
        + (f", capped at {cap}" if found > cap else f" (cap {cap})"),
    }


def with_answer_limit(data: Any, wanted: GenerationSettings) -> tuple[GenerationSettings, dict[str, Any]]:
    """The generation block with `max_new_tokens` resolved (`auto` -> a number, see `answer_limit`) and how it
    was found: the evaluation, the pair builder and the benchmark all generate with this same limit."""
    found = answer_limit(data, wanted)
    return dataclasses.replace(wanted, max_new_tokens=found["max_new_tokens"]), found


@contextlib.contextmanager
def merged_adapter(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Generate with a LoRA-family adapter folded into the base weights, then restore them bit for bit.

    Unmerged, every adapted linear layer runs two extra small matmuls per token, which made the tuned model
    generate at ~40% of the base model's speed on CPU. PEFT's unmerge subtracts the delta again, which
    leaves float rounding in the frozen weights; we keep the original tensors and put them back instead,
    so training and later evaluations see exactly the weights they had. Prompt-learning adapters and plain
    models are returned as they are.
    """
    mergeable = enabled and isinstance(model, PeftModel) and not is_prompt_learning(model)
    if not mergeable:
        yield model
        return
    # (parent, attribute, adapter layer) of every adapted layer; while merged, the parent holds the plain
    # base layer, so generation does not pay the adapter wrapper's Python dispatch per layer and token
    adapted = [
        (model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2], m)
        for name, m in model.named_modules()
        if isinstance(m, BaseTunerLayer) and not m.merged
    ]
    saved = [{k: v.detach().clone() for k, v in m.get_base_layer().state_dict().items()} for _, _, m in adapted]
    model.merge_adapter()
    for parent, attr, m in adapted:
        setattr(parent, attr, m.get_base_layer())
    try:
        # the plain transformers model underneath: PEFT's own generate wrapper costs time per call too
        yield model.get_base_model()
    finally:
        for (parent, attr, m), weights in zip(adapted, saved, strict=True):
            setattr(parent, attr, m)
            m.merged_adapters.clear()
            with torch.no_grad():
                for k, v in m.get_base_layer().state_dict(keep_vars=True).items():
                    v.copy_(weights[k])


class _Ticker(StoppingCriteria):
    """Never stops anything: called by `generate` after each decoding step, it keeps the progress bar's rate and
    time left moving inside a long batch (a batch of 64 answers of 300 tokens takes about a minute on a CPU)."""

    def __init__(self, bar: Any, stats: GenerationStats, started: float):
        self.bar, self.stats, self.started = bar, stats, started
        self.shown = 0.0
        self.width = 0  # the prompt width of the batch being decoded (set before each batch)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        now = time.perf_counter()
        if now - self.shown > 1.0:
            self.shown = now
            done = self.stats.positions + input_ids.shape[0] * (input_ids.shape[1] - self.width)
            self.bar.set_postfix(positions_per_s=f"{done / max(now - self.started, 1e-9):.0f}", at_limit=self.stats.at_limit)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    renderer: ChatRenderer,
    conversations: list[list[Message]],
    cfg: dict[str, Any],
    merge_adapter: bool,
    desc: str = "generate",
) -> tuple[list[Generation], GenerationStats]:
    """Generate the next assistant turn for each conversation; returns generations (in input order) and what
    the call did (`GenerationStats`). A progress bar shows records, the decoder's rate and the time left.

    Prompts are batched longest first (`sort_by_length`), so a batch pads little, and left-padded so every
    row's new tokens start at the same column; LoRA-family adapters are merged while generating
    (`merge_adapter`); generation stops at the template's end-of-turn token or EOS.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    options = generate_options(cfg, renderer, tokenizer)
    stop_ids = options["eos_token_id"]
    batch_size = int(cfg["batch_size"])
    prompts = [renderer.prompt_ids(c) for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if cfg["sort_by_length"] else list(range(len(prompts)))
    out: list[Generation | None] = [None] * len(prompts)
    limit = int(options["max_new_tokens"])
    stats = GenerationStats(answers=len(prompts))
    bar = tqdm(total=len(prompts), desc=desc, unit="answer", leave=False)
    with merged_adapter(model, merge_adapter) as fast:
        # the rate of generation itself; the one-off merge (~0.1-1 s) is not part of it
        started = time.perf_counter()
        ticker = _Ticker(bar, stats, started)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            width = max(len(prompts[j]) for j in idx)
            ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(prompts[j])) + prompts[j] for j in idx], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[j])) + [1] * len(prompts[j]) for j in idx], device=device)
            ticker.width = width
            generated = fast.generate(
                input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([ticker]), **options
            )[:, width:]
            stats.positions += generated.shape[0] * generated.shape[1]
            for j, row in zip(idx, generated.tolist(), strict=True):
                # Cut at the first stop token; what follows is padding of rows that finished early.
                cut = next((k for k, t in enumerate(row) if t in stop_ids), None)
                stopped = cut is not None
                cut = len(row) if cut is None else cut
                stats.answer_tokens += cut
                stats.at_limit += not stopped and len(row) >= limit
                out[j] = Generation(tokenizer.decode(row[:cut], skip_special_tokens=True).strip(), cut, stopped)
            stats.seconds = time.perf_counter() - started
            bar.update(len(idx))
            bar.set_postfix(positions_per_s=f"{stats.positions_per_s:.0f}", at_limit=stats.at_limit)
    bar.close()
    model.train(was_training)
    return [o for o in out if o is not None], stats
