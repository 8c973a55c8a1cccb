"""Regenerate the illustrative sample datasets shipped in src/domaintune/data/samples/.

    python scripts/make_samples.py

Each domain's records come from hand-written tables in scripts/samples/<domain>.py; they are split
deterministically (sorted by sha256 of the record id) into train / validation / test.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "domaintune" / "data" / "samples"
DOMAINS = (
    "healthcare",
    "marketing",
    "education",
    "fact_checking",
    "customer_service",
    "finance",
    "benchmark_piqa",
    "benchmark_crows_pairs",
    "benchmark_bbq",
    "preferences",
)
SPLIT = {"validation": 30, "test": 30}  # the rest is train


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent / "samples"))
    for domain in DOMAINS:
        module = importlib.import_module(domain)
        records = module.records()
        sizes = getattr(module, "SPLIT", SPLIT)
        # whole groups (a condition's questions, a product, a paper, a claim and its variants, an intent) go to
        # one split, in the order of their hash: validation and test never share a group with training
        groups: dict[str, list[dict]] = {}
        for r in sorted(records, key=lambda r: r["id"]):
            groups.setdefault(str(r.get("group", r["id"])), []).append(r)
        order = sorted(groups, key=lambda g: hashlib.sha256(f"domaintune-sample:{g}".encode()).hexdigest())
        splits: dict[str, list[dict]] = {"validation": [], "test": [], "train": []}
        for g in order:
            name = next((s for s in ("validation", "test") if len(splits[s]) < sizes[s]), "train")
            splits[name] += groups[g]
        splits = {k: v for k, v in splits.items() if v}
        folder = OUT / domain
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in splits.items():
            with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{domain}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
