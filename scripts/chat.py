"""Chat with a tuned model (or the base model), streaming tokens as they are generated.

    python scripts/chat.py run_dir=outputs/train/2026-11-27/10-00-00_healthcare_lora
Commands: /reset starts a new conversation, /quit (or Ctrl-D) ends.
"""

from __future__ import annotations

import sys

import hydra
import torch
from omegaconf import DictConfig
from transformers import TextStreamer

from domaintune.core.inference import load_for_inference, with_run_config
from domaintune.data.chat import renderer_for
from domaintune.evaluation.generation import generate_options, merged_adapter
from domaintune.utils.config import CONFIG_DIR, to_dict
from domaintune.utils.hydra import run_task


def chat(cfg: DictConfig) -> None:
    cfg = with_run_config(cfg)
    model, tok, path = load_for_inference(cfg)
    renderer = renderer_for(cfg.data, tok)
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.get("system_prompt") else []
    history = list(system)
    options = generate_options(to_dict(cfg.generation), renderer, tok)
    print(f"Chatting with {cfg.model.name}" + (f" + {path}" if path else " (base model)") + ". /reset, /quit", flush=True)
    with merged_adapter(model, bool(cfg.generation.merge_adapter)) as fast:
        while True:
            try:
                text = input("\nyou> ").strip()
            except EOFError:
                break
            if text in ("/quit", "/exit"):
                break
            if text == "/reset":
                history = list(system)
                print("(new conversation)")
                continue
            if not text:
                continue
            history.append({"role": "user", "content": text})
            ids = torch.tensor([renderer.prompt_ids(history)])
            print("bot> ", end="", flush=True)
            streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            with torch.inference_mode():
                out = fast.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **options)
            reply = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            history.append({"role": "assistant", "content": reply})
            sys.stdout.flush()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="chat")
def main(cfg: DictConfig) -> None:
    run_task(chat, cfg)


if __name__ == "__main__":
    main()
