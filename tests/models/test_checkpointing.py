"""model.gradient_checkpointing=auto: only the training batches above checkpoint_above_tokens are checkpointed."""

from __future__ import annotations

import pytest
import torch

from domaintune.models.adapters import _blocks, apply_adapter, base_model, peft_config
from domaintune.models.checkpointing import Checkpointing, LongBatchCheckpointing, apply_checkpointing
from domaintune.models.loading import load_model
from domaintune.models.loss import LossOptions, forward_loss
from domaintune.utils.errors import DomainTuneError


def _batch(rows: int, length: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 100, (rows, length))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_auto_checkpoints_only_the_long_batches_with_the_same_gradients(make_cfg) -> None:
    """A block's MLP runs twice in a step (once more in the backward) exactly when its batch has more
    positions than the threshold; evaluation forwards are neither checkpointed nor counted; the gradients of a
    checkpointed batch equal those of the same batch run without checkpointing."""
    cfg = make_cfg("adapter=lora", "adapter.peft.lora_dropout=0.0")

    def model_with(mode: bool | str) -> tuple[torch.nn.Module, LongBatchCheckpointing | None, list[int]]:
        torch.manual_seed(0)
        model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).train()
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.02)
        hook = apply_checkpointing(base_model(model), Checkpointing(mode, 2 * 16))
        calls: list[int] = []
        # a module inside the block, before it runs: transformers checkpoints the block's forward (not its
        # __call__), and the recomputation stops once it has what the backward needs (a hook after the MLP's
        # forward would not see it)
        _blocks(base_model(model))[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        return model, hook, calls

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor], calls: list[int]) -> tuple[int, dict]:
        model.zero_grad()
        calls.clear()
        loss, _ = forward_loss(model, batch, LossOptions(True, None, True))
        loss.backward()
        return len(calls), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    model, hook, calls = model_with("auto")
    short, long = _batch(2, 16), _batch(2, 17)
    assert step(model, short, calls)[0] == 1
    runs, auto_grads = step(model, long, calls)
    assert runs == 2
    assert step(model, short, calls)[0] == 1  # and back off
    with torch.no_grad():
        model.eval()(**{k: v for k, v in long.items() if k != "labels"})
    assert (hook.forwards, hook.checkpointed) == (3, 1)
    assert "1 of 3 training forwards" in hook.summary()

    plain, none, plain_calls = model_with(False)
    assert none is None
    runs, plain_grads = step(plain, long, plain_calls)
    assert runs == 1
    for k, g in plain_grads.items():
        torch.testing.assert_close(auto_grads[k], g, atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.gradient_checkpointing=sometimes"], "is not one of true, false, auto"),
        (["model.checkpoint_above_tokens=0"], "at least 1"),
        (["model.checkpoint_above_tokens=null"], "needs model.checkpoint_above_tokens"),
    ],
)
def test_bad_checkpointing_settings_are_refused_before_anything_loads(make_cfg, overrides, match) -> None:
    from domaintune.core.checks import check_config

    with pytest.raises(DomainTuneError, match=match):
        check_config(make_cfg(*overrides))
