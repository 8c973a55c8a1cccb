"""adapter.fast_dropout: LoRA's dropout with numpy's generator is nn.Dropout's distribution, seeded by torch."""

from __future__ import annotations

import math

import numpy as np
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
        loss, _ = forward_loss(model, batch, LossOptions(True, None, True))
        loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.requires_grad})
    assert any(type(m) is FastDropout for m in model.modules())
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, atol=1e-6, rtol=1e-5, msg=k)


def test_positions_are_the_seeds_whatever_the_block_size() -> None:
    """Drawn in blocks that fall short (one gap a block) the positions are those of one long block: ascending,
    distinct, inside the tensor, and a function of the seed alone."""
    from domaintune.models.dropout import dropped_positions

    whole = dropped_positions(0.3, 5000, seed=11)
    assert torch.equal(dropped_positions(0.3, 5000, seed=11, block=1), whole)
    assert torch.equal(dropped_positions(0.3, 5000, seed=11, block=7), whole)
    assert bool((whole[1:] > whole[:-1]).all()) and int(whole[0]) >= 0 and int(whole[-1]) < 5000
    assert not torch.equal(dropped_positions(0.3, 5000, seed=12), whole)


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2, 1 / 3, 0.5])
def test_the_gaps_are_numpys_geometric_draws(p: float) -> None:
    """The whole-array gaps equal numpy's own `Generator.geometric` from the same seed (below p = 1/3 they are
    computed by its formula, from it by numpy itself), and the positions are the running sums of those gaps,
    so the masks are the ones drawn before the gaps were vectorised."""
    from domaintune.models.dropout import _geometric_gaps, dropped_positions

    for seed in range(20):
        mine = _geometric_gaps(np.random.Generator(np.random.SFC64(seed)), p, 4000)
        numpys = np.random.Generator(np.random.SFC64(seed)).geometric(p, size=4000)
        assert mine.dtype == torch.int64 and np.array_equal(mine.numpy(), numpys), seed
        positions = np.cumsum(numpys) - 1
        expected = torch.from_numpy(positions[: np.searchsorted(positions, 3000)])
        assert torch.equal(dropped_positions(p, 3000, seed, block=4000), expected), seed


@pytest.mark.parametrize("scale", [1 / 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_at_is_a_scale_with_the_positions_zeroed(dtype: torch.dtype, scale: float) -> None:
    """`zero_at` gives x * scale with the given positions zeroed, and the same for the gradient, in fp32 and bf16
    and on a non-contiguous input; an infinity at a dropped position becomes 0 (set, not multiplied), one at a
    kept position stays; scale 1 (the folded LoRA path) is just the zeroed x."""
    from domaintune.models.dropout import zero_at

    torch.manual_seed(0)
    start = torch.randn(4, 33, 7).to(dtype).transpose(1, 2)  # non-contiguous, as a transposed activation
    start[0, 0, :3] = float("inf")
    keep = torch.rand(start.shape) >= 0.3
    keep[0, 0, :2] = False
    keep[0, 0, 2] = True
    positions = torch.nonzero(~keep.reshape(-1)).squeeze(1)
    upstream = torch.randn(start.shape).to(dtype)
    x = start.clone().requires_grad_(True)
    y = zero_at(x, positions, scale)
    y.backward(upstream)
    assert y.dtype == dtype and y.shape == start.shape
    assert bool((y[~keep] == 0).all()) and bool(y[0, 0, 2].isinf())
    torch.testing.assert_close(y[keep], (start * scale)[keep], atol=0, rtol=0)
    torch.testing.assert_close(x.grad, torch.where(keep, upstream * scale, 0.0).to(dtype), atol=0, rtol=0)
