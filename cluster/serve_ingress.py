"""How HTTP reaches the API: Ray Serve's direct ingress, or its proxy.

With direct ingress (``BTCPULSE_SERVE_DIRECT_INGRESS``, on by default) the ingress replica runs
its own HTTP server and answers on ``api_port`` itself: a request costs no hop through Serve's
proxy actor (``bench/NOTES.md``: 1.7-1.8x the search QPS with 8 clients, p99 ~0.6x). Serve's
proxy still runs, on ``proxy_port``, as the way in through any node.

Serve reads its switches from the environment of the cluster's processes (the controller and
the replica inherit the raylet's), so they go on ``ray start``: :func:`ray_serve_env`. The
replica's port comes from a range Serve allocates per node; a range of the one API port, with
no quarantine on a released port, hands it to each restarted replica in turn. The replica is
pinned to the head node, so the API's address stays the head's.

On a Ray cluster started without that environment, :func:`direct_ingress_on` says so and the
proxy serves ``api_port`` as before.
"""

from __future__ import annotations

from typing import Any

from cluster.settings import BtcpulseSettings

ENABLE = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
MIN_PORT = "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"
MAX_PORT = "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"
# A released port is kept from reuse this long (for a load balancer's deregistration); with
# one port in the range, the restarted replica would wait for it.
QUARANTINE = "RAY_SERVE_PORT_QUARANTINE_S"
# A stopping ingress replica stays open this long for load balancers to deregister it (Serve's
# default 30 s); nothing here registers it, so it only delays `btcpulse down` and redeploys.
DRAINING = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


def ray_serve_env(settings: BtcpulseSettings) -> dict[str, str]:
    """What ``ray start`` needs in its environment for the replica to serve ``api_port``."""
    if not settings.serve_direct_ingress:
        return {}
    return {
        ENABLE: "1",
        # The range's upper end is exclusive: the API port alone.
        MIN_PORT: str(settings.api_port),
        MAX_PORT: str(settings.api_port + 1),
        QUARANTINE: "0",
        DRAINING: "1",
    }


def _head_env(names: tuple[str, ...]) -> dict[str, str | None]:
    import os

    return {name: os.environ.get(name) for name in names}


def direct_ingress_on(settings: BtcpulseSettings) -> bool:
    """Whether the connected cluster's head runs Serve with direct ingress on ``api_port``.

    Asked of the head itself (a zero-CPU task there reads the environment its raylet gave it),
    since that is where Serve's controller and the pinned replica run."""
    if not settings.serve_direct_ingress:
        return False
    import ray

    from actors.common import on_head

    probe = ray.remote(num_cpus=0, resources=on_head())(_head_env)
    return serves_api_port(settings, ray.get(probe.remote((ENABLE, MIN_PORT, MAX_PORT)), timeout=120))


def serves_api_port(settings: BtcpulseSettings, head_env: dict[str, str | None]) -> bool:
    """Whether a head with ``head_env`` has its ingress replica take ``api_port``: direct
    ingress on, with a range of that port alone (a cluster started for another API port, or
    with Serve's default range, would put the replica elsewhere)."""
    want = ray_serve_env(settings)
    return bool(want) and all(head_env.get(k) == want[k] for k in (ENABLE, MIN_PORT, MAX_PORT))


def serve_options(settings: BtcpulseSettings, direct: bool) -> dict[str, Any]:
    """``serve.start``'s arguments: the proxy on ``api_port``, or on ``proxy_port`` beside the replica."""
    return {
        "proxy_location": settings.serve_proxy_location,
        "http_options": {
            "host": settings.bind_host,
            "port": settings.proxy_port if direct else settings.api_port,
        },
    }
