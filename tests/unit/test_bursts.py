"""models.bursts: robust z-score, synthetic bursts (start/peak/end, MAD = 0, flat noise, gaps,
idempotence, bounded memory) and the May 2022 Terra/LUNA collapse in the real news."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import numpy as np
import pytest

from models.bursts import (
    MAD_K,
    MEANAD_K,
    BurstDetector,
    Event,
    dedupe_events,
    detect_events,
    event_id,
    keywords_of,
    robust_z,
)
from tests.conftest import shared_file

H = 3600.0
T0 = 1_650_000_000 - 1_650_000_000 % 3600  # an hour boundary


def _feed(
    det: BurstDetector, hour: int, n_key: int, n_other: int = 10, key: str = "alpha", tag: str = ""
) -> None:
    """``n_key`` articles with keyword ``key`` and ``n_other`` background articles in one hour."""
    for i in range(n_key):
        det.observe(T0 + hour * H + i, f"{tag}k{hour}-{i}", -1, "", [], [key], 0.0)
    for i in range(n_other):
        det.observe(T0 + hour * H + 100 + i, f"{tag}o{hour}-{i}", -1, "", [], [f"bg{i % 5}"], 0.0)


def _run(det: BurstDetector, series: list[int], n_other: int = 10) -> list[Event]:
    latest: dict[str, Event] = {}
    for hour, n in enumerate(series):
        _feed(det, hour, n, n_other)
        for ev in det.advance(T0 + (hour + 1) * H):
            latest[ev.id] = ev
    return list(latest.values())


# ---------------------------------------------------------------- robust z


def test_robust_z_is_iglewicz_hoaglin() -> None:
    base = [1, 2, 3, 4, 100]
    z, med = robust_z(10, base, sigma_floor=1e-9)
    assert med == 3
    mad = np.median(np.abs(np.array(base) - 3))  # = 1
    assert z == pytest.approx(MAD_K * (10 - 3) / mad)


def test_robust_z_mad_zero_uses_mean_absolute_deviation() -> None:
    base = [0, 0, 0, 0, 0, 0, 7]  # MAD = 0, MeanAD = 1
    z, med = robust_z(5, base, sigma_floor=1e-9)
    assert med == 0
    assert z == pytest.approx(5 / (MEANAD_K * 1.0))
    # All identical: the floor (Poisson-like for counts) keeps z finite.
    z, _ = robust_z(5, [0] * 10, sigma_floor=1.0, poisson=True)
    assert z == pytest.approx(5.0)
    z, _ = robust_z(13, [4] * 10, sigma_floor=1.0, poisson=True)
    assert z == pytest.approx((13 - 4) / 2.0)


# ---------------------------------------------------------------- synthetic streams


def test_flat_then_spike_gives_one_event_with_start_peak_end() -> None:
    det = BurstDetector(step_s=3600, baseline_windows=24, sentiment=False)
    series = [1] * 30 + [12, 20, 9] + [1] * 10
    events = [e for e in _run(det, series) if e.key == "kw:alpha"]
    assert len(events) == 1
    ev = events[0]
    assert ev.kind == "volume"
    assert ev.start == T0 + 30 * H
    assert ev.peak == T0 + 31 * H
    assert ev.end == T0 + 33 * H  # end of the last burst window (hour 32)
    assert ev.peak_value == 20
    assert ev.baseline == pytest.approx(1.0)  # 1 alpha per 10 other articles x 10 others
    assert ev.score > 6
    assert ev.keywords[0] == "alpha"
    assert ev.label.startswith("alpha")
    assert len(ev.examples) == 5 and all(x.startswith("k3") for x in ev.examples)
    assert ev.id == event_id("volume", "kw:alpha", ev.start)
    # Background keywords never burst.
    assert all(e.key == "kw:alpha" for e in _run(BurstDetector(sentiment=False), series))


def test_mad_zero_baseline_still_detects_and_ignores_small_steps() -> None:
    # alpha exactly 3 per hour: MAD = MeanAD = 0 -> the Poisson floor sqrt(3) is the scale.
    det = BurstDetector(step_s=3600, baseline_windows=24, sentiment=False)
    events = [e for e in _run(det, [3] * 30 + [4, 5, 3, 3]) if e.key == "kw:alpha"]
    assert events == []
    det = BurstDetector(step_s=3600, baseline_windows=24, sentiment=False)
    events = [e for e in _run(det, [3] * 30 + [16] + [3] * 3) if e.key == "kw:alpha"]
    assert len(events) == 1 and events[0].start == T0 + 30 * H and events[0].end == T0 + 31 * H


def test_no_event_on_flat_noise() -> None:
    rng = np.random.default_rng(7)
    det = BurstDetector(step_s=3600, baseline_windows=48, sentiment=False)
    latest: list[Event] = []
    for hour in range(600):
        _feed(det, hour, int(rng.poisson(3)), int(rng.poisson(10)))
        latest += det.advance(T0 + (hour + 1) * H)
    assert latest == []


def test_sparse_start_and_missing_windows() -> None:
    det = BurstDetector(step_s=3600, baseline_windows=24, sentiment=False)
    # A spike in the first hours: no baseline yet, no event.
    assert _run(det, [20, 1, 1]) == []
    # Then 10 hours with no article at all (zeros for alpha, missing totals), then a spike.
    det2 = BurstDetector(step_s=3600, baseline_windows=24, sentiment=False)
    latest: dict[str, Event] = {}
    for hour in range(12):
        _feed(det2, hour, 1)
    _feed(det2, 22, 15)
    for ev in det2.advance(T0 + 23 * H):
        latest[ev.id] = ev
    keys = {e.key for e in latest.values()}
    assert keys == {"kw:alpha"}
    (ev,) = latest.values()
    assert ev.start == T0 + 22 * H and ev.end is None  # still open: hour 23 not closed yet
    closed = det2.advance(T0 + 24 * H)
    assert [e.end for e in closed] == [T0 + 23 * H]


def test_observe_is_idempotent_and_late_articles_dropped() -> None:
    det = BurstDetector(step_s=3600)
    assert det.observe(T0, "a1", 3, "t", ["x"], ["alpha"], 0.1)
    assert not det.observe(T0 + 5, "a1", 3, "t", ["x"], ["alpha"], 0.1)  # same id, same window
    det.advance(T0 + H)
    assert det._keys["kw:alpha"].counts[-1] == 1
    assert det._keys["topic:3"].counts[-1] == 1
    assert not det.observe(T0 + 10, "a1", 3, "t", ["x"], ["alpha"], 0.1)
    assert not det.observe(T0 + 10, "a2", 3, "t", ["x"], ["alpha"], 0.1)
    assert det.late_dropped == 2
    with pytest.raises(ValueError, match="finite"):
        det.observe(float("nan"), "a3", 3, "t", [], [], 0.0)
    with pytest.raises(ValueError, match="article_id"):
        det.observe(T0 + 2 * H, "", 3, "t", [], [], 0.0)
    with pytest.raises(ValueError, match="z_off"):
        BurstDetector(z_on=2, z_off=3)


def test_sentiment_burst_negative() -> None:
    det = BurstDetector(step_s=3600, baseline_windows=24, min_count=5)
    latest: dict[str, Event] = {}
    rng = np.random.default_rng(1)
    for hour in range(40):
        mood = -0.8 if hour == 30 else 0.3
        for i in range(6):
            s = float(np.clip(mood + rng.normal(0, 0.05), -1, 1))
            det.observe(T0 + hour * H + i, f"s{hour}-{i}", 7, "etf, spot", ["etf"], ["etf"], s)
        for ev in det.advance(T0 + (hour + 1) * H):
            latest[ev.id] = ev
    sent = [e for e in latest.values() if e.kind == "sentiment" and e.key == "topic:7"]
    assert len(sent) == 1
    ev = sent[0]
    assert ev.score < -4 and ev.label == "negative: etf, spot"
    assert ev.start == T0 + 30 * H and ev.end == T0 + 31 * H
    assert ev.peak_value == pytest.approx(-0.8, abs=0.1)
    assert not [e for e in latest.values() if e.kind == "volume"]


def test_bounded_keys() -> None:
    det = BurstDetector(step_s=3600, baseline_windows=8, max_keys=50, sentiment=False)
    for hour in range(40):
        for i in range(20):
            det.observe(T0 + hour * H + i, f"{hour}-{i}", -1, "", [], [f"w{hour}-{i}"], 0.0)
        det.advance(T0 + (hour + 1) * H)
        assert det.n_keys <= 50 + 20
    assert det.n_keys <= 50


def test_detect_events_matches_streaming_and_dedupe() -> None:
    rows = []
    for hour, n in enumerate([1] * 30 + [12, 20, 9] + [1] * 5):
        for i in range(n):
            rows.append(
                {
                    "ts": T0 + hour * H + i,
                    "article_id": f"k{hour}-{i}",
                    "sentiment": 0.0,
                    "text": "Terra UST depeg",
                }
            )
        for i in range(10):
            rows.append(
                {
                    "ts": T0 + hour * H + 100 + i,
                    "article_id": f"o{hour}-{i}",
                    "sentiment": 0.0,
                    "keywords": [f"bg{i % 5}"],
                }
            )
    events = detect_events(rows, step_s=3600, baseline_windows=24, sentiment=False)
    keys = {e.key for e in events}
    assert {"kw:terra", "kw:ust", "kw:depeg", "kw:terra ust"} <= keys
    kept = dedupe_events(events)
    assert len(kept) == 1 and kept[0].start == T0 + 30 * H
    with pytest.raises(ValueError, match="time order"):
        detect_events(list(reversed(rows)), step_s=3600)


def test_keywords_of() -> None:
    kws = keywords_of("Bitcoin price: Terra's UST loses its peg as LUNA crashes\\xa0 99% — the BTC market")
    assert kws[:5] == ["terra", "ust", "loses", "peg", "luna"]
    assert "bitcoin" not in kws and "btc" not in kws and "the" not in kws and "99" not in kws
    assert "terra ust" in kws and "luna crashes" in kws
    assert "xa0" not in " ".join(kws)


# ---------------------------------------------------------------- real news


def test_terra_luna_collapse_is_an_event() -> None:
    path = shared_file("crypto_news_2021_2022", "cryptonews.csv")
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh, delimiter=";")):
            ts = datetime.strptime(row["date"], "%d-%m-%Y %H:%M").replace(tzinfo=UTC).timestamp()
            rows.append(
                {"ts": ts, "article_id": str(i), "sentiment": 0.0, "text": f"{row['title']} {row['text']}"}
            )
    rows.sort(key=lambda r: r["ts"])
    # Daily windows: the corpus has ~40 articles a day, too few for hourly bursts.
    events = detect_events(rows, step_s=86400, baseline_windows=28, min_count=6, sentiment=False)
    top = dedupe_events(events)[:10]
    may9 = datetime(2022, 5, 9, tzinfo=UTC).timestamp()
    crash = [e for e in top if {"luna", "terra"} & set(e.keywords)]
    assert crash, [(e.label, e.start) for e in top]
    assert any(abs(e.start - may9) <= 3 * 86400 for e in crash), [(e.label, e.start) for e in crash]
    celsius = [e for e in top if "celsius" in e.keywords]
    assert celsius and datetime.fromtimestamp(celsius[0].start, UTC).date().isoformat() == "2022-06-13"
