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

    return VLLMBackend(resolve_model(cfg.model), name=cfg.name, device=cfg.device, dtype=cfg.dtype, max_batch=cfg.max_batch,
                       enable_lora=cfg.max_lora_rank > 0, max_lora_rank=cfg.max_lora_rank or 16)


def _openai(cfg: PolicyConfig) -> Any:
    from debate.backends.openai_backend import from_config

    return from_config(cfg)  # `model` is the server's model name, not resolved locally


def _mock(cfg: PolicyConfig) -> Any:
    from debate.backends.mock import MockBackend

    return MockBackend(name=cfg.name)


BACKENDS: dict[str, Callable[[PolicyConfig], Any]] = {"transformers": _transformers, "vllm": _vllm, "openai": _openai, "mock": _mock}


def check_backend(cfg: PolicyConfig) -> None:
    """What the driver can check before any model loads or anything is stored: vLLM importable here (the
    environment the actors run in), an OpenAI-compatible server that answers, with the key set and the model
    served. A ConfigError names the field and the fix."""
    from debate.configs import ConfigError

    if cfg.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            from debate.backends.vllm_backend import INSTALL_HINT

            raise ConfigError(f"policies.{cfg.name}.backend: vllm is not installed in this environment; {INSTALL_HINT}")
    elif cfg.backend == "openai":
        from debate.backends.openai_backend import from_config

        from_config(cfg).close()  # asks the server for its models


def make_backend(cfg: PolicyConfig) -> Any:
    """Build the backend a policy config names."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg)
