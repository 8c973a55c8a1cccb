"""adapter.fold_scales: LoRA's scales on the rank-r activations is the same function as PEFT's own LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model_state_dict

from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.lora_fold import FoldedScales
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


@pytest.mark.parametrize("fast_dropout", [True, False])
def test_folded_scales_give_peft_lora_losses_gradients_outputs_and_merges(make_cfg, tokenizer, fast_dropout: bool) -> None:
    """With the same seed (so the same dropout masks, numpy's or PEFT's nn.Dropout), the folded forward gives
    PEFT's training loss and LoRA gradients, its evaluation logits, the same saved adapter and the same merged
    weights, to fp32 rounding."""
    dm = build(make_cfg("adapter=lora").data, tokenizer=tokenizer)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    runs = []
    for fold in (False, True):
        model = _model(make_cfg, f"adapter.fold_scales={fold}", f"adapter.fast_dropout={fast_dropout}")
        assert _folded(model) == (7 * len(model.base_model.model.model.layers) if fold else 0)
        torch.manual_seed(1)
        loss, _ = forward_loss(model.train(), batch, LossOptions(True, None))
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


def test_unmerge_restores_the_base_weights(make_cfg) -> None:
    """merge then unmerge through the folded variant leaves the base weights as they were (to rounding)."""
    model = _model(make_cfg)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
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
