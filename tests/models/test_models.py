"""The model loader: config-built tiny model cached by content; the real embedded GGUF (slow)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from domaintune.models.loading import load_model, materialize
from domaintune.utils.hydra import build


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


# ------------------------------------------------------------------------------------------ fast loss
@pytest.mark.parametrize("boolean_mask", [True, False], ids=["bool-mask", "positions"])
@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("adapter", ["lora", "full", "prompt_tuning"])
def test_answer_only_logits_give_the_same_loss_and_gradients(
    make_cfg, tokenizer, monkeypatch, packing: bool, adapter: str, chunk: int | None, boolean_mask: bool
) -> None:
    """The LM head at trained positions only (the default), in chunks or not, changes neither the loss nor
    its gradients (for full fine-tuning that includes the head, tied to the embeddings); also through the
    1-D positions fallback that transformers releases without boolean masks get (5.17 on the GPU image)."""
    from domaintune.models import loss as module
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loss import LossOptions, forward_loss

    monkeypatch.setattr(module, "BOOLEAN_LOGITS_TO_KEEP", boolean_mask)

    cfg = make_cfg(f"adapter={adapter}", f"data.packing={str(packing).lower()}")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    assert (batch["labels"] == -100).any(), "the batch must have untrained positions (prompt or padding)"
    torch.manual_seed(0)
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).train()
    for p in model.parameters():  # LoRA B starts at zero: perturb so the adapter's gradients are non-trivial
        if p.requires_grad:
            p.data.normal_(0, 0.02)
    results = []
    for opts in (LossOptions(False, None, True), LossOptions(True, chunk, True)):
        model.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        loss, n = forward_loss(model, batch, opts)
        loss.backward()
        results.append((loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}))
    (full_loss, n_full, full_grads), (fast_loss, n_fast, fast_grads) = results
    assert n_full == n_fast and int(n_full) > 0
    assert torch.allclose(full_loss, fast_loss, atol=1e-5, rtol=0)
    for k, g in full_grads.items():
        assert torch.allclose(g, fast_grads[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("adapter", ["lora", "prompt_tuning", "prefix_tuning"])
def test_causal_padding_gives_the_masked_loss_and_gradients(make_cfg, tokenizer, adapter: str, attention: str) -> None:
    """`model.causal_padding` runs right-padded rows without their padding mask: the model is called without one,
    and the loss, per-example NLL and every trainable gradient equal the masked run's (fp32, same dropout)."""
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loss import LossOptions, example_nll, forward_loss, row_inputs

    cfg = make_cfg(f"adapter={adapter}", f"model.attn_implementation={attention}")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    assert not bool(batch["attention_mask"].all()), "the batch must have padded rows"
    torch.manual_seed(0)
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).train()
    for p in model.parameters():  # LoRA B starts at zero: perturb so every adapter weight has a gradient
        if p.requires_grad:
            p.data.normal_(0, 0.02)
    called: list[bool] = []
    model.register_forward_pre_hook(lambda m, a, kw: called.append(kw.get("attention_mask") is None), with_kwargs=True)
    results = []
    for causal in (False, True):
        opts = LossOptions(True, None, causal)
        assert ("attention_mask" in row_inputs(batch, opts)) is not causal
        model.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        loss, _ = forward_loss(model, batch, opts)
        loss.backward()
        with torch.no_grad():
            nll, _ = example_nll(model.eval(), batch, opts)
        model.train()
        results.append((loss.detach(), nll, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}))
    assert called == [False, False, True, True], "the causal run must call the model without a mask"
    (loss, nll, grads), (causal_loss, causal_nll, causal_grads) = results
    assert torch.allclose(loss, causal_loss, atol=1e-6, rtol=0)
    assert torch.allclose(nll, causal_nll, atol=1e-5, rtol=0)
    for k, g in grads.items():
        assert g.abs().sum() > 0 and torch.allclose(g, causal_grads[k], atol=1e-6, rtol=1e-5), k


