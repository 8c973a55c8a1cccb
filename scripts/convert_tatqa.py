"""Convert TAT-QA's released JSON files (github.com/NExTplusplus/TAT-QA `dataset_raw/`, also in the hub repository
next-tat/TAT-QA) to the records `data=finance` reads: one record per question, its context written from the
report's table and the paragraphs the question uses.

    python scripts/convert_tatqa.py --train tatqa_dataset_train.json --validation tatqa_dataset_dev.json \
        --test tatqa_dataset_test_gold.json --out data/finance
    python train.py data=finance data.dir=data/finance

TAT-QA nests questions under each report ({table, paragraphs, questions}); our records are flat:
`context` = "Table:\\n" + one table row per line (cells joined by " | ") + a blank line + the question's
`rel_paragraphs` in order; `answer_spans` = the answer as a list (a count as its number); questions whose
`answer_type` is `arithmetic` need a calculation rather than a span and are left out (counted on screen). Only
the standard library is used: the files are plain JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SPAN_TYPES = ("span", "multi-span", "count")


def context_of(report: dict[str, Any], question: dict[str, Any]) -> str:
    """The report's table, then the paragraphs this question uses (by their `order`), as in ../shared/data."""
    rows = [" | ".join(str(cell) for cell in row) for row in report["table"]["table"]]
    by_order = {str(p["order"]): p["text"] for p in report["paragraphs"]}
    paragraphs = [by_order[str(k)] for k in question.get("rel_paragraphs", []) if str(k) in by_order]
    return "Table:\n" + "\n".join(rows) + ("\n\n" + "\n".join(paragraphs) if paragraphs else "")


def convert(reports: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(records, counts of what was kept and left out) for one TAT-QA file."""
    records, counts = [], {"kept": 0, "arithmetic or other": 0}
    for report in reports:
        for q in report["questions"]:
            if q["answer_type"] not in SPAN_TYPES:
                counts["arithmetic or other"] += 1
                continue
            answer = q["answer"]
            spans = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
            records.append(
                {
                    "id": f"tatqa:{q['uid']}",
                    "question": q["question"],
                    "answer": ", ".join(spans),
                    "context": context_of(report, q),
                    "answer_spans": spans,
                    "answer_type": q["answer_type"],
                    "answer_from": q.get("answer_from", ""),
                    "scale": q.get("scale", ""),
                    "report_uid": report["table"]["uid"],
                }
            )
            counts["kept"] += 1
    return records, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for split in ("train", "validation", "test"):
        parser.add_argument(f"--{split}", type=Path, required=True, help=f"TAT-QA JSON file for the {split} split")
    parser.add_argument("--out", type=Path, required=True, help="folder for {train,validation,test}.jsonl")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        source: Path = getattr(args, split)
        if not source.is_file():
            raise SystemExit(f"{source} does not exist: download TAT-QA's dataset_raw/*.json (or next-tat/TAT-QA) first.")
        records, counts = convert(json.loads(source.read_text(encoding="utf-8")))
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        print(f"{split}: {counts['kept']} questions kept, {counts['arithmetic or other']} arithmetic ones left out ({source})")


if __name__ == "__main__":
    main()
