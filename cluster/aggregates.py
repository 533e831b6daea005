"""The aggregates store: per-minute facts kept in SQLite, windows of any step on demand.

The aggregator actor is its only writer. Each scored article and each price observation is
stored once under its id (``INSERT OR IGNORE``), so a redelivered message changes no count;
windows (1 minute to days) are computed from those rows when asked, aligned to multiples
of the step since the Unix epoch so that the same bucket always has the same bounds.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.records import (
    DeadLetter,
    NewsEvent,
    PriceTick,
    ScoredArticle,
    WindowAggregate,
    format_time,
    to_ts,
)

_STEP = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_STEP_S = 60
MAX_STEP_S = 31 * 86400
MAX_BUCKETS = 20_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    sentiment REAL NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_ts ON articles (ts);
CREATE TABLE IF NOT EXISTS article_categories (
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    category TEXT NOT NULL,
    PRIMARY KEY (id, category)
);
CREATE INDEX IF NOT EXISTS article_categories_ts ON article_categories (ts);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    start_ts REAL NOT NULL,
    end_ts REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_start ON events (start_ts);
CREATE TABLE IF NOT EXISTS prices (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS prices_ts ON prices (ts);
CREATE TABLE IF NOT EXISTS deadletters (
    message_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL,
    redeliveries INTEGER NOT NULL,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (topic, message_id)
);
"""


# Columns added to ``articles`` in schema version 2 (an older file gains them on open).
_ARTICLE_COLUMNS_V2 = {
    "topic_id": "INTEGER NOT NULL DEFAULT -1",
    "topic_label": "TEXT NOT NULL DEFAULT ''",
    "story_id": "TEXT NOT NULL DEFAULT ''",
    "title": "TEXT NOT NULL DEFAULT ''",
}
#: Topics listed per window (the largest); the rest are left out of ``topics``.
TOPICS_PER_WINDOW = 12

# Bucket b of a query holds [first + b*step, first + (b+1)*step). Literal SQL, named parameters.
_NEWS_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, COUNT(*), AVG(sentiment),
       SUM(label = 'positive'), SUM(label = 'neutral'), SUM(label = 'negative')
FROM articles WHERE ts >= :first AND ts < :end GROUP BY b
"""
# SQLite gives the bare columns of the row holding the MIN() or MAX() only when a query has
# exactly one of them, hence one query for the open, one for the close, one for the range.
_OPEN_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, open, MIN(ts)
FROM prices WHERE ts >= :first AND ts < :end GROUP BY b
"""
_CLOSE_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, close, MAX(ts)
FROM prices WHERE ts >= :first AND ts < :end GROUP BY b
"""
_RANGE_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, MAX(high), MIN(low)
FROM prices WHERE ts >= :first AND ts < :end GROUP BY b
"""
_TOPICS_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, topic_id, COUNT(*) AS n
FROM articles WHERE ts >= :first AND ts < :end AND topic_id >= 0 GROUP BY b, topic_id
ORDER BY b, n DESC, topic_id
"""
_CATEGORIES_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, category, COUNT(*) AS n
FROM article_categories WHERE ts >= :first AND ts < :end GROUP BY b, category
ORDER BY b, n DESC, category
"""
_SOURCES_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b, source, COUNT(*) AS n
FROM articles WHERE ts >= :first AND ts < :end GROUP BY b, source
ORDER BY b, n DESC, source
"""
_STORIES_SQL = """
SELECT CAST((ts - :first) / :step AS INTEGER) AS b,
       COUNT(DISTINCT CASE WHEN story_id = '' THEN id ELSE story_id END)