def test_causal_padding_keeps_any_other_mask(make_cfg, tokenizer) -> None:
    """Left padding, packed rows and masks with holes keep their masks: for left padding the causal mask
    alone would let real tokens see the padding before them, and the loss would change."""
    from domaintune.models.loss import LossOptions, forward_loss, row_inputs

    opts = LossOptions(True, None, True)
    ids = torch.tensor([[2, 2, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    labels = torch.tensor([[-100, -100, -100, -100, 7, 8], [-100, -100, -100, 12, 13, 14]])
    left = {"input_ids": ids, "labels": labels, "attention_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])}
    holes = {**left, "attention_mask": torch.tensor([[1, 0, 1, 1, 1, 1], [1] * 6])}
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    packed = {**left, "attention_mask": right, "position_ids": torch.arange(6)[None].repeat(2, 1)}
    for batch in (left, holes, packed):
        assert torch.equal(row_inputs(batch, opts)["attention_mask"], batch["attention_mask"])
    model, _ = load_model(make_cfg().model)
    with torch.no_grad():
        kept, _ = forward_loss(model, left, opts)
        dropped, _ = forward_loss(model, {k: v for k, v in left.items() if k != "attention_mask"}, opts)
    assert not torch.allclose(kept, dropped, atol=1e-4)


@pytest.mark.parametrize("boolean_mask", [True, False], ids=["bool-mask", "positions"])
def test_answer_only_logits_refuse_a_model_that_ignores_the_mask(make_cfg, tokenizer, monkeypatch, boolean_mask) -> None:
    from domaintune.models import loss as module
    from domaintune.models.loss import LossOptions, forward_loss

    monkeypatch.setattr(module, "BOOLEAN_LOGITS_TO_KEEP", boolean_mask)
    from domaintune.utils.errors import DomainTuneError

    model, _ = load_model(make_cfg().model)

    class AllLogits(torch.nn.Module):  # an architecture whose forward has no boolean logits_to_keep
        def forward(self, logits_to_keep=None, **kwargs):
            return model(**kwargs)

    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "labels": torch.tensor([[-100, -100, 7, 8]])}
    with pytest.raises(DomainTuneError, match=r"model\.answer_only_logits=false"):
        forward_loss(AllLogits(), batch, LossOptions(True, None, True))


@pytest.mark.parametrize("answer_only", [True, False])
@pytest.mark.parametrize("adapter", ["lora", "prompt_tuning", "prefix_tuning"])
def test_per_example_nll_adds_up_to_the_training_loss(make_cfg, tokenizer, adapter: str, answer_only: bool) -> None:
    """Evaluation keeps the loss per example; summed and token-weighted it is the batch loss training uses
    (prompt tuning's virtual-token positions included)."""
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loss import LossOptions, example_nll, forward_loss

    cfg = make_cfg(f"adapter={adapter}")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.eval_dataloader("validation")))
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).eval()
    opts = LossOptions(answer_only, None, True)
    with torch.no_grad():
        nll, tokens = example_nll(model, batch, opts)
        loss, n = forward_loss(model, batch, opts)
    assert nll.shape == (batch["labels"].shape[0],) and int(tokens.sum()) == int(n)
    assert float(nll.sum() / tokens.sum()) == pytest.approx(float(loss), abs=1e-5)
    # one example alone gets the same NLL as inside the batch
    one = {k: v[:1] for k, v in batch.items()}
    with torch.no_grad():
        alone, _ = example_nll(
            model, {k: v[:, : int(one["attention_mask"].sum())] if v.dim() == 2 else v for k, v in one.items()}, opts
        )
    assert float(alone[0]) == pytest.approx(float(nll[0]), abs=1e-4)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cross_entropy_equals_the_upcast_one(dtype: torch.dtype, overwrite: bool) -> None:
    """`token_cross_entropy` / `mean_cross_entropy` (the fused forms training and evaluation use) give
    F.cross_entropy(logits.float())'s per-row and mean losses and their gradients (a different incoming gradient
    per row), over several row blocks with a ragged last one. Without `overwrite_logits` the logits stay as
    they were (an fp32 `.float()` is the same tensor: an in-place step on it would corrupt them); with it, the
    gradient lives in the logits' own memory (no new rows x vocabulary tensor)."""
    from torch.nn import functional as F

    from domaintune.models.loss import CE_ROWS, mean_cross_entropy, token_cross_entropy

    torch.manual_seed(0)
    rows = 2 * CE_ROWS + 5
    start = (torch.randn(rows, 301) * 3).to(dtype)
    targets = torch.randint(0, 301, (rows,))
    weights = torch.rand(rows)
    upcast = (
        lambda z: F.cross_entropy(z.float(), targets, reduction="none"),
        lambda z: F.cross_entropy(z.float(), targets),
    )
    fused = (
        lambda z: token_cross_entropy(z, targets, overwrite_logits=overwrite),
        lambda z: mean_cross_entropy(z, targets, overwrite_logits=overwrite),
    )
    for ref_fn, fn in zip(upcast, fused, strict=True):
        results = []
        for f, is_fused in ((ref_fn, False), (fn, True)):
            leaf = start.clone().requires_grad_(True)
            logits = leaf * 1  # an intermediate, as the LM head's output is (a leaf could not be overwritten)
            seen = []  # the memory of the gradient that reaches the logits
            logits.register_hook(lambda g, seen=seen: seen.append(g.data_ptr()))
            loss = f(logits)
            (loss * weights).sum().backward() if loss.dim() else loss.backward()
            if is_fused and overwrite:
                assert seen == [logits.data_ptr()]  # the gradient took the logits' memory
            else:
                assert torch.equal(logits.detach(), start)
            results.append((loss.detach(), leaf.grad))
        (ref_loss, ref_grad), (loss, grad) = results
        assert loss.dtype == torch.float32 and loss.shape == ref_loss.shape and grad.dtype == dtype
        # the mean keeps its old absolute bound; per-row losses (~10) get fp32's relative rounding as well
        assert torch.allclose(loss, ref_loss, atol=1e-6, rtol=1e-6 if loss.dim() else 0.0)
        # fp32: to rounding; bf16: the same gradient rounded once to bf16 (one unit in the last place at most)
        tol = (2**-20 if dtype == torch.float32 else 2**-8) * ref_grad.float().abs().max().item()
        assert (grad.float() - ref_grad.float()).abs().max().item() <= tol
    assert torch.isnan(mean_cross_entropy(start[:0], targets[:0]))
    assert token_cross_entropy(start[:0], targets[:0]).shape == (0,)


def test_overwriting_logits_that_their_own_op_keeps_raises() -> None:
    """Logits made by an op whose backward reads its own output (exp here) must not be overwritten: autograd's
    version check raises rather than letting a wrong gradient through."""
    from domaintune.models.loss import mean_cross_entropy

    x = torch.randn(5, 11, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        mean_cross_entropy(x.exp(), torch.randint(0, 11, (5,)), overwrite_logits=True).backward()
    mean_cross_entropy(x.exp(), torch.randint(0, 11, (5,))).backward()  # fine without overwriting
