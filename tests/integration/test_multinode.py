"""A Ray cluster of three nodes on this machine: a head that takes no analysis work and two
worker nodes, each its own `ray start` (raylet, object store, agents). btcpulse runs against it
as against any external Ray cluster (RAY_ADDRESS). The analysis pool grows from one actor to two
on the replay's backlog, spread over the workers; one worker node is killed (SIGKILL to its whole
process tree) mid-replay; Ray restarts its actor on the surviving worker; every article is in the
stores exactly once; and once nothing waits the pool shrinks back to one.

Slow (a second stack, three Ray nodes, two model-loading actors on two cores): marked ``slow``,
and run in `make test` like the rest."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.pool import MEMBER_PREFIX, POOL
from cluster.local.ray_head import AUTH_MODE_ENV, SINGLE_NODE_ENV, RayHead, descendants
from cluster.serve_ingress import ray_serve_env
from tests.conftest import ARTIFACTS, REPO, TEST_PORTS, Stack

pytestmark = pytest.mark.slow

N = 2400  # articles replayed: enough that analysis-1, once loaded, still finds some waiting
OFFSET = 800  # ports apart from the shared test stack and the other per-module stacks
PORTS = {k: (str(int(v) + OFFSET) if k.endswith("_PORT") else v) for k, v in TEST_PORTS.items()}
RAY_PORT = int(PORTS["BTCPULSE_RAY_PORT"])
WORKER_CPUS = 2  # each worker alone can hold both analysis actors (after the other one dies)


class Cluster:
    """The head and worker nodes, and the btcpulse stack on top."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.stack = Stack(state_dir, env)
        self.env = env
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.temp_dir = RayHead(self.stack.settings()).temp_dir
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _ray(self, *args: str, log: str, block: bool = False) -> subprocess.Popen[bytes]:
        cmd = [str(Path(sys.executable).parent / "ray"), "start", *args, "--disable-usage-stats"]
        out = (self.logs / log).open("ab")
        # A session of its own: the worker's whole process group can be killed at once.
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        if not block:
            assert proc.wait(timeout=180) == 0, (self.logs / log).read_text()[-3000:]
        return proc

    def start_head(self) -> None:
        dash = int(PORTS["BTCPULSE_RAY_DASHBOARD_PORT"])
        self._ray(
            "--head", "--node-ip-address=127.0.0.1", f"--port={RAY_PORT}",
            f"--ray-client-server-port={RAY_PORT + 1}", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={dash + 1}",
            f"--temp-dir={self.temp_dir}", "--num-cpus=0", "--include-dashboard=true",
            log="ray-head.log",
        )  # fmt: skip

    def start_worker(self, name: str, index: int) -> None:
        # Two raylets on one machine: every port a node binds is its own, below the kernel's
        # ephemeral range (a port taken from it may meanwhile be the local end of some outgoing
        # connection) and above Ray's default worker ports (10002-19999, the other stacks');
        # each node hands its workers a range of its own.
        base = 30000 + OFFSET + 100 * index
        ports = [base + k for k in range(6)]
        workers = base + 10
        self.workers[name] = self._ray(
            f"--address=127.0.0.1:{RAY_PORT}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={WORKER_CPUS}", f"--dashboard-agent-listen-port={ports[0]}",
            f"--dashboard-agent-grpc-port={ports[1]}", f"--node-manager-port={ports[2]}",
            f"--object-manager-port={ports[3]}", f"--metrics-export-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
            f"--min-worker-port={workers}", f"--max-worker-port={workers + 80}",
            "--block", log=f"ray-{name}.log", block=True,
        )  # fmt: skip

    def kill_worker(self, name: str) -> set[int]:
        """SIGKILL the worker node: its `ray start`, raylet, agents and every worker process."""
        proc = self.workers.pop(name)
        pids = descendants({proc.pid})
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return pids

    def stop(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name)
        RayHead(self.stack.settings()).stop()


def _ray_state(stack: Stack, code: str) -> Any:
    """Run ``code`` (which sets ``result``) in a driver of the cluster; return ``result``."""
    script = (
        "import json, ray\n"
        "from ray.util.state import list_actors, list_nodes\n"
        f"ray.init(address='127.0.0.1:{RAY_PORT}', namespace='btcpulse', logging_level='ERROR',"
        " log_to_driver=False)\n" + code + "\nprint('RESULT=' + json.dumps(result))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT="))

    return json.loads(line[len("RESULT=") :])


