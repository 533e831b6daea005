"""The analysis pool's scaling decision (actors.pool.ScalePolicy) and its placement of members
(actors.pool.place), without Ray."""

from __future__ import annotations

import pytest

from actors.pool import ScalePolicy, place
from cluster.settings import BtcpulseSettings


def policy(**kw: float) -> ScalePolicy:
    args = {"minimum": 1, "maximum": 4, "per_actor": 500, "down_after_s": 60.0, **kw}
    return ScalePolicy(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backlog", "wanted"), [(0, 1), (1, 1), (500, 1), (501, 2), (1500, 3), (1501, 4), (10**6, 4)]
)
def test_wanted_is_one_actor_per_share_of_the_backlog_within_bounds(backlog: int, wanted: int) -> None:
    assert policy().wanted(backlog) == wanted


def test_scales_up_at_once_to_what_the_backlog_wants() -> None:
    p = policy()
    assert p.decide(0.0, 1800, 1) == 4
    assert p.decide(1.0, 900, 2) == 2


def test_scales_down_one_step_per_quiet_period() -> None:
    p = policy(down_after_s=60.0)
    assert p.decide(0.0, 0, 4) == 4  # low from now on
    assert p.decide(59.0, 0, 4) == 4
    assert p.decide(60.0, 0, 4) == 3
    assert p.decide(61.0, 0, 3) == 3  # the next step waits a whole period again
    assert p.decide(120.0, 0, 3) == 2


def test_a_busy_moment_restarts_the_quiet_period() -> None:
    p = policy(down_after_s=60.0)
    assert p.decide(0.0, 0, 3) == 3
    assert p.decide(50.0, 1200, 3) == 3  # wanted == size: no longer low
    assert p.decide(55.0, 0, 3) == 3
    assert p.decide(100.0, 0, 3) == 3  # 45 s low, not 60
    assert p.decide(115.0, 0, 3) == 2


def test_an_unknown_backlog_changes_nothing_but_the_bounds() -> None:
    p = policy(minimum=2, maximum=3)
    assert p.decide(0.0, None, 3) == 3
    assert p.decide(1000.0, None, 3) == 3
    assert p.decide(1001.0, None, 1) == 2  # below the minimum: up to it
    assert p.decide(1002.0, None, 5) == 3  # above the maximum (settings lowered): down to it


def test_a_fixed_pool_never_moves() -> None:
    p = policy(minimum=2, maximum=2)
    assert [p.decide(t, b, 2) for t, b in ((0, 0), (100, 10**6), (200, 0), (400, 0))] == [2, 2, 2, 2]


def test_pool_bounds_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCPULSE_ANALYSIS_ACTORS", "2")
    assert BtcpulseSettings().pool_max == 2  # no maximum: a fixed pool
    monkeypatch.setenv("BTCPULSE_ANALYSIS_MAX_ACTORS", "6")
    monkeypatch.setenv("BTCPULSE_ANALYSIS_RESOURCES", '{"analysis_node": 1}')
    s = BtcpulseSettings()
    assert (s.analysis_actors, s.pool_max, s.analysis_resources) == (2, 6, {"analysis_node": 1.0})
    monkeypatch.setenv("BTCPULSE_ANALYSIS_MAX_ACTORS", "1")
    assert BtcpulseSettings().pool_max == 2  # never below the minimum
    monkeypatch.setenv("BTCPULSE_ANALYSIS_MAX_ACTORS", "0")
    with pytest.raises(ValueError, match="must be >= 1"):
        BtcpulseSettings()
    monkeypatch.delenv("BTCPULSE_ANALYSIS_MAX_ACTORS")
    monkeypatch.setenv("BTCPULSE_SERVE_PROXY_LOCATION", "Everywhere")
    with pytest.raises(ValueError, match="HeadOnly"):
        BtcpulseSettings()


HEAD = {"CPU": 0.0, "memory": 8e9}
WORKER = {"CPU": 2.0, "memory": 8e9}
ONE_CPU = {"CPU": 1.0, "GPU": 0.0}


def test_a_new_member_goes_to_the_fitting_node_with_the_fewest_members() -> None:
    nodes = {"head": HEAD, "a": WORKER, "b": WORKER}
    assert place(nodes, [], ONE_CPU) == "a"  # a tie: the lowest id
    assert place(nodes, ["a"], ONE_CPU) == "b"
    assert place(nodes, ["b"], ONE_CPU) == "a"
    assert place(nodes, ["a", "b", "a"], ONE_CPU) == "b"
    assert place(nodes, ["a", "b"], ONE_CPU) == "a"


def test_ties_go_to_the_node_with_the_most_cpus() -> None:
    nodes = {"a": WORKER, "b": {"CPU": 8.0}, "c": WORKER}
    assert place(nodes, ["a", "c"], ONE_CPU) == "b"
    assert place(nodes, ["b"], ONE_CPU) == "a"


def test_nodes_without_the_resources_are_left_out() -> None:
    nodes = {"cpu": {"CPU": 16.0}, "gpu-1": {"CPU": 4.0, "GPU": 1.0}, "gpu-2": {"CPU": 4.0, "GPU": 1.0}}
    assert place(nodes, ["gpu-1"], {"CPU": 1.0, "GPU": 1.0}) == "gpu-2"
    custom = {"x": {"CPU": 2.0, "analysis": 1.0}, "y": {"CPU": 2.0}}
    assert place(custom, [], {"CPU": 1.0, "analysis": 1.0}) is None  # one node fits: Ray places it


def test_one_node_or_none_that_fits_leaves_the_placement_to_ray() -> None:
    assert place({"only": WORKER}, [], ONE_CPU) is None
    assert place({"head": HEAD, "a": WORKER}, ["a"], ONE_CPU) is None
    assert place({"head": HEAD}, [], ONE_CPU) is None  # none fits: the autoscaler adds a node
    assert place({}, [], ONE_CPU) is None


def test_members_on_nodes_that_are_gone_do_not_count() -> None:
    assert place({"a": WORKER, "b": WORKER}, ["dead", "dead", "b"], ONE_CPU) == "a"
