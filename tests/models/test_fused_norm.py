"""`model.fused_norm`: RMSNorm as one autograd function that, under autocast, writes its output in the autocast dtype.
Its values and gradients are the model's own norm's (fp32 rounding), for every class it takes, and a bf16 step's
gradients stay as close to fp32's as with transformers' norm."""

from __future__ import annotations

import pytest
import torch

from domaintune.models.fused_norm import NORMS, _RMSNorm, fuse_norms
from tests.models.tiny_lora import grad_error, tiny_lora_batch, trainable_grads


@pytest.mark.parametrize("norm_class", NORMS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-input", "bf16-input"])
def test_the_fused_norm_is_the_models_own(norm_class: type, dtype: torch.dtype) -> None:
    """Values, input gradient and weight gradient (full fine-tuning trains the norm) equal the class's own forward
    in fp32 to rounding, on a non-contiguous input; under autocast the output comes in the autocast dtype and
    rounds the same values."""
    torch.manual_seed(0)
    norm = norm_class(48, eps=1e-5)
    norm.weight.data.normal_(1.0, 0.2)
    x0 = (torch.randn(3, 48, 7) * 3).transpose(1, 2).to(dtype)  # (3, 7, 48), non-contiguous
    grad = torch.randn(3, 7, 48)
    results = []
    for fused in (False, True):
        x = x0.detach().clone().requires_grad_(True)
        norm.weight.grad = None
        out = _RMSNorm.apply(x, norm.weight, norm.variance_epsilon, torch.float32) if fused else norm(x.float())
        out.backward(grad)
        results.append((out.detach(), x.grad, norm.weight.grad))
    (ref, ref_gx, ref_gw), (out, gx, gw) = results
    assert out.dtype == torch.float32 and gx.dtype == dtype
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(gx.float(), ref_gx.float(), atol=1e-5, rtol=1e-4 if dtype == torch.float32 else 1e-2)
    assert torch.allclose(gw, ref_gw, atol=1e-4, rtol=1e-4)

    fuse_norms(norm)
    assert type(norm).__name__ == f"Fused{norm_class.__name__}" and isinstance(norm, norm_class)
    x = x0.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = norm(x)
    assert auto.dtype == torch.bfloat16 and torch.allclose(auto.float(), ref, atol=0.0, rtol=2**-8)
    assert norm(x).dtype == torch.float32 and torch.equal(norm(x), norm_class.forward(norm, x)), "no autocast: its own"


def test_fused_norms_keep_a_bf16_steps_gradients_as_close_to_fp32(make_cfg, tokenizer) -> None:
    """The tiny Llama with fused norms: the same fp32 loss and gradients as without; under bf16 autocast its
    norms return bf16, and its gradients are as far from fp32's as transformers' norm leaves them (the one bf16 sum of
    the projections' gradients is the only difference)."""
    from domaintune.models.loss import LossOptions, forward_loss

    model, batch = tiny_lora_batch(make_cfg("adapter=lora", "model.fused_norm=false"), tokenizer)
    outputs: list[torch.dtype] = []

    def step(bf16: bool) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = forward_loss(model, batch, LossOptions(True, None, True))
        loss.backward()
        return float(loss), trainable_grads(model)

    ref_loss, ref = step(False)
    _, own_bf16 = step(True)
    assert fuse_norms(model) == 2 * len(model.base_model.model.model.layers) + 1
    hook = model.base_model.model.model.layers[0].input_layernorm.register_forward_hook(
        lambda m, a, out: outputs.append(out.dtype)
    )
    loss, grads = step(False)
    assert loss == pytest.approx(ref_loss, abs=1e-6) and grad_error(grads, ref) < 1e-5
    _, fused_bf16 = step(True)
    hook.remove()
    assert outputs == [torch.float32, torch.bfloat16]
    assert grad_error(fused_bf16, ref) < 1.2 * grad_error(own_bf16, ref) + 1e-3
