"""Turn a pretrained model into what gets trained: a PEFT adapter, the full model, or its top blocks.

`adapter.kind` picks the strategy:
- `peft`: any PEFT config (LoRA, DoRA, IA3, prompt/prefix tuning...) instantiated from `adapter.peft`;
- `full`: every weight is trained;
- `freeze`: the classic transfer-learning baseline, only the top `train_top_n` blocks (+ norm and head).
"""

from __future__ import annotations

from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.models.continual import adapter_dir, start_from
from domaintune.models.dropout import use_fast_dropout
from domaintune.models.lora_fold import fold_lora_scales
from domaintune.utils.errors import DomainTuneError, unknown_option
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

KINDS = ("peft", "full", "freeze")


def _blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of transformer blocks, whatever the architecture calls it."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("layers", "h", "blocks", "block"):
        stack = getattr(decoder, name, None)
        if isinstance(stack, nn.ModuleList):
            return stack
    raise DomainTuneError(
        f"adapter=freeze could not find the transformer blocks of {type(model).__name__}.",
        "Use adapter=lora or adapter=full for this architecture.",
    )


def _freeze_all_but_top(model: PreTrainedModel, top_n: int, train_head: bool, train_norm: bool) -> None:
    blocks = _blocks(model)
    if not 0 < top_n <= len(blocks):
        raise DomainTuneError(
            f"adapter.train_top_n={top_n} but the model has {len(blocks)} blocks.",
            f"Choose a value from 1 to {len(blocks)}.",
        )
    model.requires_grad_(False)
    for block in list(blocks)[-top_n:]:
        block.requires_grad_(True)
    if train_head and model.get_output_embeddings() is not None:
        model.get_output_embeddings().requires_grad_(True)
        if getattr(model.config, "tie_word_embeddings", False):
            log.info("The output head is tied to the input embeddings: training the head trains both.")
    norm = getattr(model.get_decoder(), "norm", None) or getattr(model.get_decoder(), "ln_f", None)
    if train_norm and norm is not None:
        norm.requires_grad_(True)


def apply_adapter(model: PreTrainedModel, cfg: DictConfig, peft: PeftConfig | None) -> nn.Module:
    """Return the model to train, with exactly the configured parameters trainable. `peft` is the PEFT config
    `peft_config(cfg)` built (once, by `checks.check_config` in a run) for `kind: peft`."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise unknown_option(
            "adapter kind", str(kind), KINDS, "Pick one of the adapter configs: adapter=lora, ia3, full, freeze..."
        )
    start = adapter_dir(str(cfg.init_from)) if cfg.get("init_from") else None
    if start is not None:  # continued adaptation; checks.check_config compared the settings before anything loaded
        model = start_from(model, start)
        log.info(f"adapter.init_from: continuing from {start}")
    if kind == "peft":
        if peft is None:
            raise DomainTuneError("adapter.kind=peft needs its built PEFT config.", "Pass peft_config(cfg.adapter).")
        model = model if start is not None else get_peft_model(model, peft)
    elif kind == "freeze":
        _freeze_all_but_top(model, int(cfg.train_top_n), bool(cfg.train_head), bool(cfg.train_norm))
    else:
        model.requires_grad_(True)
    if cfg.get("fast_dropout"):
        _fast_dropout(model, str(cfg.get("name")))
    if cfg.get("fold_scales"):
        _fold_scales(model, str(cfg.get("name")), bool(cfg.get("keep_casts")))
    elif cfg.get("keep_casts"):
        raise DomainTuneError(
            f"adapter.keep_casts=true, but adapter={cfg.get('name')} does not fold its LoRA scales "
            "(adapter.fold_scales is off), and only the folded layers keep their casts, so it would change nothing.",
            "Set adapter.keep_casts=false, or adapter.fold_scales=true on a plain LoRA adapter.",
        )
    trainable, total = parameter_counts(model)
    log.info(f"adapter={cfg.name}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
    return model


def _fast_dropout(model: nn.Module, name: str) -> None:
    """`adapter.fast_dropout`: LoRA's dropout masks drawn by `models/dropout.py` (same distribution, faster on the
    CPU). Set on an adapter without LoRA layers it would do nothing, which is refused rather than ignored."""
    found, replaced = use_fast_dropout(model)
    if not found:
        raise DomainTuneError(
            f"adapter.fast_dropout=true, but adapter={name} has no LoRA layers, whose dropout it replaces.",
            "Remove adapter.fast_dropout (it applies to adapter=lora, dora, lora_upper and configs built on them).",
        )
    log.info(f"adapter.fast_dropout: {replaced} LoRA dropout layers draw their masks with numpy's SFC64")


def _fold_scales(model: nn.Module, name: str, keep_casts: bool) -> None:
    """`adapter.fold_scales`: LoRA's scaling and dropout scale applied to the rank-r activations
    (`models/lora_fold.py`). Set where no layer can take it, it would do nothing: refused rather than ignored."""
    found, folded = fold_lora_scales(model, keep_casts)
    if not folded:
        what = "has no LoRA layers" if not found else "has no plain LoRA linears (another variant, e.g. DoRA, or lora_bias)"
        raise DomainTuneError(
            f"adapter.fold_scales=true, but adapter={name} {what}, so it would change nothing.",
            "Remove adapter.fold_scales or set it to false (it applies to plain LoRA: adapter=lora, lora_upper).",
        )
    log.info(f"adapter.fold_scales: {folded} of {found} LoRA layers apply their scales to the rank-r activations")


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters: logged when the adapter is applied and stated in the model card."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def compile_blocks(model: nn.Module) -> int:
    """torch.compile every transformer block in place (model.compile): `nn.Module.compile` keeps parameter
    names, so checkpoints, adapters and resume work as without it. Shapes vary per batch, hence dynamic
    shapes. Returns how many blocks were compiled."""
    base = base_model(model)
    blocks = _blocks(base)
    for block in blocks:
        block.compile(dynamic=True)
    log.info(f"model.compile: {len(blocks)} blocks compiled with torch.compile (the first steps include compilation)")
    return len(blocks)


def peft_config(cfg: DictConfig) -> PeftConfig | None:
    """The PEFT config built from `adapter.peft` (None for `kind: full`/`freeze`); an option its class does not
    take is a clear error. A run builds it once, in `checks.check_config` before anything loads, and hands it
    on to `apply_adapter`."""
    if cfg.get("kind") != "peft":
        return None
    try:
        return instantiate(cfg.peft, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise DomainTuneError(
            f"adapter.peft cannot build {cfg.peft.get('_target_')}: {type(cause).__name__}: {cause}.",
            "Remove or rename the option (see the PEFT config class's arguments), e.g. LoRA takes r, lora_alpha, "
            "lora_dropout, target_modules.",
        ) from None


def is_prompt_learning(model: nn.Module) -> bool:
    """Prompt/prefix tuning prepend virtual tokens, which packed rows (restarting positions) cannot hold and
    which cannot be merged into weights."""
    return isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (the model itself when there is none): where the config,
    the blocks and gradient checkpointing live."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def save_adapter(model: nn.Module, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save what was trained in Hugging Face format: PEFT weights (+ config) or the whole model.

    The tokenizer goes with it so that chat/generate/merge need nothing else.
    """
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
