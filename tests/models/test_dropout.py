"""adapter.fast_dropout: LoRA's dropout with numpy's generator is nn.Dropout's distribution, seeded by torch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from domaintune.models.adapters import apply_adapter, base_model, peft_config
from domaintune.models.checkpointing import Checkpointing, apply_checkpointing
from domaintune.models.dropout import FastDropout
from domaintune.models.loading import load_model
from domaintune.utils.errors import DomainTuneError


def _dropped(p: float, seed: int, shape: tuple[int, ...] = (1000, 1000)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.rand(shape) + 1.0  # never zero, so a zero in the output is a dropped element
    return x, FastDropout(p).train()(x)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_masks_have_the_configured_rate_and_scale(p: float) -> None:
    """Each element is dropped with probability p (the share of a million lies within 5 standard errors) and a
    kept one is scaled by 1 / (1 - p), as nn.Dropout does."""
    x, y = _dropped(p, seed=0)
    dropped = y == 0
    share = dropped.float().mean().item()
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / x.numel()), share
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))
    # rows and columns are independent draws: no row or column is all kept or all dropped in a pattern
    assert dropped.float().mean(1).std() > 0 and dropped.float().mean(0).std() > 0


def test_masks_are_seeded_by_torch() -> None:
    """torch's seed decides the mask (seed_everything and an exact resume keep working); another seed draws
    another mask, and two calls in a row draw two."""
    _, first = _dropped(0.05, seed=3)
    _, again = _dropped(0.05, seed=3)
    _, other = _dropped(0.05, seed=4)
    assert torch.equal(first == 0, again == 0)
    assert not torch.equal(first == 0, other == 0)
    torch.manual_seed(5)
    layer, x = FastDropout(0.05).train(), torch.ones(200, 200)
    assert not torch.equal(layer(x) == 0, layer(x) == 0)


def test_gradient_is_the_same_mask_and_scale() -> None:
    x = torch.rand(300, 40, requires_grad=True)
    weight = torch.randn(300, 40)
    torch.manual_seed(0)
    y = FastDropout(0.2).train()(x)
    (y * weight).sum().backward()
    keep = (y != 0).float()
    torch.testing.assert_close(x.grad, weight * keep / 0.8)


def test_evaluation_mode_and_zero_rate_are_the_identity() -> None:
    x = torch.rand(50, 50)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_lora_layers_get_it_from_the_adapter_config(make_cfg) -> None:
    """adapter=lora (fast_dropout: true) puts FastDropout in every LoRA layer; false keeps PEFT's nn.Dropout;
    lora_dropout 0 keeps PEFT's Identity; an adapter without LoRA layers refuses the key instead of ignoring it."""

    def dropouts(*overrides: str) -> list[nn.Module]:
        cfg = make_cfg(*overrides)
        model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
        return [
            d
            for m in model.modules()
            if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
            for d in m.lora_dropout.values()
        ]

    fast = dropouts("adapter=lora")
    assert fast and all(type(d) is FastDropout and d.p == 0.05 for d in fast)
    peft = dropouts("adapter=lora", "adapter.fast_dropout=false")
    assert len(peft) == len(fast) and all(type(d) is nn.Dropout for d in peft)
    assert all(type(d) is nn.Identity for d in dropouts("adapter=lora", "adapter.peft.lora_dropout=0.0"))
    assert all(type(d) is FastDropout for d in dropouts("adapter=dora"))
    with pytest.raises(DomainTuneError, match="adapter=ia3 has no LoRA layers"):
        dropouts("adapter=ia3", "+adapter.fast_dropout=true")


def test_gradient_checkpointing_recomputes_the_same_masks(make_cfg, tokenizer) -> None:
    """The backward of a checkpointed block runs its forward again; the masks must come out the same there (the
    seed is drawn from torch's generator, whose state the checkpoint restores), or the gradients would be wrong."""
    from domaintune.models.loss import LossOptions, forward_loss
    from domaintune.utils.hydra import build

    cfg = make_cfg("adapter=lora")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).train()
        apply_checkpointing(base_model(model), Checkpointing(checkpointing, 0))
        for p in model.parameters():  # LoRA B starts at zero: perturb so every LoRA path carries gradient
            if p.requires_grad:
                p.data.normal_(0, 0.02)
        torch.manual_seed(1)
        loss, _ = forward_loss(model, batch, LossOptions(True, None))
        loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.requires_grad})
    assert any(type(m) is FastDropout for m in model.modules())
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize("scale", [1 / 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_and_scale_is_nn_dropouts_formula_bit_for_bit(dtype: torch.dtype, scale: float) -> None:
    """`apply_mask` gives exactly the values and gradients of nn.Dropout's CPU formula, `x.mul(mask).mul_(scale)`
    with the mask in x's dtype, in fp32 and bf16 (an infinity at a dropped position becomes nan, as there), and
    with scale 1 (the folded LoRA path) just the masked x."""
    from domaintune.models.dropout import apply_mask

    torch.manual_seed(0)
    start = torch.randn(4, 7, 33).to(dtype)
    start[0, 0, :3] = float("inf")
    keep = torch.rand(start.shape) >= 0.3
    keep[0, 0, :2] = False
    upstream = torch.randn(start.shape).to(dtype)
    results = []
    for fn in (lambda x: x.mul(keep.to(dtype)).mul_(scale), lambda x: apply_mask(x, keep, scale)):
        x = start.clone().requires_grad_(True)
        y = fn(x)
        y.backward(upstream)
        results.append((y.detach(), x.grad))
    (ref, ref_grad), (out, grad) = results
    assert out.dtype == dtype and torch.equal(out.isnan(), ref.isnan()) and bool(out[0, 0, :2].isnan().all())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num()) and torch.equal(grad, ref_grad)
