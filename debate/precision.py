"""Precision chosen for the machine, never assumed: which dtype a model is served, trained and scored in.

- bfloat16 pays only where the hardware has it: a CUDA GPU that supports it, or a CPU whose oneDNN
  reports native bfloat16 (AVX-512 BF16 / AMX). Elsewhere (a CPU with AVX2 only) bfloat16 is emulated
  and runs several times slower than float32, so `auto` picks float32 there.
- Training keeps float32 master weights on every device; bfloat16 weights updated by AdamW go to NaN.
- A trained judge is served in the dtype it was validated in (recorded in its judge.json), so that a
  judge trained in float32 is never silently served in bfloat16.

Every config field that sets a dtype accepts `auto`; callers record what `auto` resolved to.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")


@lru_cache(maxsize=None)
def cpu_bf16_native() -> bool:
    """True when this CPU computes bfloat16 in hardware (oneDNN says so); False where it is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_type(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def bf16_fast(device: str) -> bool:
    """Whether bfloat16 runs natively (and so faster than float32) on `device`."""
    if device_type(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_bf16_native()


def serving_dtype(device: str, requested: str = "auto", model_path: Optional[str | Path] = None) -> str:
    """The dtype a model is served in: a trained judge's validated dtype, else bfloat16 on a CUDA GPU that
    has it (float16 on one that does not), float32 on a CPU."""
    if requested != "auto":
        return requested
    validated = judge_serving_dtype(model_path, device) if model_path is not None else None
    if validated:
        return validated
    if device_type(device) == "cuda":
        return "bfloat16" if bf16_fast(device) else "float16"
    return "float32"


def lower_dtype(device: str, requested: str = "auto") -> str:
    """The dtype of a frozen forward pass whose output is only stored (judge training's lower layers):
    bfloat16 where it runs natively, float32 elsewhere."""
    if requested != "auto":
        return requested
    return "bfloat16" if bf16_fast(device) else "float32"


def _autocast(requested: str, auto_bf16: bool) -> Optional[torch.dtype]:
    """`off` -> None (plain float32), `auto` -> bfloat16 when `auto_bf16` else None, a dtype name -> that dtype."""
    if requested == "off":
        return None
    if requested == "auto":
        return torch.bfloat16 if auto_bf16 else None
    return getattr(torch, requested)


def autocast_dtype(device: str, requested: str = "off") -> Optional[torch.dtype]:
    """The autocast dtype of training steps, or None for plain float32. `auto`: bfloat16 on a CUDA GPU that
    has it, off on a CPU (measured on CPUs: bfloat16 steps did not learn the judge; emulated bf16 is slow)."""
    return _autocast(requested, device_type(device) == "cuda" and bf16_fast(device))


def generation_autocast(device: str, requested: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype a float32 model generates under (the learner's, whose weights stay float32 for training),
    or None for plain float32. `auto`: bfloat16 wherever it runs natively (CPUs with native bfloat16, CUDA GPUs
    that have it), float32 elsewhere (emulated bfloat16 is several times slower)."""
    return _autocast(requested, bf16_fast(device))


def judge_serving_dtype(model_path: str | Path | None, device: str) -> Optional[str]:
    """The dtype a trained judge (a folder `.../NAME/model` beside `judge.json`) was validated in on this
    kind of device, if it records one."""
    if model_path is None:
        return None
    meta = Path(model_path).parent / "judge.json"
    if not meta.exists():
        return None
    try:
        serving = json.loads(meta.read_text()).get("serving") or {}
    except (OSError, ValueError):
        return None
    # a judge not validated on this kind of device runs in float32, the dtype it was trained in
    return (serving.get(device_type(device)) or {}).get("dtype") or "float32"


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer around it measures it (a no-op on a CPU)."""
    if device_type(device) == "cuda":
        torch.cuda.synchronize()


def describe() -> dict:
    """What this machine offers, for notes and benchmark lines."""
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_native": cpu_bf16_native()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_device_name(0)
        out["cuda_bf16"] = torch.cuda.is_bf16_supported()
    return out
