"""How HTTP reaches the API (cluster.serve_ingress): Serve's switches for `ray start`, the check
of a head's environment, and serve.start's options."""

from __future__ import annotations

import pytest

from cluster.serve_ingress import (
    DRAINING,
    ENABLE,
    MAX_PORT,
    MIN_PORT,
    QUARANTINE,
    direct_ingress_on,
    ray_serve_env,
    serve_options,
    serves_api_port,
)
from cluster.settings import BtcpulseSettings


def _settings(**kw: object) -> BtcpulseSettings:
    return BtcpulseSettings(**{"api_port": 18123, "serve_direct_ingress": True, **kw})  # type: ignore[arg-type]


def test_the_replica_is_given_the_api_port_alone() -> None:
    env = ray_serve_env(_settings())
    assert env[ENABLE] == "1"
    # Serve allocates from range(MIN, MAX): the API port and nothing else.
    assert list(range(int(env[MIN_PORT]), int(env[MAX_PORT]))) == [18123]
    # A restarted replica takes the port at once; a stopping one does not wait for a balancer.
    assert env[QUARANTINE] == "0"
    assert float(env[DRAINING]) <= 5


def test_off_means_no_switches_and_the_proxy_on_the_api_port() -> None:
    s = _settings(serve_direct_ingress=False)
    assert ray_serve_env(s) == {}
    assert not serves_api_port(s, {ENABLE: "1", MIN_PORT: "18123", MAX_PORT: "18124"})
    assert not direct_ingress_on(s)  # decided without asking any cluster
    assert serve_options(s, direct=False)["http_options"]["port"] == 18123


def test_a_head_started_with_the_switches_serves_the_api_port() -> None:
    s = _settings()
    assert serves_api_port(s, dict(ray_serve_env(s)))


@pytest.mark.parametrize(
    "head_env",
    [
        {},  # a cluster started without them
        {ENABLE: "0", MIN_PORT: "18123", MAX_PORT: "18124"},
        {ENABLE: "1"},  # Serve's default range: the replica would get a port of 30000-31000
        {ENABLE: "1", MIN_PORT: "8000", MAX_PORT: "8001"},  # started for another API port
        {ENABLE: "1", MIN_PORT: "18123", MAX_PORT: "18130"},  # a range: maybe not the API port
    ],
)
def test_any_other_head_leaves_the_api_port_to_the_proxy(head_env: dict[str, str | None]) -> None:
    assert not serves_api_port(_settings(), head_env)


def test_with_direct_ingress_the_proxy_moves_beside_the_replica() -> None:
    s = _settings()
    assert serve_options(s, direct=True)["http_options"] == {"host": s.bind_host, "port": 18173}
    assert serve_options(s, direct=False)["http_options"]["port"] == 18123
    assert _settings(serve_proxy_port=19000).proxy_port == 19000
    assert serve_options(s, direct=True)["proxy_location"] == s.serve_proxy_location
