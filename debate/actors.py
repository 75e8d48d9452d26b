"""Ray actors hosting policies (debaters and model judges). Ray is imported only here.

The driver talks to every policy through a handle with the same methods, local or remote (both satisfy
`debate.policy.Policy`): `submit_generate` / `submit_score` return futures so that several policies work
at once; `count_tokens` / `truncate_tokens` take whole lists, one call per batch.

Actors stop with their driver. Ray ends a stopped driver's actors by itself only once it notices, and a
graceful end waits for the call in progress, so a model call could run on at full CPU after the driver
is gone. So the driver force-kills the actors it started when it exits, on SIGTERM and on Ctrl-C
(`stop_started`), and each actor on the driver's machine watches the driver's process and exits when it
is gone (a driver killed with SIGKILL runs no handler).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import threading
import time
from typing import Any, Optional, Sequence

from debate.backends.base import Done, GenRequest, GenResult, ScoreRequest, ScoreResult
from debate.configs import ConfigError, PolicyConfig, RayConfig


def driver_identity() -> dict:
    """This process as its actors' watchdog checks it: pid, start time (a reused pid is another process) and host."""
    import psutil

    return {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "host": socket.gethostname()}


def driver_alive(driver: dict) -> bool:
    """Whether the driver `driver_identity()` described still runs (a zombie, killed but not yet reaped, does not)."""
    import psutil

    try:
        proc = psutil.Process(driver["pid"])
        return abs(proc.create_time() - driver["create_time"]) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch_driver(driver: Optional[dict], interval: float = 0.5) -> None:
    """Exit this worker process as soon as its driver is gone: checked now (a restarted actor whose driver died
    loads no model) and every `interval` seconds by a daemon thread. Only on the driver's own host, where its
    pid means something; elsewhere Ray's own clean-up applies."""
    if not driver or driver.get("host") != socket.gethostname():
        return
    if not driver_alive(driver):
        os._exit(1)

    def loop() -> None:
        while driver_alive(driver):
            time.sleep(interval)
        os._exit(1)  # no clean-up: the process holds nothing the run needs, and a model call must not finish first

    threading.Thread(target=loop, name="driver-watchdog", daemon=True).start()


def where() -> dict:
    """The node this process runs on: Ray's node id and IP inside Ray (empty outside it), and the host name."""
    import sys

    out = {"host": socket.gethostname(), "node_id": "", "node_ip": ""}
    ray = sys.modules.get("ray")  # never imported just to say "not in Ray"
    if ray is not None and ray.is_initialized():
        out["node_id"] = ray.get_runtime_context().get_node_id()
        out["node_ip"] = ray.util.get_node_ip_address()
    return out


