"""Hardware facts that decide fast defaults (precision) without the user having to know them."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

from domaintune.utils.logging import get_logger

log = get_logger(__name__)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX).

    Without them bf16 matmuls are emulated and were measured ~500x slower than fp32 on an AVX2-only EPYC
    (0.3 vs 172 GFLOP/s, scripts/benchmark.py precision), so bf16 autocast would ruin a CPU run.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: be conservative when it is missing
        return False


def resolve_precision(precision: str | int | None, accelerator: str | None) -> str:
    """Turn `precision: auto` into what Lightning accepts: bf16 where it is fast, else fp32. Never fp16 on CPU."""
    if precision not in (None, "auto"):
        return str(precision)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator in (None, "auto") and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    chosen = "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    log.info(f"precision=auto on CPU -> {chosen} (native bf16 kernels: {cpu_has_fast_bf16()})")
    return chosen


def autocast_for(precision: str | int | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a precision setting on a device (`auto` resolved as the trainer resolves it):
    bf16 or fp16 autocast for the mixed precisions, none for full precision. Used where the model runs outside
    Lightning's own precision plugin (the evaluation, DPO's reference pass) so both compute alike."""
    chosen = resolve_precision(precision, "gpu" if device.type == "cuda" else "cpu")
    if chosen.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if chosen.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()