PLACEMENT = """
nodes = {n.node_id: n for n in list_nodes(filters=[('state', '=', 'ALIVE')], raise_on_missing_output=False)}
actors = list_actors(filters=[('state', '=', 'ALIVE')], limit=1000, raise_on_missing_output=False)
result = {
    'workers': sorted(k for k, n in nodes.items() if not n.is_head_node),
    'head': [k for k, n in nodes.items() if n.is_head_node],
    'actors': {a.name: a.node_id for a in actors if a.name},
    'pids': {a.name: a.pid for a in actors if a.name},
}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    state_dir = Path(tempfile.mkdtemp(prefix="btcpmn-"))
    env = dict(os.environ)
    env.update(PORTS)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # Several nodes on one machine: Ray must believe a cluster can form.
            SINGLE_NODE_ENV: "1",
            AUTH_MODE_ENV: "disabled",
            "RAY_ADDRESS": f"127.0.0.1:{RAY_PORT}",
            "BTCPULSE_STATE_DIR": str(state_dir),
            # The pool: 1 actor idle, 2 while more than 300 messages wait; back to 1 after 60 s
            # of low backlog. Longer than a member's restart after its node dies (~20 s here:
            # the death noticed, the models loaded again), which the test waits to see: with
            # 20 s the backlog could fall below 300 and the pool shrink during the restart.
            "BTCPULSE_ANALYSIS_ACTORS": "1",
            "BTCPULSE_ANALYSIS_MAX_ACTORS": "2",
            "BTCPULSE_POOL_BACKLOG_PER_ACTOR": "300",
            "BTCPULSE_POOL_INTERVAL_S": "2",
            "BTCPULSE_POOL_SCALE_DOWN_AFTER_S": "60",
            # Two batches prefetched per consumer, not 256 messages: what analysis-0 holds in
            # its queue the broker cannot give analysis-1 (with 1,200 articles and 256, a run
            # had analysis-0 holding all that was left by the time analysis-1 had loaded).
            "BTCPULSE_RECEIVER_QUEUE_SIZE": "128",
            "BTCPULSE_RAY_NUM_CPUS": "0",
            # Serve's direct ingress, its switches on the head's `ray start` below.
            "BTCPULSE_SERVE_DIRECT_INGRESS": "1",
            # Ray declares a node dead after 3 missed health checks of 1 s (default 5 of 3 s).
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
    )
    c = Cluster(state_dir, env)
    # Serve's direct ingress on the API port, as docs/beyond-one-machine.md starts a cluster.
    env.update(ray_serve_env(c.stack.settings()))
    try:
        c.start_head()
        # One after the other: nodes of one machine share the session's socket folder, and two
        # starting at once can pick the same raylet socket name (bind: address in use).
        for count, name in enumerate(("worker-a", "worker-b"), start=1):
            c.start_worker(name, count - 1)
            c.stack.wait_for(
                f"{count} worker node(s)",
                lambda n=count: len(_ray_state(c.stack, PLACEMENT)["workers"]) == n,
                timeout=120,
            )
        c.stack.cli("up", "--no-live", timeout=900)
        yield c
    finally:
        try:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                c.stack.cli("down", timeout=300)
        finally:
            c.stop()
            for log in c.logs.glob("ray-*.log"):
                ARTIFACTS.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    (ARTIFACTS / f"multinode-{log.name}").write_bytes(log.read_bytes()[-200_000:])
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)


def _metric(stack: Stack, name: str) -> int:
    try:
        text = stack.get("/metrics").text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return -1


def _members(placed: dict[str, Any]) -> dict[str, str]:
    """The pool's analysis actors and their nodes."""
    return {k: v for k, v in placed["actors"].items() if k.startswith(MEMBER_PREFIX) and k != POOL}


def _pool(stack: Stack) -> dict[str, Any]:
    result: dict[str, Any] = _ray_state(
        stack,
        "pool = ray.get_actor('analysis-pool')\n"
        "result = {'stats': ray.get(pool.stats.remote()), 'events': ray.get(pool.events.remote())}",
    )
    return result


def _processed(stack: Stack, actor: str) -> int:
    prefix = f'btcpulse_actor_stat{{actor="{actor}",stat="processed"}} '
    try:
        text = stack.get("/metrics").text
    except httpx.HTTPError:
        return 0
    return next((int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(prefix)), 0)


def _stored(stack: Stack) -> int:
    return _metric(stack, "btcpulse_vector_points")


