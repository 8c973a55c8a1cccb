"""Packing: examples in one row must not see each other, with the CPU attention kernels too."""

from __future__ import annotations

import pytest
import torch

from domaintune.data.collate import pad_collate
from domaintune.data.packing import pack, padding_efficiency
from domaintune.models.loading import load_model
from domaintune.models.loss import IGNORE
from domaintune.utils.hydra import build


def examples(lengths: list[int]) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in lengths:
        ids = torch.randint(10, 40000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (n // 2) + ids[n // 2 :]})
    return out


def test_pack_fits_rows_and_keeps_labels() -> None:
    exs = examples([30, 20, 50, 10, 45, 5])
    rows = pack(exs, max_length=64, seed=0)
    assert all(len(r["input_ids"]) <= 64 for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(e["input_ids"]) for e in exs)
    assert len(rows) == 3  # 160 tokens in rows of 64
    for r in rows:  # each example's positions restart at 0, and its first token is never a target
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0]
        assert all(r["labels"][i] == IGNORE for i in starts)
    assert padding_efficiency(rows, batch_size=2) > padding_efficiency(exs, batch_size=2)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(attention: str, make_cfg) -> None:
    cfg = make_cfg(f"model.attn_implementation={attention}")
    model, tok = load_model(cfg.model)
    model.eval()
    exs = examples([12, 7, 20])
    [row] = pack(exs, max_length=64, seed=0)
    short = {k: v[:20] for k, v in row.items()}  # one example, then padded: padding must not leak in either
    batch = pad_collate([row, short], pad_id=tok.pad_token_id)
    assert "attention_mask" not in batch
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        packed = logits[0]
        torch.testing.assert_close(
            logits[1, :20], model(input_ids=torch.tensor([short["input_ids"]])).logits[0], atol=1e-4, rtol=0
        )
        start = 0
        for ids in (exs[i]["input_ids"] for i in _order(row, exs)):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(packed[start : start + len(ids)], alone, atol=1e-4, rtol=0)
            start += len(ids)


def _order(row: dict, exs: list[dict]) -> list[int]:
    """Which example sits where in a packed row (packing sorts by length)."""
    order, start = [], 0
    while start < len(row["input_ids"]):
        i = next(i for i, e in enumerate(exs) if row["input_ids"][start : start + len(e["input_ids"])] == e["input_ids"])
        order.append(i)
        start += len(exs[i]["input_ids"])
    return order


def test_packed_training_runs(make_cfg) -> None:
    from domaintune.core.pipeline import fit_and_evaluate

    run = fit_and_evaluate(make_cfg("data.packing=true", "logger=none", "trainer.max_steps=2"))
    assert run is not None and run.trainer.global_step == 2
    assert run.datamodule.batching()["packed"] is True
    batch = next(iter(run.datamodule.train_dataloader()))
    restarts = (batch["position_ids"][:, 1:] == 0).sum()
    assert restarts > 0, "rows hold several examples (positions restart inside a row)"
    assert torch.isfinite(torch.tensor(run.flat["tuned/loss"])) and run.flat["tuned/loss"] != run.flat["base/loss"]


def test_packing_refuses_prompt_tuning(make_cfg) -> None:
    from domaintune.core.pipeline import fit_and_evaluate
    from domaintune.utils.errors import DomainTuneError

    with pytest.raises(DomainTuneError, match="packing=true does not work with an adapter that prepends virtual tokens"):
        fit_and_evaluate(make_cfg("data.packing=true", "adapter=prompt_tuning", "logger=none"))


def test_auto_packing_follows_the_padding_efficiency(make_cfg, tokenizer) -> None:
    """auto packs when packing raises the padding efficiency enough, never for virtual-token adapters, and
    the data report records the decision."""

    # batches of 16 rows pad to their longest: here packing beats them (grouping by length beats both)
    cfg = make_cfg("data.packing=auto", "data.packing_min_gain=0.0", "data.group_by_length=false", "data.batch_size=16")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    eff = dm.padding_efficiency()
    assert eff["packed"] > eff["shuffled"] and eff["grouped"] > eff["shuffled"]
    assert dm.batching()["packed"] and "position_ids" in next(iter(dm.train_dataloader()))
    assert dm.report()["batching"]["mode"] == "packed"

    never = build(make_cfg("data.packing=auto", "data.packing_min_gain=1.0").data, tokenizer=tokenizer)
    assert not never.batching()["packed"] and never.batching()["mode"] == "grouped by length"
    prompt = build(make_cfg("data.packing=auto", "data.packing_min_gain=0.0").data, tokenizer=tokenizer, packing_allowed=False)
    assert not prompt.batching()["packed"] and "virtual tokens" in prompt.batching()["reason"]


def test_length_grouped_batches_pad_less_and_cover_every_example_once(make_cfg, tokenizer) -> None:

    dm = build(make_cfg("data.packing=false", "data.group_by_length=true", "data.max_samples=40").data, tokenizer=tokenizer)
    batches = list(dm.train_dataloader())
    seen = sorted(tuple(row[row != tokenizer.pad_token_id].tolist()[:8]) for b in batches for row in b["input_ids"])
    want = sorted(tuple(e["input_ids"][:8]) for e in dm.examples["train"])
    assert seen == want, "every training example exactly once per epoch"
    real = sum(int(b["n_real"].sum()) for b in batches)
    processed = sum(b["input_ids"].numel() for b in batches)
    assert real / processed == pytest.approx(dm.padding_efficiency()["grouped"])
    assert dm.padding_efficiency()["grouped"] > dm.padding_efficiency()["shuffled"]


def test_epoch_batches_depend_on_seed_and_epoch_only_resume_mid_epoch_and_shard_across_ranks() -> None:
    from domaintune.data.packing import EpochBatches

    s = EpochBatches(seed=3, rows=10, batch_size=3)
    s.set_epoch(2)
    epoch2 = list(s)
    again = EpochBatches(seed=3, rows=10, batch_size=3)
    again.set_epoch(2)
    assert list(again) == epoch2 and sorted(i for b in epoch2 for i in b) == list(range(10))
    s.set_epoch(3)
    assert list(s) != epoch2, "each epoch has its own order"
    # resumed after 2 batches of epoch 2: the rest of the same epoch, then epoch 3 as uninterrupted
    it = iter(again)
    next(it), next(it)
    resumed = EpochBatches(seed=3, rows=10, batch_size=3)
    resumed.load_state_dict(again.state_dict())
    assert list(resumed) == epoch2[2:]
    # two data-parallel ranks: equal step counts, together every batch of the epoch
    shards = [EpochBatches(seed=3, rows=10, batch_size=3, rank=r, world_size=2) for r in (0, 1)]
    for sh in shards:
        sh.set_epoch(2)
    got = [list(sh) for sh in shards]
    assert len(got[0]) == len(got[1]) == len(shards[0]) == 2
    assert {tuple(b) for g in got for b in g} == {tuple(b) for b in epoch2}
