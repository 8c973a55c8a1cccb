"""Measure training tokens/s per precision and attention kernel, and matmul GFLOP/s per dtype.

    python scripts/benchmark.py                       # SmolLM2 + LoRA, batch 8 x 256 tokens
    python scripts/benchmark.py bench.attentions=[sdpa] adapter=full
Writes benchmark.json and prints a table; these are the figures behind `precision: auto` and the
default attention kernel.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from domaintune.models.adapters import apply_adapter
from domaintune.models.loading import load_model
from domaintune.models.module import forward_loss
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.hydra import run_task


def matmul_gflops(dtype: torch.dtype, n: int = 1024, budget_s: float = 5.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    started, runs = time.perf_counter(), 0
    while runs < 3 and time.perf_counter() - started < budget_s:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - started) / 1e9


def train_speed(cfg: DictConfig, precision: str, attention: str) -> dict[str, float]:
    with open_dict(cfg):
        cfg.model.attn_implementation = attention
    model, tok = load_model(cfg.model)
    model = apply_adapter(model, cfg.adapter).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(cfg.optim.lr))
    b = cfg.bench
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, tok.vocab_size - 100, (int(b.batch_size), int(b.seq_len)), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    times = []
    for step in range(int(b.warmup) + int(b.steps)):
        started = time.perf_counter()
        with autocast:
            loss, _ = forward_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= int(b.warmup):
            times.append(time.perf_counter() - started)
    tokens = ids.numel()
    return {
        "tokens_per_s": tokens / (sum(times) / len(times)),
        "step_s": sum(times) / len(times),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def benchmark(cfg: DictConfig) -> dict[str, float]:
    results: dict[str, dict] = {"matmul_gflops": {}, "train": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        results["matmul_gflops"][name] = matmul_gflops(dtype)
    fp32 = results["matmul_gflops"]["fp32"]
    for precision in cfg.bench.precisions:
        rel = results["matmul_gflops"]["bf16"] / fp32 if precision.startswith("bf16") else 1.0
        for attention in cfg.bench.attentions:
            key = f"{precision}/{attention}"
            if rel < float(cfg.bench.min_relative_matmul):
                results["train"][key] = {"skipped": f"bf16 matmul runs at {100 * rel:.2f}% of fp32 speed on this CPU"}
                continue
            results["train"][key] = train_speed(cfg, precision, attention)
    table = Table(title=f"{cfg.model.name} + {cfg.adapter.name}, batch {cfg.bench.batch_size} x {cfg.bench.seq_len} tokens")
    for col in ("precision/attention", "tokens/s", "step s", "peak RSS GiB (process so far)"):
        table.add_column(col)
    for key, r in results["train"].items():
        if "skipped" in r:
            table.add_row(key, "skipped", r["skipped"], "")
        else:
            table.add_row(key, f"{r['tokens_per_s']:.0f}", f"{r['step_s']:.2f}", f"{r['peak_rss_gib']:.1f}")
    console = Console()
    console.print(table)
    console.print("matmul GFLOP/s (1024x1024): " + ", ".join(f"{k} {v:.1f}" for k, v in results["matmul_gflops"].items()))
    (Path(cfg.paths.output_dir) / "benchmark.json").write_text(json.dumps(results, indent=2))
    return {}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_task(benchmark, cfg)


if __name__ == "__main__":
    main()