def test_news_raw_is_partitioned_and_key_shared(cluster: Cluster) -> None:
    from cluster.pulsar_admin import partitions, topic_stats
    from cluster.topics import Topics

    settings = cluster.stack.settings()
    raw = Topics.from_settings(settings).news_raw.name
    assert partitions(settings, raw) == settings.news_partitions == 4
    sub = (topic_stats(settings, raw) or {})["subscriptions"]["analysis"]
    assert sub["type"] == "Key_Shared"
    assert len(sub["consumers"]) == 1  # the pool at rest: its minimum (stats merge partitions by consumer)


def test_a_worker_node_dies_mid_replay_and_every_article_is_stored_once(
    cluster: Cluster, news_csv: Path
) -> None:
    stack = cluster.stack
    placed = _ray_state(stack, PLACEMENT)
    head = set(placed["head"])
    assert sorted(_members(placed)) == ["analysis-0"]
    # The stages that keep files on local disk run on the head.
    for name in ("vector-store", "aggregator", "topic-model", POOL):
        assert placed["actors"][name] in head, (name, placed)
    # The API's replica answers on the head's API port itself (direct ingress); Serve's proxy
    # on its own port reaches it too.
    ingress = [n for k, n in placed["actors"].items() if k.startswith("SERVE_REPLICA::btcpulse#ingress#")]
    assert len(ingress) == 1 and set(ingress) <= head, placed
    proxy = httpx.get(f"http://127.0.0.1:{stack.settings().proxy_port}/healthz", timeout=30)
    assert proxy.status_code == 200, proxy.text

    stack.cli("replay", str(news_csv), "--limit", str(N), timeout=600)

    # The backlog (N waiting, 300 per actor) grows the pool to its maximum, spread: one analysis
    # actor on each worker node, none on the head (it has no CPUs).
    def grown() -> dict[str, Any] | None:
        now = _ray_state(stack, PLACEMENT)
        members = _members(now)
        return now if len(members) == 2 and set(members.values()) == set(now["workers"]) else None

    placed = stack.wait_for("the pool grown to 2 actors on 2 workers", grown, timeout=300, every=1)
    assert _pool(stack)["events"][-1]["why"] == "backlog"
    stack.wait_for("analysis-1 working", lambda: _processed(stack, "analysis-1") > 0, timeout=300, every=1)
    assert _stored(stack) < N, "the replay was over before the node could be killed mid-way"
    # The worker node that runs analysis-1: the one whose process tree holds that actor.
    pid = placed["pids"]["analysis-1"]
    victim = next(name for name, proc in cluster.workers.items() if pid in descendants({proc.pid}))
    at_kill = _stored(stack)
    cluster.kill_worker(victim)
    t_kill = time.monotonic()

    # Ray restarts the lost actor on the surviving worker; the pool is whole again.
    def restarted() -> bool:
        now = _ray_state(stack, PLACEMENT)
        members = _members(now)
        return len(now["workers"]) == 1 and len(members) == 2 and set(members.values()) == set(now["workers"])

    stack.wait_for("analysis-1 restarted on the other worker", restarted, timeout=300, every=2)
    stack.wait_for(f"all {N} articles stored", lambda: _stored(stack) >= N, timeout=900, every=2)
    stack.wait_for("pipeline drained", stack.drained, timeout=300, every=2)
    recovered_s = time.monotonic() - t_kill

    # Nothing waits any more: after 60 s of it the pool is back at its minimum.
    def shrunk() -> bool:
        return sorted(_members(_ray_state(stack, PLACEMENT))) == ["analysis-0"]

    stack.wait_for("the pool back to 1", shrunk, timeout=180, every=2)
    steps = [(e["from"], e["to"], e["why"]) for e in _pool(stack)["events"]]
    assert steps == [(0, 1, "minimum"), (1, 2, "backlog"), (2, 1, "idle")]

    # Exactly once: N points (keyed by article id), N articles counted by the aggregator, and
    # each hourly window's count adds up to N.
    assert _stored(stack) == N
    assert _metric(stack, "btcpulse_articles") == N
    series = stack.get("/api/series", step="1d", start="2021-01-01T00:00:00Z", end="2023-01-01T00:00:00Z",
                       fields="count")  # fmt: skip
    assert series.status_code == 200, series.text
    assert sum(int(b.get("count") or 0) for b in series.json()["buckets"]) == N
    assert stack.get("/api/deadletters").json()["results"] == []
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "multinode.tsv").write_text(
        f"articles\tstored_at_kill\tlost\tduplicated\trecovered_s\n{N}\t{at_kill}\t0\t0\t{recovered_s:.1f}\n"
    )
