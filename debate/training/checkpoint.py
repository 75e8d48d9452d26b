"""Resumable learner checkpoints: weights (adapter or full), optimizer, RNG states, counters, base identity.

A checkpoint is written to a temporary sibling folder and renamed into place, so a kill mid-save leaves
the previous checkpoint whole. The base model's identity is recorded and checked on load: an adapter
applied to another base model would load without error and generate nonsense.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debate.configs import ConfigError

STATE = "state.json"


class CheckpointError(ConfigError):
    """A checkpoint that does not fit the learner loading it (another base model, another method, other weights)."""


def model_identity(model: Any) -> dict:
    """What makes a base model the same one: architecture, vocabulary, every parameter's name and shape,
    and a fingerprint of the first and last parameters' leading values (same shapes, other weights)."""
    config = model.config
    params = list(model.named_parameters())
    digest = hashlib.sha256()
    for name, p in params:
        digest.update(f"{name}:{tuple(p.shape)};".encode())
    for _, p in (params[0], params[-1]):
        digest.update(p.detach().flatten()[:256].to("cpu", torch.float32).numpy().tobytes())
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "")),  # recorded, not compared: folders move
        "architectures": list(getattr(config, "architectures", None) or []),
        "vocab_size": int(getattr(config, "vocab_size", 0) or 0),
        "fingerprint": digest.hexdigest()[:16],
    }


def _same_base(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("architectures", "vocab_size", "fingerprint"))


def save_weights(learner: Any, folder: Path) -> None:
    """The adapter (PEFT `save_pretrained`) or, with method full, the whole model, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    learner.model.save_pretrained(folder)


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(state), gauss], "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, plain


def _set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(learner: Any, folder: Path, iteration: int, extra: dict) -> Path:
    """Write everything `load_checkpoint` needs to resume; `extra` (e.g. the warm-start folder) is kept
    as given and must be JSON-serialisable."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(learner, tmp / "weights")
    torch.save(learner.optimizer.state_dict(), tmp / "optimizer.pt")
    tensors, plain = _rng_state()
    torch.save(tensors, tmp / "rng.pt")
    state = {"iteration": iteration, "version": learner.version, "method": learner.cfg.method,
             "objective": learner.cfg.objective, "identity": learner.identity, "rng": plain, "extra": extra}
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    # swap in: the old checkpoint is moved aside before the new one takes its name, and removed last;
    # `load_checkpoint` falls back to the aside copy if a kill lands between the two renames
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_state(folder: Path) -> dict:
    """A checkpoint's state.json (iteration, version, method, identity, extra)."""
    path = Path(folder) / STATE
    if not path.exists():
        raise FileNotFoundError(f"{folder}: not a learner checkpoint (no {STATE}); save one with Learner.save")
    return json.loads(path.read_text())


def load_checkpoint(learner: Any, folder: Path) -> dict:
    """Restore weights, optimizer, RNG states and version; returns the saved state.

    Raises CheckpointError naming the folder when it was made for another base model or another method."""
    folder = Path(folder)
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.exists():  # a save was killed between its two renames
        folder = old
    state = read_state(folder)
    if not _same_base(state["identity"], learner.identity):
        raise CheckpointError(f"checkpoint {folder} was made for another base model ({state['identity']}); this "
                              f"learner's is {learner.identity}. Resume with the base model it was trained from, or "
                              f"start a new run")
    if state["method"] != learner.cfg.method:
        raise CheckpointError(f"checkpoint {folder} holds method {state['method']!r} weights, the learner uses "
                              f"{learner.cfg.method!r}; set method: {state['method']} to resume it")
    device = learner.device
    weights = folder / "weights"
    if learner.cfg.method == "lora":
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(learner.model, load_peft_weights(str(weights), device=str(device)))
    else:
        from safetensors.torch import load_file

        files = sorted(weights.glob("*.safetensors"))
        sd: dict = {}
        for f in files:
            sd.update(load_file(str(f), device=str(device)))
        result = learner.model.load_state_dict(sd, strict=False)  # tied weights are saved once
        tied = bool(getattr(learner.model.config, "tie_word_embeddings", False))
        missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"checkpoint {folder}: weights do not match the model (missing {missing[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]})")
    learner.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    _set_rng_state(torch.load(folder / "rng.pt", weights_only=True), state["rng"])
    learner.version = int(state["version"])
    return {k: state[k] for k in ("iteration", "version", "method", "objective", "identity", "extra")}
