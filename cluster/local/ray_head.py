"""A single-node Ray head for the local stack, started and stopped by the CLI.

``ray stop`` would stop every Ray on the machine; this module stops only its own head:
the processes that name its temp dir or its node id, and everything they started.

Loopback only. ``ray start --node-ip-address=127.0.0.1`` alone is not enough: Ray turns a
loopback node address into the machine's routable one (``resolve_ip_for_localhost``), and the
GCS, raylet, object manager, workers, agents, metrics exporters and client server then listen
on it or on every interface. Ray keeps the node on 127.0.0.1 only where it believes that no
cluster can form (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own default on Windows and
macOS); every listener then binds 127.0.0.1. Each process that starts the head or connects a
driver to it needs that variable before it imports Ray (:func:`ray_env`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.local.process import http_ok
from cluster.serve_ingress import ray_serve_env
from cluster.settings import BtcpulseSettings

_NODE_ID = re.compile(r"--node[-_]id=([0-9a-f]{16,})")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (names, not a bind)
# Read by Ray when ray._private.ray_constants is imported.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# `ray start --head` turns token authentication on by itself when ~/.ray/auth_token exists
# (any local `ray.init()` writes one), while a driver given an address does not: the head
# would refuse its own stack. The mode is therefore always said, the same to both sides.
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def ray_env(settings: BtcpulseSettings) -> dict[str, str]:
    """What the head and every driver of a loopback stack need in their environment."""
    if settings.ray_address is None and settings.bind_host in LOOPBACK_HOSTS:
        return {SINGLE_NODE_ENV: "0", AUTH_MODE_ENV: os.environ.get(AUTH_MODE_ENV, "disabled")}
    return {}


def node_ip(settings: BtcpulseSettings) -> str | None:
    """The head's ``--node-ip-address``: 127.0.0.1 on loopback, the bind host when it names one
    address, none (Ray picks the routable one) for a wildcard."""
    host = settings.bind_host
    if host in LOOPBACK_HOSTS:
        return "127.0.0.1"
    return None if host in WILDCARD_HOSTS else host


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (ppid, cmd)
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, str]] | None = None) -> set[int]:
    """``roots`` and every process below them in ``table`` (default: the live process table)."""
    table = _proc_table() if table is None else table
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


@dataclass(frozen=True)
class RayHead:
    settings: BtcpulseSettings

    @property
    def temp_dir(self) -> Path:
        # Short on purpose: Ray's Unix sockets live under it (108-byte path limit).
        tag = hashlib.sha256(str(self.settings.state_dir.resolve()).encode()).hexdigest()[:8]
        return Path(tempfile.gettempdir()) / f"btcpulse-ray-{tag}"

    @property
    def address(self) -> str:
        return self.settings.ray_address or f"127.0.0.1:{self.settings.ray_port}"

    def running(self) -> bool:
        return bool(self.own_pids())

    def dashboard_ready(self) -> bool:
        return http_ok(f"{self.settings.ray_dashboard_url}/api/version")

    def start(self, env: dict[str, str]) -> None:
        """Start the head unless it runs already; ``env`` reaches every worker it starts."""
        if self.running():
            return
        s = self.settings
        ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        ip = node_ip(s)
        cmd = [
            ray_bin, "start", "--head",
            *([f"--node-ip-address={ip}"] if ip else []),
            f"--port={s.ray_port}",
            f"--ray-client-server-port={s.ray_port + 1}",
            f"--dashboard-host={s.bind_host}",
            f"--dashboard-port={s.ray_dashboard_port}",
            f"--dashboard-agent-listen-port={s.ray_dashboard_port + 1}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ]  # fmt: skip
        if s.ray_num_cpus is not None:
            cmd.append(f"--num-cpus={s.ray_num_cpus}")
        log = s.state_dir / "logs" / "ray-start.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                cmd,
                env={**env, **ray_env(s), **ray_serve_env(s)},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed (exit {done.returncode}); see {log}")

    def own_pids(self) -> set[int]:
        marker = str(self.temp_dir)
        table = _proc_table()
        roots = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
        # The Ray client server names neither the temp dir nor a parent of ours (its parent,
        # `ray start`, exits): it is found by the node id the raylet names too.
        node_ids = {m.group(1) for pid in roots for m in _NODE_ID.finditer(table[pid][1])}
        roots |= {
            pid
            for pid, (_, cmd) in table.items()
            if pid != os.getpid() and any(f"--node-id={n}" in cmd for n in node_ids)
        }
        # Add every descendant (workers, agents) of those roots.
        return descendants(roots, table)

    def stop(self, timeout_s: float = 20.0) -> bool:
        pids = self.own_pids()
        if not pids:
            return False
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                pids = self.own_pids()
                if not pids:
                    return True
                time.sleep(0.3)
        return not self.own_pids()
