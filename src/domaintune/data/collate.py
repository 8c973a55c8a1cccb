"""Batching: dynamic padding to the longest example (or packed row) of each batch."""

from __future__ import annotations

from typing import Any

import torch

from domaintune.models.loss import IGNORE
from domaintune.models.segments import segment_batch
from domaintune.utils.errors import DomainTuneError


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


def pair_collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Preference pairs as one batch of 2B rows: the B chosen answers first, then the B rejected ones (one
    forward pass scores both sides, as TRL's DPOTrainer does), padded to one width. `pairs` is B;
    `ref_logps` (2B, same order) is the reference model's summed answer log-probabilities when they were
    precomputed (objective=dpo)."""
    sides = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    sides += [{"input_ids": e["rejected_input_ids"], "labels": e["rejected_labels"]} for e in examples]
    out = pad_collate(sides, pad_id)
    out["pairs"] = torch.tensor(len(examples))
    if all("ref_logps" in e for e in examples):
        out["ref_logps"] = torch.tensor([e["ref_logps"][0] for e in examples] + [e["ref_logps"][1] for e in examples])
    return out


def choice_collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Label records as one shared row each (models/segments.py): the prompt once, then every label's answer in
    its own segment, so the `choice` objective scores all labels for the price of about one forward pass.
    Continuation k of row b is owner b * K + k; `gold` (B,) is the reference label's index, `choices` is K."""
    counts = {len(e["choices"]) for e in examples}
    if len(counts) != 1:
        raise DomainTuneError(
            f"One batch mixes records with {sorted(counts)} labels: the choice objective needs one label set.",
            "Train objective=choice on data whose label tasks share a label set.",
        )
    rows = [(e["input_ids"][: e["choice_prefix"]], e["choices"]) for e in examples]
    out = segment_batch(rows, pad_id)
    out["n_real"] = out["lengths"]  # tokens processed per row (the throughput counts these)
    out["gold"] = torch.tensor([e["gold"] for e in examples], dtype=torch.long)
    out["choices"] = torch.tensor(counts.pop())
    return out