FROM articles WHERE ts >= :first AND ts < :end GROUP BY b
"""
_EVENTS_SQL = """
SELECT CAST((start_ts - :first) / :step AS INTEGER) AS b, COUNT(*)
FROM events WHERE start_ts >= :first AND start_ts < :end GROUP BY b
"""


def parse_step(text: str) -> int:
    """``"15m"`` -> 900. Steps run from one minute to 31 days; raises ``ValueError`` otherwise."""
    m = _STEP.match(text)
    if not m:
        raise ValueError(f"step must look like 1m, 15m, 1h, 1d; got {text!r}")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if not MIN_STEP_S <= seconds <= MAX_STEP_S:
        raise ValueError(f"step must be between 1m and 31d; got {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Totals:
    articles: int
    prices: int
    first_ts: float | None
    last_ts: float | None


class AggregatesStore:
    """SQLite file owned by one process; safe to call from that process's threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(articles)")}
            for name, decl in _ARTICLE_COLUMNS_V2.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE articles ADD COLUMN {name} {decl}")

    def add_articles(self, articles: Iterable[ScoredArticle]) -> list[float]:
        """Store articles (once per id); returns the times of those that were new."""
        return [a.published_ts for a in self.add_new_articles(articles)]

    def add_new_articles(self, articles: Iterable[ScoredArticle]) -> list[ScoredArticle]:
        """Store articles (once per id) with their categories; returns those that were new."""
        batch = list(articles)
        if not batch:
            return []
        new: list[ScoredArticle] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for a in batch:
                    ts = a.published_ts
                    row = (a.id, ts, a.sentiment, a.sentiment_label, a.source)
                    extra = (a.topic_id, a.topic_label, a.story_id, a.title[:300])
                    inserted = self._db.execute(
                        "INSERT OR IGNORE INTO articles (id, ts, sentiment, label, source, topic_id,"
                        " topic_label, story_id, title) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row + extra,
                    ).rowcount
                    if inserted:
                        new.append(a)
                        self._db.executemany(
                            "INSERT OR IGNORE INTO article_categories VALUES (?, ?, ?)",
                            [(a.id, ts, c) for c in a.categories],
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def articles_since(self, start: float) -> list[tuple[float, str, int, str, str, float]]:
        """``(ts, id, topic_id, topic_label, title, sentiment)`` of the articles at or after
        ``start``, oldest first (what the burst detector is rebuilt from after a restart)."""
        with self._lock:
            return self._db.execute(
                "SELECT ts, id, topic_id, topic_label, title, sentiment FROM articles WHERE ts >= ?"
                " ORDER BY ts, id",
                (start,),
            ).fetchall()

    def upsert_events(self, events: Iterable[NewsEvent]) -> int:
        """Keep the latest version of each event (by id); returns how many were written."""
        rows = [
            (e.id, to_ts(e.start), to_ts(e.end) if e.end else None, json.dumps(e.to_dict())) for e in events
        ]
        with self._lock:
            self._db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " start_ts = excluded.start_ts, end_ts = excluded.end_ts, data = excluded.data",
                rows,
            )
        return len(rows)

    def events(self, start: float, end: float, limit: int) -> list[NewsEvent]:
        """Events overlapping ``[start, end)`` (open ones included), the strongest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM events WHERE start_ts < ? AND (end_ts IS NULL OR end_ts >= ?)"
                " ORDER BY json_extract(data, '$.score') DESC, start_ts LIMIT ?",
                (end, start, limit),
            ).fetchall()
        return [NewsEvent.from_dict(json.loads(r[0])) for r in rows]

    def add_prices(self, ticks: Iterable[PriceTick]) -> list[float]:
        """Store price observations (once per id); returns the times of those that were new."""
        rows = [(t.id, t.ts_epoch, t.open, t.high, t.low, t.close, t.volume) for t in ticks]
        return self._insert("INSERT OR IGNORE INTO prices VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _insert(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> list[float]:
        if not rows:
            return []
        new: list[float] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    if self._db.execute(sql, row).rowcount:
                        new.append(float(row[1]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def add_deadletters(self, letters: Iterable[DeadLetter]) -> int:
        """Keep dead letters (once per original topic and message id); returns how many were new."""
        rows = [(d.message_id, d.topic, d.reason, d.payload, d.redeliveries, d.failed_at) for d in letters]
        with self._lock:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO deadletters VALUES (?, ?, ?, ?, ?, ?)", rows)
            return self._db.total_changes - before

    def deadletters(self, limit: int) -> list[DeadLetter]:
        """The newest dead letters first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, message_id, reason, payload, redeliveries, failed_at FROM deadletters"
                " ORDER BY failed_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def series(self, start: float, end: float, step_s: int) -> list[WindowAggregate]:
        """Windows of ``step_s`` covering ``[start, end)``, every bucket present (empty ones
        with count 0), oldest first."""
        if end <= start:
            raise ValueError("end must be after start")
        first = int(start // step_s) * step_s
        n = int((end - first + step_s - 1) // step_s)
        if n > MAX_BUCKETS:
            raise ValueError(f"{n} buckets requested; at most {MAX_BUCKETS} (use a larger step)")
        params = {"first": first, "step": step_s, "end": end}
        with self._lock:
            queries = (
                _NEWS_SQL,
                _OPEN_SQL,
                _CLOSE_SQL,
                _RANGE_SQL,
                _TOPICS_SQL,
                _CATEGORIES_SQL,
                _SOURCES_SQL,
            )
            news, opens, closes, ranges, topics, categories, sources = (
                self._db.execute(sql, params).fetchall() for sql in queries
            )
            stories = dict(self._db.execute(_STORIES_SQL, params).fetchall())
            events = dict(self._db.execute(_EVENTS_SQL, params).fetchall())
        by_topic: dict[int, list[tuple[int, int]]] = {}
        for b, topic_id, size in topics:
            by_topic.setdefault(b, []).append((topic_id, size))
        by_category: dict[int, list[tuple[str, int]]] = {}
        for b, category, size in categories:
            by_category.setdefault(b, []).append((category, size))
        by_source: dict[int, list[tuple[str, int]]] = {}
        for b, source, size in sources:
            by_source.setdefault(b, []).append((source, size))
        by_news = {r[0]: r for r in news}
        by_open = {r[0]: r[1] for r in opens}
        by_close = {r[0]: r[1] for r in closes}
        by_range = {r[0]: r for r in ranges}
        out = []
        for i in range(n):
            nr = by_news.get(i)
            rr = by_range.get(i)
            out.append(
                WindowAggregate(
                    start=format_time(first + i * step_s),
                    step_s=step_s,
                    count=int(nr[1]) if nr else 0,
                    sentiment_mean=float(nr[2]) if nr else None,
                    positive=int(nr[3]) if nr else 0,
                    neutral=int(nr[4]) if nr else 0,
                    negative=int(nr[5]) if nr else 0,
                    open=by_open.get(i),
                    high=float(rr[1]) if rr else None,
                    low=float(rr[2]) if rr else None,
                    close=by_close.get(i),
                    topics=[t for t, _ in by_topic.get(i, [])[:TOPICS_PER_WINDOW]],
                    topic_counts=[n for _, n in by_topic.get(i, [])[:TOPICS_PER_WINDOW]],
                    categories=[c for c, _ in by_category.get(i, [])],
                    category_counts=[n for _, n in by_category.get(i, [])],
                    stories=int(stories.get(i, 0)),
                    events=int(events.get(i, 0)),
                    sources=[s for s, _ in by_source.get(i, [])],
                    source_counts=[n for _, n in by_source.get(i, [])],
                )
            )
        return out

    def totals(self) -> Totals:
        with self._lock:
            a, a_first, a_last = self._db.execute(
                "SELECT COUNT(*), MIN(ts), MAX(ts) FROM articles"
            ).fetchone()
            p, p_first, p_last = self._db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM prices").fetchone()
        firsts = [t for t in (a_first, p_first) if t is not None]
        lasts = [t for t in (a_last, p_last) if t is not None]
        return Totals(a, p, min(firsts) if firsts else None, max(lasts) if lasts else None)

    def close(self) -> None:
        with self._lock:
            self._db.close()
