"""The flat registry of backends the config files name; an unknown name lists the known ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # configs takes its list of backends from here
    from debate.configs import PolicyConfig


def _transformers(cfg: PolicyConfig) -> Any:
    from debate.backends.hf import TransformersBackend
    from debate.embedded import resolve_model

    return TransformersBackend(
        resolve_model(cfg.model), device=cfg.device, dtype=cfg.dtype, threads=cfg.threads or None, name=cfg.name, max_batch=cfg.max_batch
    )


def _vllm(cfg: PolicyConfig) -> Any:
    from debate.backends.vllm_backend import VLLMBackend
    from debate.embedded import resolve_model

    return VLLMBackend(resolve_model(cfg.model), name=cfg.name, dtype=cfg.dtype)


def _mock(cfg: PolicyConfig) -> Any:
    from debate.backends.mock import MockBackend

    return MockBackend(name=cfg.name)


BACKENDS: dict[str, Callable[[PolicyConfig], Any]] = {"transformers": _transformers, "vllm": _vllm, "mock": _mock}


def make_backend(cfg: PolicyConfig) -> Any:
    """Build the backend a policy config names."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg)
