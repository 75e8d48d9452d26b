"""Ray on a cluster of three nodes simulated on this machine (`ray.cluster_utils.Cluster`): policies land on
the node their `resources` name, a killed policy actor is restarted and its calls re-run (or its debates
are stored as failed and `--retry-failed` completes them), and a driver stopped by SIGTERM or SIGKILL takes
its actors with it within seconds. The mock backend throughout: no model loads."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from arenas.tournament import resume_config, run_tournament
from debate.backends.mock import MockBackend
from debate.configs import ConfigError, load_tournament
from debate.store import Store

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_FILE = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # where `ray.init()` looks for a cluster


class SlowBackend(MockBackend):
    """The mock, with each generate call spinning the CPU for `seconds` (a long model call that checks nothing).
    When a call starts it appends its pid to the file `started`, so a test knows the actor is mid-call.
    Defined in a module the workers can import: they run with the driver's working directory on sys.path."""

    def __init__(self, name: str, seconds: float, started: Optional[str] = None) -> None:
        super().__init__(name)
        self.seconds, self.started = seconds, started

    def generate(self, requests):
        if self.started:
            with open(self.started, "a") as f:
                f.write(f"{os.getpid()}\n")
        end, spins = time.monotonic() + self.seconds, 0
        while time.monotonic() < end:
            spins += 1
        return super().generate(requests)


def _restore(path: Path, text: Optional[str]) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)


@pytest.fixture(scope="module")
def cluster():
    """A head node and two workers with custom resources `gpu-a` and `judge-node`, one CPU each; yields the
    address and each node's id."""
    from ray.cluster_utils import Cluster

    before = ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None
    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False})
    _restore(ADDRESS_FILE, before)  # Cluster records itself there: another `ray.init()` on this machine must not join it
    try:
        nodes = {"head": c.head_node,
                 "gpu-a": c.add_node(num_cpus=1, resources={"gpu-a": 1}),
                 "judge-node": c.add_node(num_cpus=1, resources={"judge-node": 1})}
        c.wait_for_nodes()
        ray.init(address=c.address)
        yield c.address, {name: node.node_id for name, node in nodes.items()}
    finally:
        ray.shutdown()
        c.shutdown()
        _restore(ADDRESS_FILE, before)


def config(address: str, results: Path, debater: Optional[dict] = None, n: int = 2) -> dict:
    return {
        "name": "cluster",
        "questions": {"source": "synthetic", "n": n, "seed": 1},
        "policies": [{"name": "p", "backend": "mock", "num_cpus": 0.25, "resources": {"gpu-a": 1}, **(debater or {})},
                     {"name": "j", "backend": "mock", "num_cpus": 0.25, "resources": {"judge-node": 1}}],
        "entries": [{"name": "a", "policy": "p"}, {"name": "b", "policy": "p"}],
        "judge": {"name": "mock-judge", "policy": "j"},
        "protocols": [{"name": "debate", "rounds": 1}, {"name": "blind"}],
        "ray": {"address": address},
        "results": str(results),
    }


def gone(pids: list[int], within: float) -> float:
    """Seconds until none of `pids` runs any more (a zombie counts as gone), or `within` plus a little when one stays."""
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # also when it ends between the look-up and the status
            return False

    start = time.monotonic()
    while time.monotonic() - start < within:
        alive = [p for p in pids if running(p)]
        if not alive:
            return time.monotonic() - start
        time.sleep(0.1)
    return within + 1


def assert_complete_once(store: Store, run: str) -> None:
    """Every debate complete with its speeches once, one verdict per debate."""
    ts = store.transcripts(run)
    assert ts and all(t.status == "complete" for t in ts), [t.error for t in ts if t.status != "complete"]
    keys = store.query("SELECT transcript_id, idx FROM speeches")
    assert len(keys) == len(set(keys)) == sum(2 for t in ts if t.protocol == "debate")
    verdicts = store.verdicts(run)
    assert len(verdicts) == len({v.transcript_id for v in verdicts}) == len(ts)


