"""Batched generation with the same prompt rendering as training."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
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


def generate_options(cfg: dict[str, Any], renderer: ChatRenderer, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """`model.generate` keyword arguments from a generation config: greedy unless do_sample, stopping at
    the template's end-of-turn token or EOS (shared by batch generation and chat.py)."""
    sampling = bool(cfg.get("do_sample", False))
    options = {"temperature": float(cfg.get("temperature", 1.0)), "top_p": float(cfg.get("top_p", 1.0))} if sampling else {}
    return {
        "max_new_tokens": int(cfg.get("max_new_tokens", 128)),
        "do_sample": sampling,
        "eos_token_id": renderer.stop_token_ids(),
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
        **options,
    }


@torch.inference_mode()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    renderer: ChatRenderer,
    conversations: list[list[Message]],
    cfg: dict[str, Any],
) -> tuple[list[Generation], float]:
    """Generate the next assistant turn for each conversation; returns generations and generated tokens/s.

    Prompts are left-padded so every row's new tokens start at the same column; generation stops at the
    template's end-of-turn token or EOS.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    options = generate_options(cfg, renderer, tokenizer)
    stop_ids = options["eos_token_id"]
    batch_size = int(cfg.get("batch_size", 8))
    out: list[Generation] = []
    n_new, started = 0, time.perf_counter()
    for i in range(0, len(conversations), batch_size):
        prompts = [renderer.prompt_ids(c) for c in conversations[i : i + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        generated = model.generate(input_ids=ids, attention_mask=mask, **options)[:, width:]
        for row in generated.tolist():
            # Cut at the first stop token; what follows is padding of rows that finished early.
            cut = next((j for j, t in enumerate(row) if t in stop_ids), len(row))
            n_new += cut
            out.append(Generation(tokenizer.decode(row[:cut], skip_special_tokens=True).strip(), cut))
    elapsed = max(time.perf_counter() - started, 1e-9)
    model.train(was_training)
    return out, n_new / elapsed
