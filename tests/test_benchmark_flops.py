"""The benchmark's count of a LoRA step's needed FLOPs (scripts/devtools/flops.py) against torch's own FLOP
counter on a model whose every matmul the counter sees (eager attention), and the sequence lengths it is fed."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.loss import IGNORE, LossOptions, forward_loss
from scripts.devtools.bench import batch_stats
from scripts.devtools.flops import ModelShape, step_flops


def _inplace_addmm(self_shape: tuple[int, ...], a_shape: tuple[int, int], b_shape: tuple[int, int], *args, **kwargs) -> int:
    """torch's own addmm count, 2 m k n, for `addmm_`, which torch's counter does not list: the fused LoRA
    function (models/lora_fold.py) accumulates the base product with it."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def test_the_step_count_equals_torchs_flop_counter_on_a_lora_step(make_cfg) -> None:
    cfg = make_cfg("model.attn_implementation=eager")
    model, _ = load_model(cfg.model)
    model = apply_adapter(model, cfg.adapter, peft_config(cfg.adapter))
    # the count includes the first layer's input gradient (module docstring): make the graph need it too
    model.get_base_model().enable_input_require_grads()
    rows, length = 2, 12
    ids = torch.randint(3, 1000, (rows, length))
    labels = ids.clone()
    labels[:, :5] = IGNORE  # a 5-token prompt, 7 answer tokens per row
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _inplace_addmm}) as counter:
        loss, _ = forward_loss(model, batch, LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True))
        loss.backward()
    stats = batch_stats(batch)
    assert stats["rows"] == [length, length] and stats["answer"] == rows * 7  # positions 4..10 predict 5..11
    parts = step_flops(ModelShape.of(model), stats["rows"], stats["answer"])
    # eager attention computes every query-key pair (L^2); the count takes the causal half, L (L + 1) / 2
    counted_by_torch = parts["linear"] + parts["adapter"] + parts["head"] + parts["attention"] * 2 * length / (length + 1)
    assert counter.get_total_flops() == round(counted_by_torch)
    assert parts["adapter"] > 0 and parts["attention"] > 0 and parts["head"] > 0


def test_packed_rows_count_each_example_as_its_own_sequence() -> None:
    batch = {
        "input_ids": torch.ones(2, 6, dtype=torch.long),
        "labels": torch.full((2, 6), IGNORE),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]),
        "n_real": torch.tensor([6, 4]),  # the second row's last two positions are padding
    }
    assert batch_stats(batch)["rows"] == [3, 2, 1, 4]
    padded = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.full((2, 5), IGNORE),
              "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}  # fmt: skip
    assert batch_stats(padded)["rows"] == [3, 5]