def test_debaters_and_judge_land_where_the_config_says(cluster, tmp_path):
    address, nodes = cluster
    result = run_tournament(load_tournament(config(address, tmp_path)), run="place", progress=False)
    assert_complete_once(result.store, "place")
    placed = {row["policy"]: row for row in result.store.placements("place")}
    assert placed["p"]["node_id"] == nodes["gpu-a"] and placed["j"]["node_id"] == nodes["judge-node"]
    assert result.placement["p"]["node_id"] == nodes["gpu-a"]
    from debate.export import tables

    exported = tables(result.store, "place")["placements"].set_index("policy")
    assert exported.node_id.to_dict() == {"p": nodes["gpu-a"], "j": nodes["judge-node"]}
    print(f"placement: p on gpu-a node {nodes['gpu-a'][:12]}, j on judge-node node {nodes['judge-node'][:12]}")
    # the run's actors end with the run, not with the process
    assert gone([placed["p"]["pid"], placed["j"]["pid"]], within=10) <= 10


def test_a_policy_no_node_can_host_is_refused_before_it_waits(cluster, tmp_path):
    address, _ = cluster
    cfg = load_tournament(config(address, tmp_path, debater={"resources": {"gpu-z": 1}}))
    with pytest.raises(ConfigError, match=r"policies\.p: asks Ray for .*gpu-z.*no node"):
        run_tournament(cfg, run="nowhere", progress=False)


def _kill_mid_call(handle, marker: Path, delay: float = 0.3) -> threading.Thread:
    """Kill the actor (Ray may restart it) once its first generate call is under way."""

    def kill() -> None:
        while not marker.exists():
            time.sleep(0.05)
        time.sleep(delay)
        ray.kill(handle.actor, no_restart=False)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _policies(cfg, marker: Path) -> dict:
    from debate.actors import RemotePolicy

    return {"p": RemotePolicy(cfg.policy("p"), SlowBackend("p", seconds=1.0, started=str(marker))),
            "j": RemotePolicy(cfg.policy("j"))}


def test_a_killed_actor_restarts_and_the_call_it_was_serving_is_rerun(cluster, tmp_path):
    address, nodes = cluster
    cfg = load_tournament(config(address, tmp_path))  # defaults: max_restarts 1, max_task_retries 1
    marker = tmp_path / "calls"
    policies = _policies(cfg, marker)
    try:
        first_pid = policies["p"].info["pid"]
        killer = _kill_mid_call(policies["p"], marker)
        result = run_tournament(cfg, run="kill", progress=False, policies=policies)
        killer.join(timeout=5)
        assert_complete_once(result.store, "kill")
        assert result.store.failures("kill") == ([], [])
        info = ray.get(policies["p"].actor.info.remote())
        assert info["pid"] != first_pid and info["node_id"] == nodes["gpu-a"], "restarted, on the node it asks for"
        calls = marker.read_text().split()
        assert calls[0] == str(first_pid) and str(info["pid"]) in calls, "the killed call ran again on the restarted actor"
        print(f"actor kill: pid {first_pid} killed mid-call, restarted as pid {info['pid']}; calls by pid: {calls}")
    finally:
        for handle in policies.values():
            handle.close()


def test_without_task_retries_the_debates_fail_and_retry_failed_completes_them(cluster, tmp_path):
    address, _ = cluster
    cfg = load_tournament(config(address, tmp_path, debater={"max_task_retries": 0}))
    marker = tmp_path / "calls"
    policies = _policies(cfg, marker)
    try:
        _kill_mid_call(policies["p"], marker)
        first = run_tournament(cfg, run="fail", progress=False, policies=policies)
        failed = [t for t in first.store.transcripts("fail") if t.status == "failed"]
        assert failed and all("generation failed" in t.error for t in failed)
        print(f"actor kill without task retries: {len(failed)} debates stored as failed: {failed[0].error[:120]}")
        again = run_tournament(resume_config(first.store, "fail"), run="fail", resume=True, retry_failed=True,
                               progress=False, policies=policies)
        assert again.retried[0] == len(failed)
        assert_complete_once(first.store, "fail")
        assert {h["id"] for h in first.store.failures("fail")[0]} == {t.id for t in failed}
    finally:
        for handle in policies.values():
            handle.close()


