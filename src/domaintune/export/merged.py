"""The tuned model of a run as one plain model (adapter merged), and how it leaves DomainTune: merged Hugging Face
weights (`format=hf`), GGUF (`gguf`) or GGUF plus an Ollama Modelfile (`ollama`), each with its own card.
`scripts/export.py` and `scripts/merge.py` (= format=hf) both run `export`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.inference import load_for_inference
from domaintune.data.chat import renderer_for
from domaintune.export.to_gguf import write_gguf
from domaintune.models.adapters import is_prompt_learning
from domaintune.models.loading import base_model_id, trained_weights
from domaintune.utils.errors import DomainTuneError, unknown_option

FORMATS = ("hf", "gguf", "ollama")


def merged_model(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path]:
    """The run's model with its adapter folded in; refused, with the reason, where that cannot be done."""
    if not (cfg.get("run_dir") or cfg.get("adapter_path")):
        raise DomainTuneError(
            "Export needs a tuned model.", "Pass run_dir=<training run folder> or adapter_path=<adapter folder>."
        )
    model, tok, path = load_for_inference(cfg)
    assert path is not None
    if isinstance(model, PeftModel):
        if is_prompt_learning(model):
            raise DomainTuneError(
                f"A {model.active_peft_config.peft_type} adapter adds virtual tokens to every prompt and cannot be folded "
                "into weights, so no plain model (merged, GGUF) can carry it.",
                "Keep using it with PeftModel (scripts/serve.py, scripts/chat.py), or train a LoRA-family adapter to export.",
            )
        model = model.merge_and_unload()
    return model.eval(), tok, path


def ollama_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The Go template Ollama renders prompts with, for the ChatML chat template (SmolLM2's, Qwen's...): the same
    text training rendered (tests/e2e/test_export.py renders both). Other templates are refused."""
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template or "<|im_end|>" not in template:
        raise DomainTuneError(
            "format=ollama writes a Modelfile template for ChatML chat templates only, and this model's is different.",
            "Export format=gguf and write the Modelfile's TEMPLATE for this chat template by hand.",
        )
    return "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


def _modelfile(gguf_name: str, template: str, system: str | None, stops: list[str]) -> str:
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def _readable(folder: Path) -> None:
    """Files rw-r--r-- (save_pretrained's safetensors can come out 0600): the folder is meant to be shared."""
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o644)


def _card(out: Path, run: Path, facts: dict[str, Any], base: str) -> Path:
    card = run / "README.md"
    trained = (card.read_text(encoding="utf-8") if card.exists() else "").split("\n## ", 1)
    lines = [
        f"# Exported from {run.parent.name}",
        "",
        f"- Base model: {base}; the adapter, trained on those weights, is merged into them here.",
        *[f"- {k}: `{v}`" for k, v in facts.items()],
        "",
        "The training run's own card (metrics with intervals, data, limits) follows.",
        "",
        "## " + trained[1] if len(trained) > 1 else "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the run's merged model in `cfg.format` to `cfg.output` (default <run>/export-<format>); returns what
    was written (also in the folder's README.md)."""
    if cfg.format not in FORMATS:
        raise unknown_option("format", cfg.format, FORMATS, "Use format=hf, gguf or ollama.")
    model, tok, adapter = merged_model(cfg)
    out = Path(cfg.output) if cfg.get("output") else adapter.parent / f"export-{cfg.format}"
    out.mkdir(parents=True, exist_ok=True)
    base = f"{base_model_id(cfg.model)}: {trained_weights(cfg.model)}"
    if cfg.format == "hf":
        model.save_pretrained(out)
        tok.save_pretrained(out)
        facts: dict[str, Any] = {"format": "hf (safetensors, adapter merged)"}
    else:
        template = ollama_template(tok) if cfg.format == "ollama" else None  # refused before any file is written
        name = f"{cfg.model.name}-{Path(str(cfg.run_dir or adapter.parent)).name}-{cfg.quantization}.gguf"
        facts = write_gguf(model, tok, out / name, str(cfg.quantization), str(cfg.model.name))
        if template is not None:
            renderer = renderer_for(cfg.data, tok)
            stops = [tok.convert_ids_to_tokens(i) for i in renderer.stop_token_ids()]
            (out / "Modelfile").write_text(_modelfile(name, template, cfg.data.task.get("system_prompt"), stops))
            facts["ollama"] = f"ollama create <name> -f {out / 'Modelfile'}"
    _readable(out)
    _card(out, adapter, facts, base)
    (out / "export.json").write_text(json.dumps(facts, indent=2))
    print(f"Exported to {out}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return facts
