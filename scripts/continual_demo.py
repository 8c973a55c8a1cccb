"""Continual adaptation demo: healthcare, then customer_service with 0% and 20% healthcare replay.

    python scripts/continual_demo.py paths.data_dir=../shared/data      # any extra train.py overrides
Runs `train.py experiment=continual_demo` three times (stage 1; stage 2 without and with replay, both continued
from stage 1's adapter with adapter.init_from), then writes the forgetting table (markdown) to
<paths.log_dir>/continual_demo/<time>/table.md (outputs/ by default) and prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE2 = {"no replay": "customer_service", "20% replay": "customer_service_replay"}


def train(folder: Path, *overrides: str) -> Path:
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=continual_demo", f"hydra.run.dir={folder}", *overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return folder


def table(stage1: Path, runs: dict[str, Path]) -> str:
    """One row per stage-2 run: the new domain's gain and each domain's change from the start of the stage."""
    first = json.loads((stage1 / "metrics.json").read_text())
    lines = [
        f"Stage 1 (healthcare): test loss {first['base']['loss']:.3f} → {first['tuned']['loss']:.3f} "
        f"({first['verdict']['loss']}).",
        "",
        "| stage 2 | domain / metric | n | start | end | change [95% interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in runs.items():
        domains = json.loads((run / "forgetting.json").read_text())["domains"]
        for domain, metrics in domains.items():
            for metric, r in metrics.items():
                if metric == "perplexity":
                    continue
                lines.append(
                    f"| {label} | {domain} {metric} | {r['n']} | {r['base']:.4f} | {r['tuned']:.4f} | "
                    f"{r['change']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['verdict']} |"
                )
    return "\n".join(lines)


def main(overrides: list[str]) -> None:
    logs = next((o.split("=", 1)[1] for o in overrides if o.startswith("paths.log_dir=")), str(ROOT / "outputs"))
    root = Path(logs) / "continual_demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    stage1 = train(root / "stage1_healthcare", "data=healthcare", *overrides)
    runs = {
        label: train(root / f"stage2_{data}", f"data={data}", f"adapter.init_from={stage1}", *overrides)
        for label, data in STAGE2.items()
    }
    text = table(stage1, runs)
    (root / "table.md").write_text(text + "\n")
    print(text)
    print(f"\nWritten to {root / 'table.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
