"""The model loader: config-built tiny model cached by content; the real embedded GGUF (slow)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from domaintune.models.loading import load_model, materialize


def test_tiny_model_is_cached_and_reproducible(make_cfg) -> None:
    cfg = make_cfg()
    first = materialize(cfg.model)
    assert Path(first, "config.json").exists() and Path(first, "tokenizer.json").exists()
    assert materialize(cfg.model) == first
    a, tok = load_model(cfg.model)
    b, _ = load_model(cfg.model)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
    assert tok.chat_template and tok.pad_token_id is not None


def test_cache_key_changes_with_the_config(make_cfg) -> None:
    cfg = make_cfg()
    other = OmegaConf.to_container(cfg.model, resolve=True)
    other["config"]["hidden_size"] = 32
    assert materialize(other) != materialize(cfg.model)


@pytest.mark.slow
def test_embedded_smollm2_loads_and_caches(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("model=smollm2")
    with open_dict(cfg):
        cfg.model.cache_dir = str(tmp_path / "cache")
    started = time.perf_counter()
    model, tok = load_model(cfg.model)
    first = time.perf_counter() - started
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134e6 < model.num_parameters() < 135e6
    assert "<|im_start|>" in tok.chat_template
    cached = Path(materialize(cfg.model))
    assert (cached / "model.safetensors").exists() and cached.is_relative_to(tmp_path)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    started = time.perf_counter()
    again, _ = load_model(cfg.model)
    assert time.perf_counter() - started < first, "the cached copy must load faster than the GGUF"
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
        next_token = tok.decode(again(input_ids=ids).logits[0, -1].argmax())
    assert next_token.strip() == "Paris"
