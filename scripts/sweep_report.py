"""Turn a sweep folder into one comparison table (markdown + CSV) and plots, also logged to W&B.

python scripts/sweep_report.py outputs/multirun/2026-11-27/10-00-00 [--metric primary] [--value relative_change]

--metric primary (the default) reports each job's own deciding metric (its data config's primary_metric).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from domaintune.reporting.sweep_report import VALUES, write
from domaintune.utils.errors import DomainTuneError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a multirun folder (outputs/multirun/<date>/<time>)")
    parser.add_argument(
        "--metric", default="primary", help="metric for the heatmap and the table: primary (each job's own), loss, gen/rougeL..."
    )
    parser.add_argument("--value", default="relative_change", choices=VALUES, help="what the heatmap shows")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    args = parser.parse_args()
    try:
        paths = write(args.sweep, args.metric, args.value, wandb_log=not args.no_wandb)
    except DomainTuneError as exc:
        print(exc.paragraph(), file=sys.stderr)
        return 1
    print(paths["md"].read_text())
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
