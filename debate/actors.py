"""Ray actors hosting policies (debaters and model judges). Ray is imported only here.

The driver talks to every policy through a handle with the same methods, local or remote (both satisfy
`debate.policy.Policy`): `submit_generate` / `submit_score` return futures so that several policies work
at once; `count_tokens` / `truncate_tokens` take whole lists, one call per batch.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from debate.backends.base import Done, GenRequest, GenResult, ScoreRequest, ScoreResult
from debate.configs import PolicyConfig, RayConfig


class PolicyServer:
    """Holds one backend; the body of the Ray actor, usable in-process as well."""

    def __init__(self, cfg: PolicyConfig, backend: Any = None) -> None:
        from debate.backends.registry import make_backend

        # Ray sets OMP_NUM_THREADS to the actor's CPU count; torch threads come from config instead.
        self.backend = backend if backend is not None else make_backend(cfg)
        self.name = cfg.name

    def info(self) -> dict:
        return {
            "name": self.name,
            "context_length": self.backend.context_length,
            "load_seconds": getattr(self.backend, "load_seconds", 0.0),
            "pid": os.getpid(),
            "device": str(getattr(self.backend, "device", "")),
            "dtype": str(getattr(self.backend, "dtype", "")),
        }

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return self.backend.generate(requests)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.backend.score(requests)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return self.backend.truncate_tokens(texts, max_tokens)


class LocalPolicy:
    """A policy in the driver process (tests, benchmarks' baseline); futures are already done."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.backend = server.backend
        self.name = server.name
        self.context_length = server.backend.context_length
        info = server.info()
        self.device, self.dtype = info["device"], info["dtype"]  # what `auto` resolved to

    def submit_generate(self, requests: Sequence[GenRequest]) -> Done:
        return Done(self.server.generate(requests))

    def submit_score(self, requests: Sequence[ScoreRequest]) -> Done:
        return Done(self.server.score(requests))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.server.count_tokens(texts)

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return self.server.truncate_tokens(texts, max_tokens)


class _RayFuture:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        import ray

        return ray.get(self.ref)


class RemotePolicy:
    """A policy served by a Ray actor; resources come from the policy's config."""

    def __init__(self, cfg: PolicyConfig) -> None:
        import ray

        actor_cls = ray.remote(PolicyServer).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, name=None, max_concurrency=1
        )
        self.actor = actor_cls.remote(cfg)
        info = ray.get(self.actor.info.remote())
        self.name = cfg.name
        self.context_length = info["context_length"]
        self.load_seconds = info["load_seconds"]
        self.device, self.dtype = info["device"], info["dtype"]  # what `auto` resolved to, on the actor's machine

    def submit_generate(self, requests: Sequence[GenRequest]) -> _RayFuture:
        return _RayFuture(self.actor.generate.remote(list(requests)))

    def submit_score(self, requests: Sequence[ScoreRequest]) -> _RayFuture:
        return _RayFuture(self.actor.score.remote(list(requests)))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        import ray

        return ray.get(self.actor.count_tokens.remote(list(texts)))

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        import ray

        return ray.get(self.actor.truncate_tokens.remote(list(texts), list(max_tokens)))

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


def start_ray(cfg: RayConfig, cpus_wanted: float = 0.0) -> None:
    """`ray.init()` locally by default, or join the cluster at `cfg.address`; a no-op if running.

    Locally, Ray's logical CPU count is raised to what the actors ask for: the engine calls the
    policies mostly one after another, so a 2-core laptop can host a debater pair and a judge.
    """
    import math

    import ray

    if ray.is_initialized():
        return
    # Ray starts its workers at niceness 15, so on a busy machine the policies (all the real work) yield
    # to anything else; run them at the driver's priority unless the user set it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cfg.address:
        kwargs["address"] = cfg.address
    else:
        kwargs["num_cpus"] = cfg.num_cpus or max(os.cpu_count() or 1, math.ceil(cpus_wanted))
    ray.init(**kwargs)


def start_policies(policies: Sequence[PolicyConfig], ray_cfg: RayConfig) -> dict[str, RemotePolicy]:
    """One actor per policy, started together so their model loads overlap."""
    from debate.embedded import ensure_embedded

    if any(p.model == "embedded" and p.backend != "mock" for p in policies):
        ensure_embedded()  # convert once in the driver, not in every actor at once
    start_ray(ray_cfg, sum(p.num_cpus for p in policies))
    return {p.name: RemotePolicy(p) for p in policies}


class LearnerHandle:
    """The driver's handle on a `LearnerServer`, in-process or in a Ray actor; `policy()` gives the views
    the engine plays (the current weights, or the reference with `reference=True`)."""

    def __init__(self, server: Any = None, actor: Any = None) -> None:
        if (server is None) == (actor is None):
            raise ValueError("LearnerHandle needs a server or an actor")
        self.server, self.actor = server, actor
        info = self.call("info")
        self.context_length = info["context_length"]
        self.device, self.dtype = info["device"], info["dtype"]

    @classmethod
    def remote(cls, cfg: PolicyConfig, train: Any) -> "LearnerHandle":
        import ray

        from debate.training.server import LearnerServer

        actor_cls = ray.remote(LearnerServer).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_concurrency=1)
        return cls(actor=actor_cls.remote(cfg, train))

    def submit(self, method: str, *args: Any) -> Any:
        if self.server is not None:
            return Done(getattr(self.server, method)(*args))
        return _RayFuture(getattr(self.actor, method).remote(*args))

    def call(self, method: str, *args: Any) -> Any:
        return self.submit(method, *args).result()

    def policy(self, name: str, reference: bool = False) -> "LearnerPolicy":
        return LearnerPolicy(self, name, reference)

    def close(self) -> None:
        if self.actor is not None:
            import ray

            ray.kill(self.actor)


class LearnerPolicy:
    """A `Policy` view of a learner: generation from its current weights or from its reference."""

    def __init__(self, handle: LearnerHandle, name: str, reference: bool) -> None:
        self.handle, self.name, self.reference = handle, name, reference
        self.context_length = handle.context_length
        self.device, self.dtype = handle.device, handle.dtype

    def submit_generate(self, requests: Sequence[GenRequest]) -> Any:
        return self.handle.submit("generate", list(requests), self.reference)

    def submit_score(self, requests: Sequence[ScoreRequest]) -> Any:
        return self.handle.submit("score", list(requests))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.handle.call("count_tokens", list(texts))

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return self.handle.call("truncate_tokens", list(texts), list(max_tokens))