class PolicyServer:
    """Holds one backend; the body of the Ray actor, usable in-process as well."""

    def __init__(self, cfg: PolicyConfig, backend: Any = None, driver: Optional[dict] = None) -> None:
        from debate.backends.registry import make_backend

        watch_driver(driver)  # first: a (re)started actor of a driver that is gone exits before loading a model
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
            **where(),
        }

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return self.backend.generate(requests)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.backend.score(requests)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return self.backend.truncate_tokens(texts, max_tokens)

    def set_adapter(self, path: Optional[str], version: Optional[int] = None) -> Optional[int]:
        """Serve the LoRA adapter in folder `path` from the next request on (None: the base model), as the
        training loop hands a running policy its new weights; returns the adapter's version id."""
        set_adapter = getattr(self.backend, "set_adapter", None)
        if set_adapter is None:
            raise ValueError(f"policy {self.name}: its backend ({type(self.backend).__name__}) takes no LoRA adapters at run "
                             f"time; use backend: vllm with max_lora_rank")
        return set_adapter(path, version)


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

    def set_adapter(self, path: Optional[str], version: Optional[int] = None) -> Optional[int]:
        return self.server.set_adapter(path, version)

    def close(self) -> None:
        """Release what the backend holds open (an HTTP client's threads); the model stays in this process."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()


def _waiting(method: Any, *args: Any, patience_s: float = 120.0) -> Any:
    """Call an idempotent actor method (token counts, info, adapter swap) so that an actor Ray is restarting is
    waited for, whatever the policy's `max_task_retries`: that setting guards generation calls from being run
    twice, and these are safe to run again. Without it, a call made while the actor restarts fails at once
    (`ActorUnavailableError`). Ray can still report a restarting actor unavailable with retries on (a race the
    full suite met once), so such a call is made again every half second for up to `patience_s`; an actor
    past its `max_restarts` still raises (`ActorDiedError`)."""
    import ray

    deadline = time.monotonic() + patience_s
    while True:
        try:
            return ray.get(method.options(max_task_retries=-1).remote(*args))
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class _RayFuture:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, ConfigError):  # bad input, named by the actor: shown as raised, not as a trace
                raise exc.cause from None
            raise


_STARTED: list["RemotePolicy"] = []  # the actors this process started and has not closed: stopped with it


class RemotePolicy:
    """A policy served by a Ray actor; its resources, placement and restarts come from the policy's config.

    `backend`, when given, is a backend object shipped to the actor instead of the one the config names
    (a custom or test backend: picklable, its class importable on the workers). The actor is restarted
    `max_restarts` times when its process dies, and the calls it was serving are re-run on the restarted
    actor `max_task_retries` times; past that a call raises, and the engine stores its debates as failed.
    """

    def __init__(self, cfg: PolicyConfig, backend: Any = None) -> None:
        import ray

        actor_cls = ray.remote(PolicyServer).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, resources=dict(cfg.resources) or None, name=None,
            max_concurrency=1, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
        )
        guard_driver()
        self.actor = actor_cls.remote(cfg, backend, driver_identity())
        _STARTED.append(self)
        info = _waiting(self.actor.info)
        self.info = info  # where it landed: node_id, node_ip, host, pid
        self.name = cfg.name
        self.context_length = info["context_length"]
        self.load_seconds = info["load_seconds"]
        self.device, self.dtype = info["device"], info["dtype"]  # what `auto` resolved to, on the actor's machine

    def submit_generate(self, requests: Sequence[GenRequest]) -> _RayFuture:
        return _RayFuture(self.actor.generate.remote(list(requests)))

    def submit_score(self, requests: Sequence[ScoreRequest]) -> _RayFuture:
        return _RayFuture(self.actor.score.remote(list(requests)))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return _waiting(self.actor.count_tokens, list(texts))

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return _waiting(self.actor.truncate_tokens, list(texts), list(max_tokens))

    def set_adapter(self, path: Optional[str], version: Optional[int] = None) -> Optional[int]:
        """Hand the running actor a new LoRA adapter (a folder it can read: shared storage on a cluster)."""
        return _waiting(self.actor.set_adapter, None if path is None else str(path), version)

    def close(self) -> None:
        """Kill the actor at once (a call in progress is interrupted; no restart)."""
        import ray

        if self in _STARTED:
            _STARTED.remove(self)
        if ray.is_initialized():
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # already dead, or Ray is going down: nothing left to stop
                pass


def stop_started() -> None:
    """Kill every policy actor this process started and has not closed (at exit, on SIGTERM, after Ctrl-C)."""
    while _STARTED:
        _STARTED[-1].close()


def _on_sigterm(signum: int, frame: Any) -> None:
    stop_started()
    previous = _PREVIOUS_SIGTERM.get("handler")
    if callable(previous):
        previous(signum, frame)  # Ray's: sys.exit, so the run's `finally` blocks and atexit run
    raise SystemExit(128 + signum)


_PREVIOUS_SIGTERM: dict[str, Any] = {}
_AT_EXIT: list[bool] = []


def guard_driver() -> None:
    """Stop this driver's actors with it: at exit (registered after `ray.init`'s own hook, so it runs before
    Ray shuts down) and on SIGTERM (chained before the handler `ray.init` installed). In the main thread only,
    where Python delivers signals."""
    if not _AT_EXIT:
        atexit.register(stop_started)
        _AT_EXIT.append(True)
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is not _on_sigterm:
        _PREVIOUS_SIGTERM["handler"] = current
        signal.signal(signal.SIGTERM, _on_sigterm)


def check_placement(policies: Sequence[PolicyConfig]) -> None:
    """Refuse, before any actor starts, a policy no node of the cluster can ever host: Ray would keep such an
    actor pending without a word. Capacity only: a node busy with other actors is waited for."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for p in policies:
        wanted = {"CPU": p.num_cpus, "GPU": p.num_gpus, **p.resources}
        wanted = {k: v for k, v in wanted.items() if v}
        if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
            continue
        have = "; ".join(", ".join(f"{k}: {v:g}" for k, v in sorted(node.items()) if not k.startswith("node:")
                                   and k not in ("memory", "object_store_memory")) for node in nodes)
        raise ConfigError(f"policies.{p.name}: asks Ray for {wanted} on one node, and no node of the cluster has that "
                          f"(nodes: {have}); start a node that has it (`ray start --address HEAD:6379 --resources "
                          f"'{{\"NAME\": 1}}'`, `--num-gpus N`) or change policies.{p.name}.resources / num_cpus / num_gpus")


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
        import torch

        gpus = torch.cuda.device_count()  # 0 without a CUDA build or driver
        if gpus:  # say so, rather than rely on Ray finding them itself (an actor asking for a GPU share would wait forever)
            kwargs["num_gpus"] = gpus
    ray.init(**kwargs)


def start_policies(policies: Sequence[PolicyConfig], ray_cfg: RayConfig, backends: Optional[dict[str, Any]] = None,
                   ) -> dict[str, RemotePolicy]:
    """One actor per policy, placed by its resources, stopped with this driver; `backends` (by policy name)
    ships backend objects built by the caller instead of the configured ones (tests, custom backends)."""
    from debate.embedded import ensure_embedded

    backends = backends or {}
    if any(p.model == "embedded" and p.backend != "mock" and p.name not in backends for p in policies):
        ensure_embedded()  # convert once in the driver, not in every actor at once
    start_ray(ray_cfg, sum(p.num_cpus for p in policies))
    check_placement(policies)
    return {p.name: RemotePolicy(p, backends.get(p.name)) for p in policies}


class LearnerHandle:
    """The driver's handle on a `LearnerServer` (or on the separate layout's `GeneratorServer`), in-process or
    in a Ray actor; `policy()` gives the views the engine plays (the current weights, or the reference with
    `reference=True`)."""

    def __init__(self, server: Any = None, actor: Any = None) -> None:
        if (server is None) == (actor is None):
            raise ValueError("LearnerHandle needs a server or an actor")
        self.server, self.actor = server, actor
        info = self.call("info")
        self.context_length = info["context_length"]
        self.device, self.dtype = info["device"], info["dtype"]

    @classmethod
    def remote(cls, cfg: PolicyConfig, *args: Any, server: Any = None) -> "LearnerHandle":
        """A Ray actor of class `server` (default `LearnerServer`) built as `server(cfg, *args)`, placed by the
        config's resources; no restarts: a restarted actor would have lost its trained weights or adapter."""
        import ray

        from debate.training.server import LearnerServer

        actor_cls = ray.remote(server or LearnerServer).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                                                                max_concurrency=1)
        return cls(actor=actor_cls.remote(cfg, *args))

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
