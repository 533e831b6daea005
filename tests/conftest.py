"""Shared fixtures. Integration and browser tests run against a real stack started by the
project's own CLI (Pulsar standalone, Ray with 2 CPUs, Serve), once per test session, on
ports of its own so a running `make up` is left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.local.ray_head import AUTH_MODE_ENV, SINGLE_NODE_ENV

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARTIFACTS = REPO / "artifacts"

TEST_PORTS = {
    "BTCPULSE_PULSAR_BROKER_PORT": "16650",
    "BTCPULSE_PULSAR_WEB_PORT": "18080",
    "BTCPULSE_PULSAR_BOOKIE_PORT": "13181",
    "BTCPULSE_RAY_PORT": "26379",
    "BTCPULSE_RAY_DASHBOARD_PORT": "28265",
    "BTCPULSE_API_PORT": "18000",
    "BTCPULSE_RAY_NUM_CPUS": "2",
}
# BTCPULSE_TEST_PORT_OFFSET=N shifts every port, so two test runs on one machine keep apart.
_OFFSET = int(os.environ.get("BTCPULSE_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {k: (str(int(v) + _OFFSET) if k.endswith("_PORT") else v) for k, v in TEST_PORTS.items()}


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {'/'.join(parts)} not found beside the repo (../shared/data)")
    return path


@pytest.fixture(scope="session")
def news_csv() -> Path:
    return shared_file("crypto_news_2021_2022", "cryptonews.csv")


@pytest.fixture(scope="session")
def prices_csv() -> Path:
    return shared_file("btc_usd_bitstamp_hourly", "Bitstamp_BTCUSD_1h.csv")


class Stack:
    """A running test stack and the commands to drive it."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.env = env
        self.api = f"http://127.0.0.1:{env['BTCPULSE_API_PORT']}"

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "cluster.cli", *args, "--state-dir", str(self.state_dir)]
        done = subprocess.run(cmd, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.api + path, params=params, timeout=30)

    def settings(self):
        from cluster.settings import BtcpulseSettings

        old = dict(os.environ)
        os.environ.update(self.env)
        os.environ["BTCPULSE_STATE_DIR"] = str(self.state_dir.resolve())
        try:
            return BtcpulseSettings()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def drained(self) -> bool:
        """Every consuming stage has caught up: no backlog, nothing unacknowledged."""
        from cluster.pulsar_admin import subscription_backlog
        from cluster.topics import Topics

        settings = self.settings()
        topics = Topics.from_settings(settings)
        for topic, sub in ((topics.news_raw.name, "analysis"), (topics.news_scored.name, "aggregator"),
                           (topics.prices.name, "aggregator")):  # fmt: skip
            b = subscription_backlog(settings, topic, sub)
            if b is None or b.backlog or b.unacked:
                return False
        return True

    def wait_for(self, what: str, check, timeout: float = 300, every: float = 1.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # Fault injection on: the fault suite arms crashes and poison through the actors.
    yield from stack_with({"BTCPULSE_FAULT_INJECTION": "1"}, port_shift=0, name="")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first, then integration, then browser tests: the browser tests add data to
    the shared stack, the integration tests count from a clean one; the fault suite comes last of those."""
    rank = {"unit": 0, "integration": 1, "browser": 3}
    # The fault suite takes the stack down and up again: after the other integration tests.
    last = {"test_faults": 2}

    def key(item: pytest.Item) -> int:
        path = Path(str(item.fspath))
        return last.get(path.stem, rank.get(path.parent.name, 1))

    items.sort(key=key)


# --- More stacks, each with settings of its own -----------------------------------------------


def stack_with(extra_env: dict[str, str], *, port_shift: int, name: str) -> Iterator[Stack]:
    """Start a stack through the project's own CLI, with ``extra_env`` on top and every port
    shifted by ``port_shift`` from TEST_PORTS (so it can run beside the session's); yield it,
    then take it down. For a fixture: ``yield from stack_with(...)``. Its Pulsar log is kept as
    artifacts/pulsar-<name>.log (artifacts/pulsar.log for the session's, name "")."""
    # Short path: Ray puts Unix sockets under a temp dir derived from it.
    state_dir = Path(tempfile.mkdtemp(prefix=f"btcp-{name[:8]}-" if name else "btcp-"))
    env = dict(os.environ)
    env.update({k: (str(int(v) + port_shift) if k.endswith("_PORT") else v) for k, v in TEST_PORTS.items()})
    # Drivers the tests start themselves (ray.init) keep Ray's node on 127.0.0.1, as the CLI's do.
    env.setdefault(SINGLE_NODE_ENV, "0")
    env.setdefault(AUTH_MODE_ENV, "disabled")
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra_env)
    s = Stack(state_dir, env)
    try:
        # No live collectors: tests reach nothing beyond this machine.
        s.cli("up", "--no-live", timeout=900)
        yield s
    finally:
        try:
            s.cli("down", timeout=300)
        finally:
            logs = state_dir / "pulsar" / "pulsar.log"
            if logs.exists():
                ARTIFACTS.mkdir(exist_ok=True)
                shutil.copy(logs, ARTIFACTS / (f"pulsar-{name}.log" if name else "pulsar.log"))
            shutil.rmtree(state_dir, ignore_errors=True)


#: The qdrant-client vector store kept in a directory under the state dir (cluster.vectors:
#: QDRANT_URL=path:DIR), standing in for a Qdrant server: no server binary runs in the tests.
#: Serve's direct ingress off, said explicitly: this stack's API goes through Serve's proxy, the
#: path of a Ray cluster started without it (cluster.serve_ingress).
CLIENT_STORE_ENV = {"BTCPULSE_QDRANT_URL": "path:qdrant-client", "BTCPULSE_SERVE_DIRECT_INGRESS": "0"}


@pytest.fixture(scope="module")
def client_store_stack() -> Iterator[Stack]:
    """A stack whose vector store goes through qdrant-client, on TEST_PORTS + 500."""
    yield from stack_with(CLIENT_STORE_ENV, port_shift=500, name="client-store")
