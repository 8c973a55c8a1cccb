"""Batch generation from a JSONL file of prompts, with the training chat template.

    python scripts/generate.py run_dir=<run> input=prompts.jsonl output=out.jsonl
Each input line is {"prompt": "..."}, {"messages": [...]}, or a record with the data config's fields
(rendered through the data config's templates). Each output line is the input plus "output".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from domaintune.core.inference import load_for_inference, with_run_config
from domaintune.data.chat import renderer_for
from domaintune.data.formats import TARGET_FIELD, RecordProblem, Task
from domaintune.data.sources import ReadStats, read_jsonl
from domaintune.evaluation.generation import generate
from domaintune.utils.config import CONFIG_DIR, to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import run_task


def to_messages(rec: dict[str, Any], task: Task) -> list[dict[str, str]]:
    where = rec["_src"]  # file:line, for errors
    if "messages" in rec:
        msgs = list(rec["messages"])
    elif "prompt" in rec:
        msgs = [{"role": "user", "content": str(rec["prompt"])}]
    else:
        # A record with the data config's fields: render its prompt; the answer it may lack gets a stand-in,
        # since only the turns before the assistant's are used.
        target = task.fields.get(TARGET_FIELD.get(task.type, ""), "")
        stand_in = (task.labels or ["-"])[0]
        try:
            return task.conversation(task.select({target: stand_in, **rec}))[:-1]
        except RecordProblem as exc:
            raise DomainTuneError(
                f"{where}: {exc}.", 'Give each line a "prompt", "messages", or the data config\'s fields.'
            ) from None
    if task.system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": task.system_prompt})
    return msgs


def run(cfg: DictConfig) -> dict[str, float]:
    cfg = with_run_config(cfg)
    src = Path(cfg.input)
    if not src.is_file():
        raise DomainTuneError(f"The input file '{src}' does not exist.", "Pass input=<a JSONL file of prompts>.")
    task = Task(**to_dict(cfg.data.task))
    records = read_jsonl(src, "input", "raise", ReadStats(), hint="then run again.")
    if not records:
        raise DomainTuneError(
            f"The input file '{src}' is empty: there is no prompt to generate for.",
            'Write one JSON object per line, e.g. {"prompt": "What is a fever?"}.',
        )
    model, tok, _ = load_for_inference(cfg)
    renderer = renderer_for(cfg.data, tok)
    convs = [to_messages(rec, task) for rec in records]
    outs, stats = generate(model, tok, renderer, convs, to_dict(cfg.generation), bool(cfg.generation.merge_adapter))
    dst = Path(cfg.output)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as f:
        for rec, out in zip(records, outs, strict=True):
            line = {k: v for k, v in rec.items() if k != "_src"}  # the reader's file:line tag
            f.write(json.dumps({**line, "output": out.text}, ensure_ascii=False) + "\n")
    cut = f", {stats.at_limit} ran into max_new_tokens" if stats.at_limit else ""
    print(f"Wrote {len(outs)} generations to {dst} ({stats.answer_tokens} tokens in {stats.seconds:.1f} s{cut})")
    return {"answer_tokens_per_s": stats.answer_tokens_per_s, "at_limit": float(stats.at_limit)}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    run_task(run, cfg)


if __name__ == "__main__":
    main()
