"""Batching: dynamic padding to the longest example (or packed row) of each batch."""

from __future__ import annotations

from typing import Any

import torch

from domaintune.models.loss import IGNORE


def pad_collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad input_ids with pad_id and labels with -100.

    Plain examples get an attention mask. Packed rows get position ids instead and *no* attention mask:
    transformers only derives per-example attention from restarting position ids when the mask is None.
    Their padding becomes one more segment (positions from 0) that no real token can attend to.
    `n_real` counts the real tokens of each row (pad and EOS share an id in many tokenizers).
    """
    width = max(len(e["input_ids"]) for e in examples)
    packed = "position_ids" in examples[0]
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids" if packed else "attention_mask": []}
    for e in examples:
        n = len(e["input_ids"])
        pad = width - n

        def place(seq: list[int], fill: int, pad: int = pad) -> list[int]:
            return [*seq, *[fill] * pad]

        batch["input_ids"].append(place(list(e["input_ids"]), pad_id))
        batch["labels"].append(place(list(e.get("labels", [IGNORE] * n)), IGNORE))
        if packed:
            batch["position_ids"].append([*e["position_ids"], *range(pad)])
        else:
            batch["attention_mask"].append(place([1] * n, 0))
    out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    out["n_real"] = torch.tensor([len(e["input_ids"]) for e in examples], dtype=torch.long)
    return out
