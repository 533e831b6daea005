"""Volume and sentiment burst ("event") detection per topic and keyword.

Method: the **robust (modified) z-score of Iglewicz & Hoaglin (1993)** against a moving
baseline. Time is cut into fixed windows of ``step_s`` seconds. For every key (``"topic:<id>"``
and ``"kw:<keyword>"``) and every closed window:

* volume: ``x`` = number of articles in the window; the baseline is the key's counts over the
  previous ``baseline_windows`` windows (windows without articles for the key count as 0), by
  default (``normalize=True``) taken relative to the number of *other* articles in each window
  and rescaled by the other articles of the current window, so that a feed's coverage change, a
  quiet weekend or a busy news day is not read as a burst of every key;
* sentiment: ``x`` = mean article sentiment in the window (only when it holds at least
  ``min_count`` articles); the baseline is the key's window means over the previous
  ``baseline_windows`` windows that had articles (windows without articles are missing, not 0).

``z = 0.6745 * (x - median) / MAD`` with ``MAD = median(|b_i - median|)``, i.e.
``z = (x - median) / sigma`` with ``sigma = MAD / 0.6745``. When ``MAD = 0`` (more than half the
baseline identical, typically all zeros for a rare keyword) ``sigma = 1.253314 * MeanAD``
(the mean absolute deviation fallback used with the modified z-score), and ``sigma`` is never
below a floor (``sigma_floor`` articles for volume, ``sentiment_sigma_floor`` for sentiment) so
that a key that has never been seen needs a real number of articles to burst; for counts the
floor grows like a Poisson standard deviation, ``sigma_floor * sqrt(median)``, which keeps
frequent generic words from bursting on ordinary day-to-day variation.

An event opens when ``z >= z_on`` and the window holds ``>= min_count`` articles (for
sentiment: ``|z| >= z_on``); while it is open the baseline is frozen at its opening value (the
burst must not raise its own baseline), and it closes at the first window with ``z < z_off``
(sentiment: ``|z| < z_off``, the sign flips, or too few articles). ``start`` is the first burst
window's start, ``peak`` the start of the window with the largest z, ``end`` the end of the last
burst window (``None`` while open). Nothing is detected until ``min_baseline`` windows have
been seen (the sparse start); a topic key's history starts when the topic was first seen.

Tuning (replay of the 7,524 CryptoNews/CoinTelegraph/CryptoPotato items of 2021-10..2022-07,
~40 articles a day): daily windows (``step_s=86400``) with ``baseline_windows=28``,
``min_count=6``, ``z_on=6``, ``z_off=2``. Hourly windows hold ~1.7 articles on that corpus and
found nothing; ``z_on=5`` or ``min_count=5`` let single generic words ("launch", "high",
"government") into the top ten; a 14-day baseline split the Terra collapse into several events.
With these values 8 of the top 10 (after :func:`dedupe_events`) are real happenings (Terra/LUNA,
the invasion of Ukraine, Celsius, the rouble/SWIFT sanctions, Babel Finance, the Terra lawsuits,
WEF Davos, OpenSea adding Solana) and 2 are generic-word days ("firm", "fund"). The live
defaults keep ``z_on=6``/``min_count=5`` and hourly windows; pick ``step_s`` so a window holds
tens of articles.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Scale factor of the modified z-score (the 0.75 quantile of the standard normal).
MAD_K = 0.6745
#: sigma from the mean absolute deviation when MAD = 0 (sqrt(pi/2)).
MEANAD_K = 1.253314

_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*")
_ESCAPES = re.compile(r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\[rnt]")

#: Words that are in nearly every crypto headline: never keyword keys.
_DOMAIN_STOP = frozenset(
    {
        "bitcoin",
        "bitcoins",
        "btc",
        "crypto",
        "cryptos",
        "cryptocurrency",
        "cryptocurrencies",
        "price",
        "prices",
        "market",
        "markets",
        "says",
        "said",
        "new",
        "just",
        "today",
        "week",
        "day",
        "year",
        "usd",
        "coin",
        "coins",
        "token",
        "tokens",
        "com",
        "digest",
        "bite-sized",
        "cryptoasset",
        "blockchain-related",
    }
)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | _DOMAIN_STOP


_STOP: frozenset[str] | None = None


def keywords_of(text: str, bigrams: bool = True) -> list[str]:
    """Keyword keys of a text: lower-case tokens (starting with a letter, >= 3 characters,
    English and crypto-generic stop words removed) and, when ``bigrams``, pairs of consecutive
    kept tokens. Unique, in first-occurrence order."""
    global _STOP
    if _STOP is None:
        _STOP = _stop_words()
    toks = [t.strip("'") for t in _TOKEN.findall(_ESCAPES.sub(" ", text).lower())]
    toks = [t.removesuffix("'s") for t in toks]
    kept = [t for t in toks if len(t) >= 3 and t not in _STOP]
    out = list(dict.fromkeys(kept))
    if bigrams:
        out.extend(dict.fromkeys(f"{a} {b}" for a, b in itertools.pairwise(kept) if a != b))
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Event:
    """A burst of volume or sentiment for one key.

    Attributes:
        id: Deterministic: a hash of ``kind``, ``key`` and ``start`` (consumers upsert by it).
        kind: ``"volume"`` or ``"sentiment"``.
        key: ``"topic:<id>"`` or ``"kw:<keyword>"``.
        label: Readable label (the topic label, or the keyword with its co-occurring keywords;
            sentiment events are prefixed ``"negative: "`` / ``"positive: "``).
        keywords: Most frequent keywords of the event's articles (the key's keyword first).
        start: Unix seconds, start of the first burst window.
        peak: Unix seconds, start of the window with the highest score.
        end: Unix seconds, end of the last burst window; ``None`` while the event is open.
        peak_value: Articles (volume) or mean sentiment (sentiment) in the peak window.
        baseline: Baseline median the event is measured against.
        score: Robust z at the peak (signed for sentiment).
        examples: Up to 5 article ids, those sharing most of the event's keywords first.
    """

    id: str
    kind: str
    key: str
    label: str
    keywords: list[str]
    start: float
    peak: float
    end: float | None
    peak_value: float
    baseline: float
    score: float
    examples: list[str]


def event_id(kind: str, key: str, start: float) -> str:
    """Deterministic event id: the first 16 hex digits of sha1(kind|key|start)."""
    raw = f"{kind}|{key}|{int(start)}".encode()
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:16]


def robust_z(
    x: float, baseline: Iterable[float], sigma_floor: float, poisson: bool = False
) -> tuple[float, float]:
    """Modified z-score of ``x`` against ``baseline`` (see the module docstring).

    ``sigma`` is at least ``sigma_floor``, or with ``poisson`` (counts) at least
    ``sigma_floor * sqrt(max(median, 1))``: a count is at least Poisson-noisy, so a word that
    usually appears 4 times a window needs more than a MAD of 1 to burst.

    Returns:
        ``(z, median)``.
    """
    b = np.asarray(list(baseline), dtype=np.float64)
    med = float(np.median(b))
    dev = np.abs(b - med)
    mad = float(np.median(dev))
    sigma = mad / MAD_K if mad > 0 else MEANAD_K * float(dev.mean())
    sigma = max(sigma, sigma_floor * math.sqrt(max(med, 1.0)) if poisson else sigma_floor)
    return (x - med) / sigma, med


@dataclass
class _Article:
    id: str
    ts: float
    keywords: list[str]
    sentiment: float


@dataclass
class _Open:
    """An open event: frozen baseline, running peak, its articles (capped)."""

    kind: str
    start_w: int
    med: float
    base: list[float]
    sign: int
    peak_w: int
    peak_z: float
    peak_value: float
    articles: list[_Article] = field(default_factory=list)


@dataclass
class _Key:
    label: str
    topic_keywords: list[str]
    counts: deque[int]  # closed windows, last = last_w
    last_w: int  # last closed window recorded in counts (-inf before any)
    sent: deque[tuple[int, float]]  # (window, mean) of closed windows with articles
    last_active: int
    first_w: int  # first window of the key's history (topics: when first seen)
    open: dict[str, _Open] = field(default_factory=dict)


class BurstDetector:
    """Streaming burst detector (robust z-score, Iglewicz & Hoaglin) over fixed windows.

    Args:
        step_s: Window length in seconds.
        baseline_windows: Trailing windows in the baseline (N).
        z_on: Robust z that opens an event.
        z_off: Robust z below which an open event closes (hysteresis, ``< z_on``).
        min_count: Articles needed in a window to open (volume) or to measure (sentiment).
        min_baseline: Windows that must have been seen before anything is detected.
        sigma_floor: Lowest volume sigma, in articles per window.
        sentiment_sigma_floor: Lowest sentiment sigma (sentiment is in [-1, 1]).
        sentiment: Also detect sentiment bursts.
        sentiment_z_on: ``|z|`` that opens a sentiment event (``None`` -> ``z_on``); a window's
            mean sentiment is bounded and averages several articles, so it rarely moves as many
            sigmas as a count does. Closing uses ``z_off``.
        keyword_keys: Also track ``kw:`` keys (else topics only).
        min_sentiment_baseline: Windows with articles needed for a sentiment baseline.
        max_keys: Cap on tracked keys; the least recently active keys without an open event
            are dropped beyond it (keys idle for ``baseline_windows`` are always dropped).
        max_event_articles: Articles kept per open event (for keywords and examples).
        normalize: Measure volume relative to the other articles of each window (see the
            module docstring); off -> raw counts.

    Not thread-safe: call from one thread (the aggregator actor).
    """

    def __init__(
        self,
        step_s: int = 3600,
        baseline_windows: int = 48,
        z_on: float = 6.0,
        z_off: float = 2.0,
        min_count: int = 5,
        min_baseline: int | None = None,
        sigma_floor: float = 1.0,
        sentiment_sigma_floor: float = 0.1,
        sentiment: bool = True,
        sentiment_z_on: float | None = 4.0,
        keyword_keys: bool = True,
        min_sentiment_baseline: int = 5,
        max_keys: int = 20_000,
        max_event_articles: int = 500,
        normalize: bool = True,
    ) -> None:
        if step_s < 1:
            raise ValueError(f"step_s must be >= 1, got {step_s}")
        if baseline_windows < 3:
            raise ValueError(f"baseline_windows must be >= 3, got {baseline_windows}")
        if not z_off < z_on:
            raise ValueError(f"z_off ({z_off}) must be below z_on ({z_on})")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if sigma_floor <= 0 or sentiment_sigma_floor <= 0:
            raise ValueError("sigma floors must be > 0")
        self.step_s = int(step_s)
        self.baseline_windows = int(baseline_windows)
        self.z_on = float(z_on)
        self.z_off = float(z_off)
        self.min_count = int(min_count)
        self.min_baseline = int(min_baseline) if min_baseline is not None else max(3, baseline_windows // 4)
        self.sigma_floor = float(sigma_floor)
        self.sentiment_sigma_floor = float(sentiment_sigma_floor)
        self.sentiment = bool(sentiment)
        self.sentiment_z_on = float(sentiment_z_on) if sentiment_z_on is not None else self.z_on
        if not self.z_off < self.sentiment_z_on:
            raise ValueError(f"z_off ({z_off}) must be below sentiment_z_on ({self.sentiment_z_on})")
        self.keyword_keys = bool(keyword_keys)
        self.min_sentiment_baseline = int(min_sentiment_baseline)
        self.max_keys = int(max_keys)
        self.max_event_articles = int(max_event_articles)
        self.normalize = bool(normalize)

        self._first_w: int | None = None  # first window the detector saw
        self._next_close: int | None = None  # windows < this are closed
        self._keys: dict[str, _Key] = {}
        # open windows: window -> key -> articles
        self._open_w: dict[int, dict[str, list[_Article]]] = {}
        self._seen: dict[str, int] = {}  # article id -> window, for open windows only
        self._open_totals: dict[int, int] = {}  # articles per open window
        self._totals: dict[int, int] = {}  # articles per closed window, last N+1 windows
        self._with_open: set[str] = set()  # keys with an open event
        self.late_dropped = 0

    # ------------------------------------------------------------------ public API

    def observe(
        self,
        ts: float,
        article_id: str,
        topic_id: int,
        topic_label: str,
        topic_keywords: list[str],
        keywords: list[str],
        sentiment: float,
    ) -> bool:
        """Count one article into its window (``floor(ts / step_s)``).

        Re-observing an article id whose window is still open is a no-op (idempotent);
        articles for already closed windows are dropped and counted in ``late_dropped``.
        ``topic_id == -1`` contributes to keyword keys only.

        Returns:
            ``True`` when the article was counted.

        Raises:
            ValueError: non-finite ``ts`` or ``sentiment``, or an empty ``article_id``.
        """
        if not (math.isfinite(ts) and math.isfinite(sentiment)):
            raise ValueError(f"ts and sentiment must be finite, got ts={ts!r} sentiment={sentiment!r}")
        if not article_id:
            raise ValueError("article_id must be a non-empty string")
        w = int(ts // self.step_s)
        if self._first_w is None:
            self._first_w = w
            self._next_close = w
        assert self._next_close is not None
        if w < self._next_close:
            self.late_dropped += 1
            return False
        if article_id in self._seen:
            return False
        self._seen[article_id] = w
        self._open_totals[w] = self._open_totals.get(w, 0) + 1
        kws = list(dict.fromkeys(k for k in keywords if k))
        art = _Article(article_id, float(ts), kws, float(sentiment))
        bucket = self._open_w.setdefault(w, {})
        keys: list[tuple[str, str, list[str]]] = []
        if topic_id >= 0:
            keys.append((f"topic:{topic_id}", topic_label, list(topic_keywords)))
        if self.keyword_keys:
            keys.extend((f"kw:{k}", k, []) for k in kws)
        for key, label, tkws in keys:
            bucket.setdefault(key, []).append(art)
            st = self._keys.get(key)
            if st is None:
                st = _Key(
                    label=label,
                    topic_keywords=tkws,
                    counts=deque(maxlen=self.baseline_windows),
                    last_w=w - 1,
                    sent=deque(),
                    last_active=w,
                    # A keyword's history before it appeared is zeros since the detector
                    # started; a topic did not exist before it was first assigned, so its
                    # history starts then (else every new topic would "burst" at birth).
                    first_w=w if key.startswith("topic:") else self._first_w,
                )
                st.last_w = max(self._next_close, st.first_w) - 1
                self._keys[key] = st
            elif key.startswith("topic:"):
                st.label, st.topic_keywords = label, tkws  # a topic may have been relabelled
            st.last_active = max(st.last_active, w)
        return True

    def advance(self, now_ts: float) -> list[Event]:
        """Close every window that ended at or before ``now_ts`` and evaluate it.

        Returns:
            Events that opened, reached a new peak, or closed in those windows (the latest
            state of each; upsert by ``id``).
        """
        if self._next_close is None:
            return []
        target = int(now_ts // self.step_s)
        changed: dict[str, Event] = {}
        while self._next_close < target:
            w = self._next_close
            active = self._open_w.pop(w, {})
            self._totals[w] = self._open_totals.pop(w, 0)
            self._totals.pop(w - self.baseline_windows - 1, None)
            todo = set(active) | self._with_open
            for key in sorted(todo):
                for ev in self._close_window(key, w, active.get(key, [])):
                    changed[ev.id] = ev
            self._next_close = w + 1
            if active:
                self._seen = {a: aw for a, aw in self._seen.items() if aw > w}
            if w % max(1, self.baseline_windows // 4) == 0 or len(self._keys) > self.max_keys:
                self._prune(w)
        return list(changed.values())

    def open_events(self) -> list[Event]:
        """Current state of every open event."""
        out = []
        for key, st in self._keys.items():
            for op in st.open.values():
                out.append(self._event(key, st, op, None))
        return out

    @property
    def n_keys(self) -> int:
        """Keys tracked now."""
        return len(self._keys)

    # ------------------------------------------------------------------ internals

    def _close_window(self, key: str, w: int, arts: list[_Article]) -> list[Event]:
        st = self._keys[key]
        assert self._first_w is not None
        n = len(arts)
        seen_windows = w - max(self._first_w, st.first_w)  # closed windows of history before w
        # Volume baseline: the last N closed windows, zero-filled for gaps and for the time
        # before the key first appeared.
        gap = min(w - 1 - st.last_w, self.baseline_windows)
        hist = list(st.counts) + [0] * max(gap, 0)
        avail = min(seen_windows, self.baseline_windows)
        hist = hist[-avail:] if avail else []
        hist = [0] * (avail - len(hist)) + hist
        # Baseline as the key's articles per article about anything else in each window
        # (windows with no other article are missing), scaled back to counts with this window's
        # other articles: a feed's coverage change or a quiet weekend is not a burst, and the
        # key's own burst does not raise its expectation. Without normalisation: raw counts.
        if self.normalize:
            total = self._totals.get(w, 0) - n
            shares = []
            for i, c in enumerate(hist):
                others = self._totals.get(w - avail + i, 0) - c
                if others > 0:
                    shares.append(c / others)
        else:
            total, shares = 1, [float(c) for c in hist]
        events: list[Event] = []
        if seen_windows >= self.min_baseline or st.open:
            ev = self._step_volume(key, st, w, n, shares, total, arts)
            if ev is not None:
                events.append(ev)
            if self.sentiment:
                ev = self._step_sentiment(key, st, w, arts)
                if ev is not None:
                    events.append(ev)
        if st.open:
            self._with_open.add(key)
        else:
            self._with_open.discard(key)
        # Record the window.
        for _ in range(max(gap, 0)):
            st.counts.append(0)
        st.counts.append(n)
        st.last_w = w
        if n:
            st.sent.append((w, sum(a.sentiment for a in arts) / n))
        while st.sent and st.sent[0][0] <= w - self.baseline_windows:
            st.sent.popleft()
        return events

    def _step_volume(
        self,
        key: str,
        st: _Key,
        w: int,
        n: int,
        shares: list[float],
        total: int,
        arts: list[_Article],
    ) -> Event | None:
        op = st.open.get("volume")
        if op is None:
            if len(shares) < self.min_baseline:
                return None
            z, med = robust_z(n, [b * total for b in shares], self.sigma_floor, poisson=True)
            if z >= self.z_on and n >= self.min_count:
                op = _Open("volume", w, med, shares, 1, w, z, float(n))
                op.articles.extend(arts[: self.max_event_articles])
                st.open["volume"] = op
                return self._event(key, st, op, None)
            return None
        z, _ = robust_z(n, [b * total for b in op.base], self.sigma_floor, poisson=True)
        if z < self.z_off:
            del st.open["volume"]
            return self._event(key, st, op, float(w * self.step_s))
        self._add_articles(op, arts)
        if z > op.peak_z:
            op.peak_w, op.peak_z, op.peak_value = w, z, float(n)
            return self._event(key, st, op, None)
        return None

    def _step_sentiment(self, key: str, st: _Key, w: int, arts: list[_Article]) -> Event | None:
        n = len(arts)
        mean = sum(a.sentiment for a in arts) / n if n else 0.0
        op = st.open.get("sentiment")
        if op is None:
            base = [m for sw, m in st.sent if sw > w - 1 - self.baseline_windows]
            if n < self.min_count or len(base) < self.min_sentiment_baseline:
                return None
            z, med = robust_z(mean, base, self.sentiment_sigma_floor)
            if abs(z) >= self.sentiment_z_on:
                op = _Open("sentiment", w, med, base, 1 if z > 0 else -1, w, z, mean)
                op.articles.extend(arts[: self.max_event_articles])
                st.open["sentiment"] = op
                return self._event(key, st, op, None)
            return None
        z = robust_z(mean, op.base, self.sentiment_sigma_floor)[0] if n else 0.0
        if n < max(1, self.min_count // 2) or z * op.sign < self.z_off:
            del st.open["sentiment"]
            return self._event(key, st, op, float(w * self.step_s))
        self._add_articles(op, arts)
        if abs(z) > abs(op.peak_z):
            op.peak_w, op.peak_z, op.peak_value = w, z, mean
            return self._event(key, st, op, None)
        return None

    def _add_articles(self, op: _Open, arts: list[_Article]) -> None:
        room = self.max_event_articles - len(op.articles)
        if room > 0:
            op.articles.extend(arts[:room])

    def _event(self, key: str, st: _Key, op: _Open, end: float | None) -> Event:
        from models.topics import make_label

        start = float(op.start_w * self.step_s)
        counts: Counter[str] = Counter()
        for a in op.articles:
            counts.update(a.keywords)
        own = key[3:] if key.startswith("kw:") else None
        ranked = [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if k != own]
        # Keywords seen in at least a quarter of the event's articles (at least 2).
        need = max(2, len(op.articles) // 4)
        common = [k for k in ranked if counts[k] >= need]
        keywords = ([own] if own else []) + (common or ranked)[:7]
        label = make_label(keywords, max_terms=4) if own else (st.label or make_label(keywords))
        if op.kind == "sentiment":
            label = f"{'positive' if op.sign > 0 else 'negative'}: {label}"
        top = set(keywords)
        ranked_arts = sorted(
            enumerate(op.articles), key=lambda ia: (-len(top.intersection(ia[1].keywords)), ia[0])
        )
        examples = [a.id for _, a in ranked_arts[:5]]
        return Event(
            id=event_id(op.kind, key, start),
            kind=op.kind,
            key=key,
            label=label,
            keywords=keywords,
            start=start,
            peak=float(op.peak_w * self.step_s),
            end=end,
            peak_value=op.peak_value,
            baseline=op.med,
            score=float(op.peak_z),
            examples=examples,
        )

    def _prune(self, w: int) -> None:
        """Drop keys idle for a whole baseline (their baseline is all zeros again, which is
        what a new key gets), then the least recently active ones beyond ``max_keys``."""
        horizon = w - self.baseline_windows
        pending = {k for bucket in self._open_w.values() for k in bucket}
        idle = [k for k, st in self._keys.items() if st.last_active <= horizon and not st.open]
        for k in idle:
            if k not in pending:
                del self._keys[k]
        excess = len(self._keys) - self.max_keys
        if excess > 0:
            victims = sorted(
                (k for k, st in self._keys.items() if not st.open and k not in pending),
                key=lambda k: (self._keys[k].last_active, k),
            )[:excess]
            for k in victims:
                del self._keys[k]


def detect_events(rows: Iterable[Mapping[str, Any]], step_s: int = 3600, **params: Any) -> list[Event]:
    """Run a :class:`BurstDetector` over a whole time-ordered sequence of articles.

    Args:
        rows: Mappings with ``ts`` (Unix seconds), ``article_id``, ``sentiment``, and optionally
            ``topic_id`` (default -1), ``topic_label``, ``topic_keywords``, and ``keywords``
            (default: :func:`keywords_of` of ``text``).
        step_s: Window length in seconds.
        **params: Further :class:`BurstDetector` arguments.

    Returns:
        The final state of every event, by start time then score; events still open at the
        end of the data have ``end=None``.
    """
    det = BurstDetector(step_s=step_s, **params)
    latest: dict[str, Event] = {}
    last_ts: float | None = None
    for row in rows:
        ts = float(row["ts"])
        if last_ts is not None and ts < last_ts:
            raise ValueError(f"rows must be in time order: {ts} after {last_ts}")
        for ev in det.advance(ts):
            latest[ev.id] = ev
        kws = row.get("keywords")
        if kws is None:
            kws = keywords_of(str(row.get("text", "")))
        det.observe(
            ts,
            str(row["article_id"]),
            int(row.get("topic_id", -1)),
            str(row.get("topic_label", "")),
            list(row.get("topic_keywords", [])),
            list(kws),
            float(row["sentiment"]),
        )
        last_ts = ts
    if last_ts is not None:
        # Close the last window (it has ended once the data has), keep later events open.
        for ev in det.advance((last_ts // step_s + 1) * step_s):
            latest[ev.id] = ev
    for ev in det.open_events():
        latest[ev.id] = replace(ev)
    return sorted(latest.values(), key=lambda e: (e.start, -abs(e.score)))


def dedupe_events(events: Iterable[Event], top_k: int = 4) -> list[Event]:
    """One event per happening: strongest first, dropping an event of the same kind that
    overlaps a kept one in time and shares any of its top ``top_k`` keywords (a crash shows up
    as ``kw:terra``, ``kw:ust``, ``kw:luna`` and a topic at once). Open events count as
    lasting until their peak.

    Returns:
        The kept events, by descending ``|score|``.
    """
    kept: list[Event] = []
    for ev in sorted(events, key=lambda e: (-abs(e.score), e.start, e.id)):
        end = ev.end if ev.end is not None else ev.peak
        top = set(ev.keywords[:top_k])
        dup = any(
            k.kind == ev.kind
            and ev.start <= (k.end if k.end is not None else k.peak)
            and k.start <= end
            and top & set(k.keywords[:top_k])
            for k in kept
        )
        if not dup:
            kept.append(ev)
    return kept
