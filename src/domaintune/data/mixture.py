"""Stage: mix prepared components into one dataset (multi-domain training, replay of earlier data).

The training split is sampled by weight (a component below its share is upsampled: every record once, then
repeats drawn at random; above it, downsampled), seeded; validation and test are interleaved round robin,
so a capped evaluation still sees every component.
"""

from __future__ import annotations

import random
from typing import Any

from domaintune.data.audit_report import Audit, StepReport

Splits = dict[str, list[dict[str, Any]]]


def mix(
    built: dict[str, tuple[Splits, Splits]], weights: dict[str, float], size: int | None, seed: int, audit: Audit
) -> tuple[Splits, Splits]:
    """`built[name] = (records, examples)` per component -> the mixture's (records, examples)."""
    rng = random.Random(seed)
    sizes = {name: len(ex.get("train", [])) for name, (_, ex) in built.items()}
    total = int(size or sum(sizes.values()))
    report = StepReport("mixture", sum(sizes.values()), 0)
    records: Splits = {"train": []}
    examples: Splits = {"train": []}
    for name, (recs, exs) in built.items():
        want = round(total * weights[name] / sum(weights.values()))
        pool = list(range(sizes[name]))
        if want <= sizes[name]:
            chosen = sorted(rng.sample(pool, want))
            if sizes[name] - want:
                report.removed[f"downsampled_{name}"] = sizes[name] - want
        else:
            chosen = pool + rng.choices(pool, k=want - sizes[name])
            report.added += want - sizes[name]
        records["train"] += [recs["train"][i] for i in chosen]
        examples["train"] += [exs["train"][i] for i in chosen]
    report.records_out = len(examples["train"])
    audit.add("train", report)
    for split in ("validation", "test"):
        pairs = [list(zip(recs.get(split, []), exs.get(split, []), strict=True)) for recs, exs in built.values()]
        mixed = [p[i] for i in range(max(map(len, pairs), default=0)) for p in pairs if i < len(p)]  # round robin
        if mixed:
            records[split], examples[split] = [r for r, _ in mixed], [e for _, e in mixed]
    return records, examples
