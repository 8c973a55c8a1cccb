"""Batched generation with the same prompt rendering as training."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import PreTrainedTokenizerBase

from domaintune.data.chat import ChatRenderer
from domaintune.data.formats import Message


@dataclass
class Generation:
    text: str
    n_tokens: int


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


@contextlib.contextmanager
def merged_adapter(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Generate with a LoRA-family adapter folded into the base weights, then restore them bit for bit.

    Unmerged, every adapted linear layer runs two extra small matmuls per token, which made the tuned model
    generate at ~40% of the base model's speed on CPU. PEFT's unmerge subtracts the delta again, which
    leaves float rounding in the frozen weights; we keep the original tensors and put them back instead,
    so training and later evaluations see exactly the weights they had. Prompt-learning adapters and plain
    models are returned as they are.
    """
    mergeable = enabled and isinstance(model, PeftModel) and not model.active_peft_config.is_prompt_learning
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


@torch.inference_mode()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    renderer: ChatRenderer,
    conversations: list[list[Message]],
    cfg: dict[str, Any],
    merge_adapter: bool,
) -> tuple[list[Generation], float]:
    """Generate the next assistant turn for each conversation; returns generations (in input order) and
    generated tokens/s.

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
    with merged_adapter(model, merge_adapter) as fast:
        # tokens/s of generation itself; the one-off merge (~0.1-1 s) is not part of the rate
        n_new, started = 0, time.perf_counter()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            width = max(len(prompts[j]) for j in idx)
            ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(prompts[j])) + prompts[j] for j in idx], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[j])) + [1] * len(prompts[j]) for j in idx], device=device)
            generated = fast.generate(input_ids=ids, attention_mask=mask, **options)[:, width:]
            for j, row in zip(idx, generated.tolist(), strict=True):
                # Cut at the first stop token; what follows is padding of rows that finished early.
                cut = next((k for k, t in enumerate(row) if t in stop_ids), len(row))
                n_new += cut
                out[j] = Generation(tokenizer.decode(row[:cut], skip_special_tokens=True).strip(), cut)
        elapsed = max(time.perf_counter() - started, 1e-9)
    model.train(was_training)
    return [o for o in out if o is not None], n_new / elapsed
