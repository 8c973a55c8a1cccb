"""adapter.fold_scales: LoRA's scales on the rank-r activations is the same function as PEFT's own LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model_state_dict

from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.lora_fold import FoldedLoraLinear, FoldedScales
from domaintune.models.loss import LossOptions, forward_loss
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build


def _model(make_cfg, *overrides: str) -> torch.nn.Module:
    cfg = make_cfg("adapter=lora", *overrides)
    torch.manual_seed(0)
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    for p in model.parameters():  # LoRA B starts at zero: perturb so every LoRA path carries a signal
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    return model


def _folded(model: torch.nn.Module) -> int:
    return sum(isinstance(v, FoldedScales) for m in model.modules() for v in getattr(m, "lora_variant", {}).values())


def _q_proj(model: torch.nn.Module) -> FoldedLoraLinear:
    return model.base_model.model.model.layers[0].self_attn.q_proj


def _bf16_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return _q_proj(model)(x)


def _first_batch(make_cfg, tokenizer) -> dict[str, torch.Tensor]:
    dm = build(make_cfg("adapter=lora").data, tokenizer=tokenizer)
    dm.prepare()
    return next(iter(dm.train_dataloader()))


def _fused_nodes(loss: torch.Tensor) -> int:
    """How many of the fused LoRA function's backward nodes the loss's graph holds."""
    seen, stack, count = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == "_LoraLinearBackward"
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


@pytest.mark.parametrize("fast_dropout", [True, False])
def test_folded_scales_give_peft_lora_losses_gradients_outputs_and_merges(make_cfg, tokenizer, fast_dropout: bool) -> None:
    """With the same seed (so the same dropout masks, numpy's or PEFT's nn.Dropout), the folded forward gives
    PEFT's training loss and LoRA gradients, its evaluation logits, the same saved adapter and the same merged
    weights, to fp32 rounding."""
    batch = _first_batch(make_cfg, tokenizer)
    runs = []
    for fold in (False, True):
        model = _model(
            make_cfg, f"adapter.fold_scales={fold}", f"adapter.keep_casts={fold}", f"adapter.fast_dropout={fast_dropout}"
        )
        layers = 7 * len(model.base_model.model.model.layers)
        assert _folded(model) == (layers if fold else 0)
        assert sum(type(m) is FoldedLoraLinear for m in model.modules()) == (layers if fold else 0)
        torch.manual_seed(1)
        loss, _ = forward_loss(model.train(), batch, LossOptions(True, None, True))
        # the fused function runs with FastDropout; PEFT's own nn.Dropout goes through the variant instead
        assert _fused_nodes(loss) == (layers if fold and fast_dropout else 0)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            logits = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        saved = get_peft_model_state_dict(model)
        merged = model.merge_and_unload().state_dict()
        runs.append((loss.detach(), grads, logits, saved, merged))
    (loss0, grads0, logits0, saved0, merged0), (loss1, grads1, logits1, saved1, merged1) = runs
    torch.testing.assert_close(loss1, loss0, atol=1e-5, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for k, g in grads0.items():
        torch.testing.assert_close(grads1[k], g, atol=1e-6, rtol=1e-4, msg=k)
    torch.testing.assert_close(logits1, logits0, atol=1e-4, rtol=1e-4)
    assert saved1.keys() == saved0.keys() and all(torch.equal(saved1[k], v) for k, v in saved0.items())
    assert merged1.keys() == merged0.keys()
    for k, w in merged0.items():
        torch.testing.assert_close(merged1[k], w, atol=1e-6, rtol=1e-5, msg=k)


def test_fused_function_gives_peft_lora_under_bf16_autocast(make_cfg, tokenizer) -> None:
    """Under bf16 autocast (the AMX default) the fused function computes its products in bf16 as F.linear does,
    returns bf16 outputs and gives A and B fp32 gradients: PEFT's loss and gradients to bf16 rounding. (bf16's
    rounding hides a 1% error; the fp32 test above checks the function itself to fp32 rounding.)"""
    batch = _first_batch(make_cfg, tokenizer)
    runs = []
    for fold in (False, True):
        model = _model(make_cfg, f"adapter.fold_scales={fold}", f"adapter.keep_casts={fold}")
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = forward_loss(model.train(), batch, LossOptions(True, None, True))
        assert _fused_nodes(loss) == (7 * len(model.base_model.model.model.layers) if fold else 0)
        loss.backward()
        runs.append((loss.detach().float(), {k: p.grad for k, p in model.named_parameters() if p.requires_grad}))
    (loss0, grads0), (loss1, grads1) = runs
    torch.testing.assert_close(loss1, loss0, atol=0, rtol=1e-2)
    for k, g in grads0.items():
        assert grads1[k].dtype == torch.float32
        assert float((grads1[k] - g).norm() / g.norm()) < 2e-2, k  # measured up to 1.1%: bf16 rounding


def test_unmerge_restores_the_base_weights(make_cfg) -> None:
    """merge then unmerge through the folded variant leaves the base weights as they were (to rounding)."""
    model = _model(make_cfg)
    layer = _q_proj(model)
    before = layer.base_layer.weight.detach().clone()
    layer.merge(safe_merge=True)
    assert not torch.allclose(layer.base_layer.weight, before)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, before, atol=1e-6, rtol=0)


def test_the_key_is_refused_where_nothing_could_fold(make_cfg) -> None:
    """Set where no plain LoRA linear exists (IA3, DoRA's own variant) the key would change nothing: refused."""
    with pytest.raises(DomainTuneError, match="adapter=ia3 has no LoRA layers"):
        _model(make_cfg, "adapter=ia3", "+adapter.fold_scales=true")
    with pytest.raises(DomainTuneError, match="adapter=dora has no plain LoRA linears"):
        _model(make_cfg, "adapter=dora", "adapter.fold_scales=true")
    assert _folded(_model(make_cfg, "adapter=dora")) == 0  # dora.yaml sets it false


@pytest.mark.parametrize("input_grad", [True, False])
def test_fused_function_is_lora_with_and_without_an_input_gradient(input_grad: bool) -> None:
    """`_LoraLinear` against LoRA written out with autograd: output and gradients for x, A and B; where x needs no
    gradient (a projection of the frozen embeddings) A's and B's gradients are still right and x gets none."""
    from domaintune.models.lora_fold import _LoraLinear

    torch.manual_seed(0)
    x, weight, bias = torch.randn(3, 5, 8), torch.randn(6, 8), torch.randn(6)
    dropped = torch.tensor([1, 7, 20, 119])
    runs = []
    for fused in (True, False):
        xi = x.clone().requires_grad_(input_grad)
        a = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        b = torch.randn(6, 4, generator=torch.Generator().manual_seed(2)).requires_grad_()
        if fused:
            y = _LoraLinear.apply(xi, weight, bias, a, b, dropped, 0.5)
        else:
            keep = torch.ones(x.numel())
            keep[dropped] = 0.0
            y = xi @ weight.t() + bias + ((xi * keep.view(x.shape)) @ a.t() * 0.5) @ b.t()
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3)))
        runs.append((y.detach(), xi.grad, a.grad, b.grad))
    (out, grad_x, grad_a, grad_b), (ref, ref_x, ref_a, ref_b) = runs
    assert (grad_x is None) == (ref_x is None) == (not input_grad)
    if input_grad:
        torch.testing.assert_close(grad_x, ref_x, atol=1e-5, rtol=1e-5)
    for got, want in ((out, ref), (grad_a, ref_a), (grad_b, ref_b)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_kept_casts_are_reused_and_give_the_same_outputs(make_cfg) -> None:
    """adapter.keep_casts: under bf16 autocast the fp32 base weight is cast once and the same copy serves the next
    forward, with outputs equal to casting it every time; without autocast nothing is kept."""
    kept, fresh = _model(make_cfg).eval(), _model(make_cfg, "adapter.keep_casts=false").eval()
    x = torch.randn(2, 5, _q_proj(kept).in_features)
    first = _bf16_output(kept, x)
    copy = _q_proj(kept).kept_cast[1]
    assert copy.dtype == torch.bfloat16 and torch.equal(copy, _q_proj(kept).base_layer.weight.to(torch.bfloat16))
    assert torch.equal(_bf16_output(kept, x), first) and _q_proj(kept).kept_cast[1] is copy
    assert torch.equal(_bf16_output(fresh, x), first) and _q_proj(fresh).kept_cast is None
    with torch.no_grad():
        _q_proj(kept).base_layer.weight.mul_(1.0)  # no change of value, but a new version: cast again
    _bf16_output(kept, x)
    assert _q_proj(kept).kept_cast[1] is not copy
    other = _model(make_cfg)
    with torch.no_grad():
        _q_proj(other)(x)  # fp32: the weight's own dtype, nothing to keep
    assert _q_proj(other).kept_cast is None


def test_a_kept_cast_follows_changes_of_the_base_weight(make_cfg) -> None:
    """After an in-place update, a merge or an unmerge of the base weight, the next bf16 forward uses the weight
    as it now is, as a layer that casts every time does (PEFT's merges write through `.data`, unversioned)."""
    kept, fresh = _model(make_cfg).eval(), _model(make_cfg, "adapter.keep_casts=false").eval()
    x = torch.randn(2, 5, _q_proj(kept).in_features)
    _bf16_output(kept, x)
    for model in (kept, fresh):
        with torch.no_grad():
            _q_proj(model).base_layer.weight.add_(0.5)
    assert torch.equal(_bf16_output(kept, x), _bf16_output(fresh, x))
    for step in ("merge", "unmerge"):
        for model in (kept, fresh):
            getattr(_q_proj(model), step)()
        assert _q_proj(kept).kept_cast is None, step
        if step == "unmerge":  # merged layers run PEFT's forward on the merged weight; unmerged, the fused one
            assert torch.equal(_bf16_output(kept, x), _bf16_output(fresh, x))


def test_a_cast_kept_in_inference_mode_serves_a_training_step(make_cfg) -> None:
    """A cast first kept under torch.inference_mode (an evaluation, DPO's reference pass) is a normal tensor, so the
    training step after it can save it for its backward, and gives the gradients of a layer that casts every time."""
    kept, fresh = _model(make_cfg), _model(make_cfg, "adapter.keep_casts=false")
    x = torch.randn(2, 5, _q_proj(kept).in_features)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        _q_proj(kept)(x)
    assert not _q_proj(kept).kept_cast[1].is_inference()
    grads = []
    for model in (kept, fresh):
        torch.manual_seed(3)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _q_proj(model)(x).float().square().sum().backward()
        grads.append(_q_proj(model).lora_A["default"].weight.grad)
    assert torch.equal(grads[0], grads[1])


def test_keep_casts_without_folded_layers_is_refused(make_cfg) -> None:
    """adapter.keep_casts acts through the folded layers only: set without adapter.fold_scales it is refused."""
    with pytest.raises(DomainTuneError, match=r"adapter\.keep_casts=true"):
        _model(make_cfg, "adapter.fold_scales=false")
    assert _folded(_model(make_cfg, "adapter.fold_scales=false", "adapter.keep_casts=false")) == 0
