"""Batching: dynamic padding to the longest example of each batch."""

from __future__ import annotations

from typing import Any

import torch

from domaintune.data.chat import IGNORE


def pad_collate(examples: list[dict[str, Any]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad input_ids with pad_id, labels with -100, and build the attention mask (and position ids if packed)."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    packed = "position_ids" in examples[0]
    if packed:
        batch["position_ids"] = []
    for e in examples:
        n = len(e["input_ids"])
        pad = width - n

        def place(seq: list[int], fill: int, pad: int = pad) -> list[int]:
            return seq + [fill] * pad if side == "right" else [fill] * pad + seq

        batch["input_ids"].append(place(list(e["input_ids"]), pad_id))
        batch["attention_mask"].append(place([1] * n, 0))
        batch["labels"].append(place(list(e.get("labels", [IGNORE] * n)), IGNORE))
        if packed:
            batch["position_ids"].append(place(list(e["position_ids"]), 0))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
