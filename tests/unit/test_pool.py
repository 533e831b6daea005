"""The analysis pool's scaling decision (actors.pool.ScalePolicy), without Ray."""

from __future__ import annotations

import pytest

from actors.pool import ScalePolicy
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
