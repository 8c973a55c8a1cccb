"""Export a training run to GGUF (f16 and q8_0) and measure the round trip, for RESULTS.md:

    python scripts/devtools/export_check.py run_dir=<run> [prompts=20] [max_new_tokens=64]

For each quantisation: the file's size, the largest logit difference against the merged model over the first
`prompts` test prompts (rendered as training renders them), and how many greedy answers (`max_new_tokens`) are
token for token the same when the GGUF is read back by transformers.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from domaintune.core.inference import with_run_config
    from domaintune.export.merged import merged_model
    from domaintune.export.to_gguf import write_gguf
    from domaintune.utils.config import CONFIG_DIR, register_resolvers
    from domaintune.utils.hydra import build

    args = dict(a.split("=", 1) for a in argv)
    n, limit = int(args.pop("prompts", 20)), int(args.pop("max_new_tokens", 64))
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="export", overrides=[f"{k}={v}" for k, v in args.items()])
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp()
    cfg = with_run_config(cfg, [f"{k}={v}" for k, v in args.items()])
    model, tok, _ = merged_model(cfg)
    model = model.float().eval()
    dm = build(cfg.data, tokenizer=tok)
    dm.prepare()
    prompts = [dm.renderer.prompt_ids(dm.conversation(r)) for r in dm.records["test"][:n]]
    stops = dm.renderer.stop_token_ids()
    print(f"run {cfg.run_dir}: {len(prompts)} test prompts, greedy answers of up to {limit} tokens")
    print("| quantisation | file size | largest logit difference | greedy answers equal |\n|---|---:|---:|---:|")
    with torch.no_grad():
        reference = []
        for ids in prompts:
            x = torch.tensor([ids])
            reference.append((model(x).logits, model.generate(x, max_new_tokens=limit, do_sample=False, eos_token_id=stops)))
        for quant in ("f16", "q8_0"):
            folder = Path(tempfile.mkdtemp())
            started = time.perf_counter()
            facts = write_gguf(model, tok, folder / f"model-{quant}.gguf", quant, str(cfg.model.name))
            seconds = time.perf_counter() - started
            back = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=facts["file"], dtype=torch.float32).eval()
            worst, same = 0.0, 0
            for ids, (logits, answer) in zip(prompts, reference, strict=True):
                x = torch.tensor([ids])
                worst = max(worst, (back(x).logits - logits).abs().max().item())
                again = back.generate(x, max_new_tokens=limit, do_sample=False, eos_token_id=stops)
                same += int(again.shape == answer.shape and bool((again == answer).all()))
            size = facts["bytes"] / 2**20
            print(f"| {quant} | {size:.1f} MiB (written in {seconds:.0f} s) | {worst:.4f} | {same} of {len(prompts)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
