"""The local stack's bind addresses, as configured (the sockets themselves are checked on the
running stack by tests/integration/test_listeners.py)."""

from __future__ import annotations

from pathlib import Path

from cluster.local.pulsar import PulsarStandalone, _loopback_interface
from cluster.local.ray_head import AUTH_MODE_ENV, SINGLE_NODE_ENV, node_ip, ray_env
from cluster.settings import BtcpulseSettings


def _settings(tmp_path: Path, **kw: object) -> BtcpulseSettings:
    return BtcpulseSettings(state_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_loopback_head_keeps_ray_on_127_0_0_1(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert node_ip(s) == "127.0.0.1"
    assert ray_env(s) == {SINGLE_NODE_ENV: "0", AUTH_MODE_ENV: "disabled"}
    assert ray_env(_settings(tmp_path, bind_host="localhost"))[SINGLE_NODE_ENV] == "0"


def test_other_bind_hosts_leave_ray_alone(tmp_path: Path) -> None:
    lan = _settings(tmp_path, bind_host="10.1.2.3")
    assert node_ip(lan) == "10.1.2.3" and ray_env(lan) == {}
    wild = _settings(tmp_path, bind_host="0.0.0.0")
    assert node_ip(wild) is None and ray_env(wild) == {}
    external = _settings(tmp_path, ray_address="10.0.0.5:6379")
    assert ray_env(external) == {}  # someone else's cluster: its drivers are configured there


def _conf(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_pulsar_bookie_on_loopback_and_its_port(tmp_path: Path) -> None:
    conf = _conf(PulsarStandalone(_settings(tmp_path, pulsar_bookie_port=13999)).write_config())
    assert conf["bindAddress"] == "127.0.0.1"
    assert conf["advertisedAddress"] == "127.0.0.1"
    assert conf["allowEphemeralPorts"] == "true"  # so that --bookkeeper-port is used
    if _loopback_interface() is not None:
        assert conf["listeningInterface"] == _loopback_interface()
        assert conf["allowLoopback"] == "true"
    wide = _conf(PulsarStandalone(_settings(tmp_path / "w", bind_host="0.0.0.0")).write_config())
    assert "listeningInterface" not in wide