def test_token_counts_wait_for_a_restarting_actor_even_without_task_retries(cluster, tmp_path):
    """A resumed run's first calls (token counts) can reach the actor while Ray restarts it: they are safe to
    run twice, so they wait for it, where a generation call with `max_task_retries: 0` would fail."""
    address, _ = cluster
    cfg = load_tournament(config(address, tmp_path, debater={"max_task_retries": 0}))
    policies = _policies(cfg, tmp_path / "calls")
    try:
        first_pid = policies["p"].info["pid"]
        ray.kill(policies["p"].actor, no_restart=False)
        assert policies["p"].count_tokens(["one two three", "four"]) == [3, 1]
        assert policies["p"].truncate_tokens(["one two three"], [2]) == ["one two"]
        from debate.actors import _waiting  # the test's own look at the pid may meet the restart race too

        assert _waiting(policies["p"].actor.info)["pid"] != first_pid, "the counts came from the restarted actor"
    finally:
        for handle in policies.values():
            handle.close()


def test_an_idempotent_call_is_made_again_while_ray_reports_the_actor_unavailable(monkeypatch):
    """Ray can report a restarting actor unavailable even with task retries on (the full suite met it once in
    the test above): the idempotent calls are made again until the actor answers; past their patience, or for
    an actor that died, the error is raised."""
    import debate.actors as actors

    class Method:
        def __init__(self):
            self.calls = []

        def options(self, **kw):
            assert kw == {"max_task_retries": -1}
            return self

        def remote(self, *args):
            self.calls.append(args)
            return len(self.calls)

    answers = {1: ray.exceptions.ActorUnavailableError("restarting", None), 2: ray.exceptions.ActorUnavailableError(
        "restarting", None), 3: [3, 1]}

    def get(ref):
        if isinstance(answers[ref], Exception):
            raise answers[ref]
        return answers[ref]

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(actors.time, "sleep", lambda s: None)
    method = Method()
    assert actors._waiting(method, ["one two three", "four"]) == [3, 1]
    assert method.calls == [(["one two three", "four"],)] * 3
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        actors._waiting(Method(), "x", patience_s=-1.0)
    answers[1] = ray.exceptions.ActorDiedError()
    with pytest.raises(ray.exceptions.ActorDiedError):
        actors._waiting(Method(), "x")


DRIVER = """
import json, signal, sys
# Ctrl-C as from a terminal, however pytest was started: a background job of a non-interactive shell inherits
# SIGINT ignored, and Python then never raises KeyboardInterrupt (the test would time the shell, not the harness)
signal.signal(signal.SIGINT, signal.default_int_handler)
from arenas.tournament import run_tournament
from debate.configs import load_tournament
from tests.test_ray_cluster import SlowBackend

cfg = load_tournament(json.loads(sys.argv[1]))
run_tournament(cfg, run="stop", progress=False, backends={"p": SlowBackend("p", seconds=120, started=sys.argv[2])})
"""


def _placed_pids(results: Path) -> list[int]:
    with sqlite3.connect(results / "debate.sqlite", timeout=30) as c:
        return [json.loads(r[0])["pid"] for r in c.execute("SELECT json FROM placements WHERE run = 'stop'")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT], ids=["sigterm", "sigkill", "sigint"])
def test_actors_stop_with_their_driver(cluster, tmp_path, sig):
    """A driver mid-call (the debater spins for 120 s) is stopped: its actors on the cluster are gone within
    seconds, where Ray alone lets a running call go on for its graceful-shutdown timeout (30 s) first."""
    address, _ = cluster
    results, marker = tmp_path / "results", tmp_path / "calls"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(config(address, results)), str(marker)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), f"the driver never started generating:\n{proc.communicate(timeout=30)[0] if proc.poll() is not None else ''}"
        time.sleep(0.5)
        pids = _placed_pids(results)
        assert len(pids) == 2 and int(marker.read_text().split()[0]) in pids
        busy = psutil.Process(int(marker.read_text().split()[0])).cpu_percent(0.5)  # a share of one core; low when the machine is busy
        proc.send_signal(sig)
        took = gone(pids, within=15)
        print(f"{sig.name}: the debater, mid-call at {busy:.0f}% CPU, and the judge were gone {took:.1f} s after the signal")
        assert took <= 10, f"{sig.name}: an actor of the stopped driver still runs after 10 s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
