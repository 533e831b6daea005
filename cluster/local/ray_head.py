"""A single-node Ray head for the local stack, started and stopped by the CLI.

``ray stop`` would stop every Ray on the machine; this module stops only its own head:
the processes that name its temp dir, and everything they started.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.local.process import http_ok
from cluster.settings import BtcpulseSettings


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
        cmd = [
            ray_bin, "start", "--head",
            "--node-ip-address=127.0.0.1",
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
            done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed (exit {done.returncode}); see {log}")

    def own_pids(self) -> set[int]:
        marker = str(self.temp_dir)
        table = _proc_table()
        roots = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
        # Add every descendant (workers, agents) of those roots.
        found = set(roots)
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _) in table.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    changed = True
        return found

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
