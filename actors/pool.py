"""The analysis pool: as many analysis actors as news.raw's backlog needs, within bounds.

    every pool_interval_s:  backlog of the "analysis" subscription (Pulsar's admin API, summed
                            over the partitions) -> wanted = ceil(backlog / per_actor), kept in
                            [analysis_actors, analysis_max_actors]
    wanted > size           start actors now (each asks the cluster for analysis_num_cpus,
                            analysis_num_gpus and analysis_resources, on the node that fits
                            with the fewest members, :func:`place`; where none fits, Ray's
                            autoscaler adds a node of a type that has them)
    wanted < size           for pool_scale_down_after_s in a row: stop one actor (it finishes
                            its batch; what it had received and not acknowledged goes back to
                            the others: Key_Shared hands its keys over), then the next

Members are named ``analysis-<i>`` (detached, restarted by Ray when they die, as every stage);
a restarted pool adopts the ones that exist. The decision is :class:`ScalePolicy`, pure.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.common import ACTOR_OPTIONS, named_actors, supervised_thread
from cluster.settings import BtcpulseSettings

log = logging.getLogger(__name__)

POOL = "analysis-pool"
MEMBER_PREFIX = "analysis-"
SUBSCRIPTION = "analysis"


def member_name(index: int) -> str:
    return f"{MEMBER_PREFIX}{index}"


@dataclass
class ScalePolicy:
    """How many analysis actors the backlog wants; scales up at once, down one at a time and
    only after the backlog has stayed low for ``down_after_s``."""

    minimum: int
    maximum: int
    per_actor: int
    down_after_s: float
    _low_since: float | None = field(default=None, repr=False)

    def wanted(self, backlog: int) -> int:
        return min(self.maximum, max(self.minimum, math.ceil(backlog / self.per_actor)))

    def decide(self, now: float, backlog: int | None, size: int) -> int:
        """The size to have now, given the backlog (``None``: unknown) and the current size."""
        if size < self.minimum:
            return self.minimum
        if backlog is None:  # the broker does not answer: change nothing
            self._low_since = None
            return min(size, self.maximum)
        want = self.wanted(backlog)
        if want >= size:
            self._low_since = None
            return want
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since >= self.down_after_s:
            self._low_since = now  # the next step down waits as long again
            return size - 1
        return size


def place(
    nodes: Mapping[str, Mapping[str, float]], members_on: Iterable[str], need: Mapping[str, float]
) -> str | None:
    """The node for a new member: of the nodes whose resources (totals) fit ``need``, the one
    with the fewest members (``members_on``: a member's node, one entry per member); on a tie the
    one with the most CPUs, then the lowest id. ``None`` where fewer than two nodes fit: Ray's
    own placement then (and where none fits, the autoscaler adds a node)."""
    fit = [n for n, res in nodes.items() if all(res.get(k, 0.0) >= v for k, v in need.items() if v > 0)]
    if len(fit) < 2:
        return None
    count = dict.fromkeys(fit, 0)
    for node in members_on:
        if node in count:
            count[node] += 1
    return min(fit, key=lambda n: (count[n], -nodes[n].get("CPU", 0.0), n))


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class AnalysisPool:
    def __init__(self, settings: BtcpulseSettings) -> None:
        from serve.read import TOPIC_MODEL, VECTOR_STORE

        self._settings = settings
        self._ns = settings.ray_namespace
        self._store = ray.get_actor(VECTOR_STORE, namespace=self._ns)
        self._topic_model = ray.get_actor(TOPIC_MODEL, namespace=self._ns)
        self._policy = ScalePolicy(
            minimum=settings.analysis_actors,
            maximum=settings.pool_max,
            per_actor=settings.pool_backlog_per_actor,
            down_after_s=settings.pool_scale_down_after_s,
        )
        self._lock = threading.Lock()  # members change under it
        self._members: dict[int, Any] = self._adopt()
        self._placed: dict[int, str] = {}  # the node each member was started on, by the pool
        self._backlog: int | None = None
        self._events: deque[dict[str, Any]] = deque(maxlen=50)
        self._stop = threading.Event()
        self._scale_to(settings.analysis_actors, "minimum")
        self._thread = supervised_thread(self._loop, "analysis-pool")

    # -- members -------------------------------------------------------------------------
    def _adopt(self) -> dict[int, Any]:
        """The members that exist already (a restarted pool, or a second `btcpulse up`)."""
        found: dict[int, Any] = {}
        for name in named_actors(self._ns):
            if not name.startswith(MEMBER_PREFIX):
                continue
            suffix = name[len(MEMBER_PREFIX) :]
            if suffix.isdigit():
                found[int(suffix)] = ray.get_actor(name, namespace=self._ns)
        return found

    def _member_nodes(self) -> list[str]:
        """Each member's node: where it runs (it says), or, while it is still starting, where
        the pool asked for it."""
        asked = {index: handle.node_id.remote() for index, handle in self._members.items()}
        ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=5)
        out: list[str] = []
        for index, ref in asked.items():
            node = self._placed.get(index)  # still loading its models, or restarting
            if ref in ready:
                try:
                    node = ray.get(ref, timeout=0)
                except Exception as exc:  # it died: Ray restarts it, maybe elsewhere
                    log.info("%s: no node (%s)", member_name(index), exc)
            if node is not None:
                out.append(node)
        return out

    def _start_member(self, index: int) -> Any:
        from actors.analysis import AnalysisConsumer, model_env

        s = self._settings
        need = {"CPU": s.analysis_num_cpus, "GPU": s.analysis_num_gpus, **(s.analysis_resources or {})}
        nodes = {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")}
        node = place(nodes, self._member_nodes() if len(nodes) > 1 else [], need)
        options: dict[str, Any] = {
            "name": member_name(index),
            "get_if_exists": True,
            "num_cpus": s.analysis_num_cpus,
            "num_gpus": s.analysis_num_gpus,
            "runtime_env": {"env_vars": model_env()},
        }
        if s.analysis_resources:
            options["resources"] = dict(s.analysis_resources)
        if node is None:
            options["scheduling_strategy"] = "SPREAD"
        else:
            # On the node with the fewest members, so one node's loss takes as few as it can.
            # Ray's SPREAD alone is a round robin over every placement of the cluster, and put
            # two members on one node of two. Soft: where that node is gone or full it goes
            # elsewhere, and a member restarted after its node died goes to another.
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node, soft=True, _spill_on_unavailable=True
            )
            self._placed[index] = node
        return AnalysisConsumer.options(**options).remote(s, self._store, self._topic_model)  # type: ignore[attr-defined]

    def _stop_member(self, index: int) -> None:
        handle = self._members.pop(index)
        self._placed.pop(index, None)
        try:
            ray.get(handle.stop.remote(), timeout=60)
        except Exception as exc:  # it is going anyway: its messages are redelivered to the others
            log.warning("%s: no clean stop (%s)", member_name(index), exc)
        ray.kill(handle, no_restart=True)

    def _scale_to(self, size: int, why: str) -> None:
        with self._lock:
            before = len(self._members)
            while len(self._members) < size:
                index = next(i for i in range(len(self._members) + 1) if i not in self._members)
                self._members[index] = self._start_member(index)
            while len(self._members) > size:
                self._stop_member(max(self._members))
            if len(self._members) != before:
                event = {"at": time.time(), "from": before, "to": len(self._members), "why": why,
                         "backlog": self._backlog}  # fmt: skip
                self._events.append(event)
                log.info("analysis pool %d -> %d (%s, backlog %s)", before, event["to"], why, self._backlog)

    # -- the loop --------------------------------------------------------------------------
    def _read_backlog(self) -> int | None:
        from cluster.pulsar_admin import subscription_backlog
        from cluster.topics import Topics

        topic = Topics.from_settings(self._settings).news_raw.name
        b = subscription_backlog(self._settings, topic, SUBSCRIPTION)
        return None if b is None else b.backlog

    def _loop(self) -> None:
        while not self._stop.wait(self._settings.pool_interval_s):
            self._backlog = self._read_backlog()
            size = len(self._members)
            target = self._policy.decide(time.monotonic(), self._backlog, size)
            if target != size:
                self._scale_to(target, "backlog" if target > size else "idle")

    # -- control -------------------------------------------------------------------------
    def ready(self, timeout_s: float = 600) -> dict[str, Any]:
        """Wait until the members that exist have finished ``__init__``; their handles by name."""
        with self._lock:
            members = dict(self._members)
        ray.get([h.stats.remote() for h in members.values()], timeout=timeout_s)
        return {member_name(i): h for i, h in sorted(members.items())}

    def members(self) -> list[str]:
        with self._lock:
            return [member_name(i) for i in sorted(self._members)]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            size = len(self._members)
        return {
            "size": size,
            "min": self._policy.minimum,
            "max": self._policy.maximum,
            "backlog": self._backlog if self._backlog is not None else -1,
            "scale_events": len(self._events),
        }

    def events(self) -> list[dict[str, Any]]:
        """The last scale changes, oldest first."""
        return list(self._events)

    def stop(self) -> None:
        """Stop scaling (the members stay: `btcpulse down` stops them next)."""
        self._stop.set()
        self._thread.join(timeout=30)
