"""`model.autocast_rope`: under autocast the rotary embedding returns cos and sin in the autocast dtype, so q and k are
rotated in bf16 and reach attention in bf16; without autocast nothing changes, and a bf16 step's loss and gradients
stay as close to fp32's as with fp32 cos and sin."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from domaintune.models.autocast_rope import ROTARIES, cast_rotaries
from domaintune.models.loading import load_model
from tests.models.tiny_lora import grad_error, tiny_lora_batch, trainable_grads


@pytest.mark.parametrize("rotary_class", ROTARIES, ids=lambda c: c.__name__)
def test_each_rotary_class_returns_cos_and_sin_in_the_autocast_dtype(make_cfg, rotary_class: type) -> None:
    """The class's own (cos, sin) in fp32 outside autocast (bit for bit); under bf16 autocast the same values rounded
    once to bf16, where the class itself returns fp32 for fp32 hidden states."""
    config = load_model(make_cfg().model)[0].config
    rotary = rotary_class(config=config)
    x = torch.randn(2, 5, config.hidden_size)
    positions = torch.arange(5).expand(2, 5)
    cos, sin = rotary(x, positions)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        own = rotary(x, positions)
    assert own[0].dtype == torch.float32, "without the hook the class returns the hidden states' dtype (the case it fixes)"
    assert cast_rotaries(rotary) == 1
    assert all(torch.equal(a, b) for a, b in zip(rotary(x, positions), (cos, sin), strict=True)), "no autocast: its own"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hooked = rotary(x, positions)
    for got, ref in zip(hooked, (cos, sin), strict=True):
        assert got.dtype == torch.bfloat16 and torch.equal(got, ref.to(torch.bfloat16))


def test_autocast_rope_keeps_a_bf16_steps_loss_and_gradients_as_close_to_fp32(make_cfg, tokenizer) -> None:
    """The tiny Llama with and without `model.autocast_rope`: the same fp32 loss and gradients (bit for bit); under
    bf16 autocast attention gets bf16 q and k (fp32 without it), and the loss and gradients are as far from fp32's
    as with fp32 cos and sin."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from domaintune.models.loss import LossOptions, forward_loss

    def run(rope: bool) -> dict[str, tuple[float, dict[str, torch.Tensor], list[torch.dtype]]]:
        model, batch = tiny_lora_batch(make_cfg("adapter=lora", f"model.autocast_rope={str(rope).lower()}"), tokenizer)
        seen: list[torch.dtype] = []
        own = ALL_ATTENTION_FUNCTIONS["sdpa"]

        def spy(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            seen.extend((query.dtype, key.dtype))  # the q and k attention is handed, after the rotation
            return own(module, query, key, *args, **kwargs)

        out = {}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            model.zero_grad()
            seen.clear()
            torch.manual_seed(1)
            ALL_ATTENTION_FUNCTIONS["sdpa"] = spy
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss, _ = forward_loss(model, batch, LossOptions(True, None, True))
            finally:
                ALL_ATTENTION_FUNCTIONS["sdpa"] = own
            loss.backward()
            out[name] = (float(loss), trainable_grads(model), sorted(set(seen), key=str))
        assert seen, "the spy saw the attention calls"
        return out

    without, with_rope = run(False), run(True)
    assert with_rope["fp32"][0] == without["fp32"][0], "no autocast: the same loss bit for bit"
    assert all(torch.equal(with_rope["fp32"][1][k], g) for k, g in without["fp32"][1].items())
    assert without["bf16"][2] == [torch.float32], "fp32 cos and sin promote q and k to fp32 under autocast"
    assert with_rope["bf16"][2] == [torch.bfloat16]
    ref_loss, ref = without["fp32"][0], without["fp32"][1]
    assert abs(with_rope["bf16"][0] - ref_loss) < 1.5 * abs(without["bf16"][0] - ref_loss) + 2e-3
    assert grad_error(with_rope["bf16"][1], ref) < 1.2 * grad_error(without["bf16"][1], ref) + 1e-3
