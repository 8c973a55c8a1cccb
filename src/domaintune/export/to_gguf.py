"""Write a merged Llama-architecture model as a GGUF file (f16 or q8_0) that llama.cpp, Ollama and transformers'
GGUF loader read, with the tokenizer, the chat template and the end-of-turn tokens training used.

Built on the maintained `gguf` package (llama.cpp's own gguf-py): its writer, its tensor-name map for the LLAMA
architecture, its vocabulary readers (BpeVocab, SpecialVocab: merges, special ids, chat template from the saved
tokenizer files) and its Q8_0 quantiser; no binary layout is written by hand. What is ours is the short list of
model facts and one convention of llama.cpp's converter: the query and key projections are stored with their
rotary halves interleaved (`_rope_permute`), which transformers' GGUF loader undoes when it reads the file back.
Only the Llama architecture (SmolLM2 and other Llama-family models) is written; anything else is refused by name.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.utils.errors import DomainTuneError

QUANTIZATIONS = ("f16", "q8_0")


def _rope_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's layout of a q/k projection: each head's rotary halves interleaved (its converter's `permute`)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _token_list(tokenizer: PreTrainedTokenizerBase, folder: Path) -> tuple[list[bytes], list[int]]:
    """The vocabulary in id order with llama.cpp's token types: special added tokens are CONTROL, others NORMAL."""
    import gguf

    vocab = gguf.BpeVocab(folder)
    tokens, types = [], []
    special = set(tokenizer.all_special_tokens)
    for text, _, kind in vocab.all_tokens():
        word = text if isinstance(text, str) else text.decode("utf-8")
        tokens.append(word.encode("utf-8"))
        types.append(int(gguf.TokenType.CONTROL if word in special else kind))
    return tokens, types


def write_gguf(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, quantization: str, name: str
) -> dict[str, Any]:
    """Write `model` (adapter already merged) to `path`; returns what the model card records (format, size, sha256)."""
    import gguf

    config = model.config
    if config.model_type != "llama":
        raise DomainTuneError(
            f"GGUF export writes Llama-architecture models; this one is '{config.model_type}'.",
            "Export format=hf (merged Hugging Face weights) and convert it with llama.cpp's convert_hf_to_gguf.py.",
        )
    if quantization not in QUANTIZATIONS:
        raise DomainTuneError(f"quantization={quantization} is not offered.", f"Use one of: {', '.join(QUANTIZATIONS)}.")
    qtype = gguf.GGMLQuantizationType.F16 if quantization == "f16" else gguf.GGMLQuantizationType.Q8_0
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quantization == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)  # tokenizer.json, tokenizer_config.json (the chat template): gguf-py reads them
        tokens, types = _token_list(tokenizer, Path(tmp))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm" if "smollm" in name.lower() else "default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        gguf.SpecialVocab(tmp, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses the token embeddings
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise DomainTuneError(f"No GGUF name for the tensor '{hf_name}'.", "Export format=hf instead.")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _rope_permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _rope_permute(data, n_kv)
        if data.ndim == 1:  # norms stay in float32, as llama.cpp writes them
            writer.add_tensor(target, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(target, data.astype(np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"format": "gguf", "quantization": quantization, "file": path.name, "bytes": path.stat().st_size, "sha256": digest}
