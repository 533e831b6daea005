"""Every TCP socket the test stack's processes listen on (Ray's GCS, raylet, object manager,
workers, dashboard and its agent, metrics exporters, runtime-env agent, client server; the
Serve proxy and replica; Pulsar standalone's broker, web service and bookie) is on a loopback
address, as the default ``bind_host`` (127.0.0.1) asks; and the HTTP guards answer through
the Serve proxy as they do in-process.

Sockets are found without any tool: /proc/net/tcp and /proc/net/tcp6 list the listening
sockets with their inodes, and /proc/<pid>/fd of the stack's processes (the Ray head's own
processes and their descendants, the Pulsar JVM) maps them to a process."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
# The one listener that cannot be moved: each Serve replica's inter-deployment gRPC server,
# which Ray Serve 2.60 binds to "[::]:0" in code (ray/serve/_private/replica.py,
# _on_initialized); no flag or variable changes it. See the README's Security section.
UNMOVABLE = ("ray::ServeRepli", "::")  # process name (as /proc/<pid>/comm cuts it), address


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # the kernel prints each 32-bit word in host (little-endian) order
    fixed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(fixed)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket in this network namespace."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != LISTEN:
                continue
            host, port = local.split(":")
            found[inode] = (str(_address(host)), int(port, 16))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _descendants(roots: set[int]) -> set[int]:
    from cluster.local.ray_head import descendants

    return descendants(roots)


def stack_listeners(stack) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) for each listening socket of the stack."""
    from cluster.local.pulsar import PulsarStandalone
    from cluster.local.ray_head import RayHead

    settings = stack.settings().model_copy(update={"state_dir": stack.state_dir.resolve()})
    pids = RayHead(settings).own_pids()
    pulsar = PulsarStandalone(settings).pid()
    assert pulsar is not None, "the stack's Pulsar is not running"
    pids |= _descendants({pulsar})
    sockets = listening_sockets()
    out = []
    for pid in sorted(pids):
        for inode in socket_inodes(pid):
            if inode in sockets:
                host, port = sockets[inode]
                out.append((pid, _name(pid), host, port))
    return sorted(set(out))


def test_the_stack_listens_on_loopback_only(stack) -> None:
    stack.wait_for("healthz", lambda: stack.get("/healthz").status_code == 200, timeout=120)
    found = stack_listeners(stack)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "listeners.tsv").write_text(
        "pid\tprocess\taddress\tport\n" + "".join(f"{p}\t{n}\t{h}\t{port}\n" for p, n, h, port in found)
    )
    ports = {port for *_, port in found}
    env = stack.env
    # the mapping works: the well-known ports are among what it found
    for name in (
        "BTCPULSE_API_PORT",
        "BTCPULSE_RAY_PORT",
        "BTCPULSE_RAY_DASHBOARD_PORT",
        "BTCPULSE_PULSAR_BROKER_PORT",
        "BTCPULSE_PULSAR_WEB_PORT",
        "BTCPULSE_PULSAR_BOOKIE_PORT",
    ):
        assert int(env[name]) in ports, f"{name} ({env[name]}) not among the stack's listeners: {found}"
    assert int(env["BTCPULSE_RAY_PORT"]) + 1 in ports  # the Ray client server
    names = {n for _, n, _, _ in found}
    assert {"gcs_server", "raylet", "java"} <= names, names
    exposed = [f for f in found if not is_loopback(f[2])]
    unmovable = [f for f in exposed if (f[1], f[2]) == UNMOVABLE]
    replicas = {pid for pid, name, _, _ in found if name == UNMOVABLE[0]}
    assert len(unmovable) <= len(replicas), unmovable  # one per replica, no more
    rest = [f for f in exposed if f not in unmovable]
    assert not rest, f"listening beyond loopback: {rest}"


def test_nothing_answers_on_the_machines_own_address(stack) -> None:
    """The same, from outside: the well-known ports refuse a connection to the routable address."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
        own = probe.getsockname()[0]
        probe.close()
    except OSError:
        pytest.skip("no routable address on this machine")
    if is_loopback(own):
        pytest.skip("no routable address on this machine")
    for name in ("BTCPULSE_API_PORT", "BTCPULSE_RAY_PORT", "BTCPULSE_PULSAR_BROKER_PORT"):
        port = int(stack.env[name])
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((own, port)) != 0, f"{name} {port} answers on {own}"


# --- the HTTP guards, through the Serve proxy ----------------------------------------------------------


def test_limits_and_cors_through_the_proxy(stack) -> None:
    api = stack.api
    big = httpx.request("GET", f"{api}/api/topics", content=b"x" * (64 * 1024 + 1), timeout=30)
    assert big.status_code == 413, big.text

    def chunks():
        for _ in range(100):
            yield b"y" * 1024

    chunked = httpx.request("GET", f"{api}/api/topics", content=chunks(), timeout=30)
    assert chunked.status_code == 413, chunked.text
    long_query = httpx.get(f"{api}/api/news", params={"pad": "p" * 9000}, timeout=30)
    assert long_query.status_code == 414
    assert long_query.json()["detail"].startswith("query string longer than")
    too_long_q = httpx.get(f"{api}/api/search", params={"q": "x" * 501}, timeout=30)
    assert too_long_q.status_code == 422
    r = httpx.get(f"{api}/api/topics", headers={"Origin": "http://elsewhere.example"}, timeout=30)
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_query_strings_stay_out_of_the_logs(stack) -> None:
    """A ?token= (here on a stack without one: the app ignores it) reaches no log file: Serve's
    proxy and replica log the route, not the query string."""
    import time
    import uuid

    from cluster.local.ray_head import RayHead

    marker = f"tok{uuid.uuid4().hex}"
    assert stack.get("/api/topics", token=marker).status_code == 200
    assert stack.get(f"/api/news/{uuid.uuid4()}", token=marker).status_code == 404
    time.sleep(3)  # log lines are flushed asynchronously
    settings = stack.settings().model_copy(update={"state_dir": stack.state_dir.resolve()})
    roots = [RayHead(settings).temp_dir, stack.state_dir]
    logs = [
        p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")
    ]
    assert logs
    seen = [str(p) for p in logs if marker.encode() in p.read_bytes()]
    assert not seen, seen
