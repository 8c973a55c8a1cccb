"""Training batches: packing several tokenised examples per row of at most `max_length` tokens, length
grouping, and the resumable per-epoch batch order.

Each example keeps its labels and gets position ids that restart at 0; transformers turns restarting
position ids (with no attention mask) into a block-diagonal causal mask for eager and SDPA attention
alike, so examples in one row never attend to each other (tests/data/test_packing.py checks the logits).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch

from domaintune.models.loss import IGNORE
from domaintune.utils.errors import DomainTuneError

Example = dict[str, list[int]]


def pack(examples: list[Example], max_length: int, seed: int) -> list[Example]:
    """First-fit-decreasing bin packing (after a seeded shuffle, so equal lengths mix across runs)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -len(examples[i]["input_ids"]))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        slot = next((r for r, space in enumerate(free) if space >= n), None)
        if slot is None:
            rows.append([i])
            free.append(max_length - n)
        else:
            rows[slot].append(i)
            free[slot] -= n
    packed = []
    for members in rows:
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for i in members:
            ids, labels = examples[i]["input_ids"], examples[i]["labels"]
            row["input_ids"] += ids
            # the first token of an example is never a target: its "previous token" belongs to another example
            row["labels"] += [IGNORE, *labels[1:]]
            row["position_ids"] += list(range(len(ids)))
        packed.append(row)
    return packed


def group_by_length(rows: list[dict[str, Any]], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of row indexes with similar lengths: a seeded shuffle (ties fall randomly), sorted by length,
    cut into batches. Batch membership is fixed for the run; the loader shuffles the batches' order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: len(rows[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_efficiency(rows: list[dict[str, Any]], batch_size: int) -> float:
    """Real tokens / tokens processed when rows are batched in order and padded to each batch's longest row."""
    real = processed = 0
    for i in range(0, len(rows), batch_size):
        lengths = [len(r["input_ids"]) for r in rows[i : i + batch_size]]
        real += sum(lengths)
        processed += max(lengths) * len(lengths)
    return real / max(processed, 1)


def check_packing(packing: Any, virtual_tokens: bool) -> None:
    """Packed rows restart position ids, which prompt/prefix tuning's virtual tokens cannot hold."""
    if packing is True and virtual_tokens:
        raise DomainTuneError(
            "data.packing=true does not work with an adapter that prepends virtual tokens (prompt or prefix tuning).",
            "Use data.packing=auto or false, or a LoRA-family, full or freeze adapter.",
        )


class EpochBatches:
    """The training batch sampler: batches of row indexes whose order depends only on (seed, epoch).

    Each epoch shuffles either fixed batches (`buckets`: length-grouped batches formed once) or the rows,
    chunked into batches of `batch_size`. Lightning calls `set_epoch`, and the loader checkpoints
    `state_dict` (epoch, batches done), so a run resumed mid-epoch, or in any later epoch, sees exactly the
    batches an uninterrupted run sees. torch's RandomSampler draws each epoch from one running generator,
    whose state a restart does not reproduce: resumed runs diverged at the next epoch (tests/e2e/test_resume_kill.py).
    """

    def __init__(
        self,
        seed: int,
        buckets: list[list[int]] | None = None,
        rows: int = 0,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.seed, self.buckets, self.rows, self.batch_size = seed, buckets, rows, batch_size
        # data parallel: each process takes every world_size-th batch of the same epoch order (the last few
        # repeat from the start so every process runs as many steps), as DistributedSampler does for rows
        self.rank, self.world_size = rank, world_size
        self.epoch, self._start, self._done = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_of(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of `epoch` (default: the current one), in order: a pure function of (seed, epoch), which
        is also what lets `trainer.budget` look ahead at the sizes of the batches still to come."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        if self.buckets is not None:
            batches = [self.buckets[k] for k in torch.randperm(len(self.buckets), generator=g).tolist()]
        else:
            order = torch.randperm(self.rows, generator=g).tolist()
            batches = [order[i : i + self.batch_size] for i in range(0, self.rows, self.batch_size)]
        if self.world_size > 1:
            batches += batches[: -len(batches) % self.world_size]
            batches = batches[self.rank :: self.world_size]
        return batches

    def __len__(self) -> int:
        total = len(self.buckets) if self.buckets is not None else -(-self.rows // self.batch_size)
        return -(-total // self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        self._done = start
        for batch in self.batches_of()[start:]:
            self._done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self._done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._start = state["epoch"], state["done"]
