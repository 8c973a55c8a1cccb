"""`model.attention_fp32_backward_below`: training's short causal SDPA calls in bf16 run torch's CPU flash kernel
forward in bf16 (the same output as SDPA's) and its backward in fp32; every other call is SDPA's own."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from domaintune.models import attention
from domaintune.models.attention import _CausalFp32Backward, fp32_attention_backward
from tests.models.tiny_lora import grad_error, tiny_lora_batch, trainable_grads


def _qkv(length: int, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Grouped-query inputs as transformers hands them to SDPA: 4 query heads over 2 key/value heads."""
    torch.manual_seed(seed)
    return tuple(torch.randn(2, h, length, 16).to(dtype).requires_grad_(True) for h in (4, 2, 2))


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor) -> list[torch.Tensor]:
    return [g.float() for g in torch.autograd.grad(out, inputs, grad)]


@pytest.mark.parametrize("length", [1, 7, 40])
def test_the_fp32_backward_keeps_sdpas_output_and_brings_its_gradients_closer_to_fp32(length: int) -> None:
    """The forward is SDPA's own kernel (bit for bit); the gradients are closer to an fp32 SDPA's on the same
    (bf16-rounded) inputs than the bf16 kernel's (only rounded once), and close to them. One position: the query and
    key gradients are zero."""
    q, k, v = _qkv(length)
    grad = torch.randn(2, 4, length, 16).bfloat16()
    own = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    mine = _CausalFp32Backward.apply(q, k, v, None)
    assert mine.dtype == torch.bfloat16 and torch.equal(mine, own)
    exact = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
    ref = _grads(F.scaled_dot_product_attention(*exact, is_causal=True, enable_gqa=True), tuple(exact), grad.float())
    for a, b, r in zip(_grads(mine, (q, k, v), grad), _grads(own, (q, k, v), grad), ref, strict=True):
        assert (a - r).norm() <= 0.01 * r.norm()
        if r.norm() > 0 and length > 1:
            assert (a - r).norm() < 0.9 * (b - r).norm(), "an fp32 backward rounds once"


class _Net(torch.nn.Module):
    """A stand-in model for the mode's checks: its weights' dtype and whether it checkpoints."""

    def __init__(self, checkpointing: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.layer.gradient_checkpointing = checkpointing


def _routed(length: int, below: int = 32, checkpointing: bool = False, autocast: bool = False, **call: object) -> int:
    """How many of one SDPA call the mode routed to the fp32 backward (0 or 1)."""
    dtype = torch.float32 if autocast else torch.bfloat16
    q, k, v = _qkv(length, dtype)
    kwargs = {"is_causal": True, "enable_gqa": True, **call}
    with (
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
        fp32_attention_backward(below, _Net(checkpointing).to(dtype)) as mode,
    ):
        out = F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert out.dtype == torch.bfloat16
    return mode.routed


def test_the_mode_routes_only_short_causal_unmasked_calls_that_need_a_gradient() -> None:
    assert _routed(8) == 1
    assert _routed(8, autocast=True) == 1, "fp32 inputs under bf16 autocast: autocast's dtype"
    assert _routed(32) == 0, "as long as the threshold: SDPA's own"
    assert _routed(8, is_causal=False) == 0
    assert _routed(8, attn_mask=torch.ones(8, 8, dtype=torch.bool).tril()) == 0
    assert _routed(8, dropout_p=0.1) == 0
    assert _routed(8, checkpointing=True) == 0, "a checkpointed forward is recomputed outside the block"
    q, k, v = _qkv(8)
    net = _Net(False).bfloat16()
    with fp32_attention_backward(32, net) as mode, torch.no_grad():
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert mode.routed == 0, "no gradient (evaluation, generation): SDPA's own"
    with torch.no_grad(), fp32_attention_backward(32, net) as mode:
        assert mode is None, "a forward without gradients does not enter the mode"
    with fp32_attention_backward(32, _Net(False)) as mode:
        assert mode is None, "fp32 weights without autocast (fp32 training): not entered"
    q, k, v = (t.detach().float().requires_grad_(True) for t in _qkv(8))
    with fp32_attention_backward(32, net) as mode:
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert mode.routed == 0, "fp32 calls in a bf16 model: SDPA's own"
    with fp32_attention_backward(None, _Net(False)) as mode:
        assert mode is None


def test_forward_loss_takes_the_fp32_backward_for_every_layer_with_the_same_loss(make_cfg, tokenizer, monkeypatch) -> None:
    """The tiny Llama under bf16 autocast: `forward_loss` with the threshold routes every layer's attention, the loss
    is bit for bit the one without (the same forward kernel), and the gradients are as close to fp32's; the
    preference objectives' `example_nll` routes them too; a checkpointed forward routes none and trains as SDPA's own."""
    from domaintune.models.checkpointing import CHECKPOINT_KWARGS
    from domaintune.models.loss import LossOptions, example_nll, forward_loss

    cfg = make_cfg("adapter=lora")
    assert LossOptions.from_config(cfg.model).fp32_backward_below == cfg.model.attention_fp32_backward_below
    model, batch = tiny_lora_batch(cfg, tokenizer)
    calls = []
    own_apply = _CausalFp32Backward.apply
    monkeypatch.setattr(attention._CausalFp32Backward, "apply", lambda *a: calls.append(1) or own_apply(*a))

    def step(below: int | None, bf16: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = forward_loss(model, batch, LossOptions(True, None, True, below))
        loss.backward()
        return loss.detach(), trainable_grads(model)

    _, ref = step(None, bf16=False)
    own_loss, own = step(None)
    assert not calls
    loss, grads = step(10_000)
    assert len(calls) == len(model.base_model.model.model.layers)
    assert torch.equal(loss, own_loss)
    assert grad_error(grads, ref) < 1.2 * grad_error(own, ref) + 1e-3
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        example_nll(model, batch, LossOptions(True, None, True, 10_000))
    assert len(calls) == len(model.base_model.model.model.layers), "DPO and ORPO train through example_nll"
    calls.clear()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
    checkpointed_loss, checkpointed = step(10_000)  # recomputed in the backward pass: no routing, no mismatch
    assert not calls and torch.equal(checkpointed_loss, own_loss)
    assert grad_error(checkpointed, own) < 1e-6


@pytest.mark.parametrize("below", [-3, 1, True, "short", 2.5])
def test_a_threshold_that_is_not_a_number_of_positions_is_refused(make_cfg, below: object) -> None:
    from domaintune.models.loss import LossOptions
    from domaintune.utils.errors import DomainTuneError

    spec = {**make_cfg().model, "attention_fp32_backward_below": below}
    with pytest.raises(DomainTuneError, match=r"model\.attention_fp32_backward_below=.*null for SDPA's own"):
        LossOptions.from_config(spec)
    assert LossOptions.from_config({**spec, "attention_fp32_backward_below": None}).fp32_backward_below is None
