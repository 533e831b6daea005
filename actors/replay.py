"""Replay of recorded news and prices, in event-time order.

Pure functions: no Pulsar, no Ray. A replay producer feeds the rows it gets from here to the
same topics the live collectors write, so the rest of the system cannot tell the difference
(ids are deterministic, so replaying twice changes nothing downstream).

Stages
------
1. **Detect** the format of a file (:func:`detect_format`): by extension and by sniffing the
   first two lines.
2. **Read** (:func:`read_file`): decode line by line (a line that is not UTF-8 is counted, never
   fatal), parse, validate through :meth:`NewsItem.create` / :meth:`PriceTick.create`, count
   every rejected row by reason in a :class:`ReplayReport`, and return the kept rows sorted by
   event time, ascending.
3. **Merge** several files into one stream (:func:`merge_by_time`) and **clip** it to a time
   window (:func:`clip`).
4. **Pace** the stream (:class:`ReplayClock`): speed 0 emits at once; speed X replays X times
   faster than real time, in bounded sleeps so that a stop flag is honoured.

Formats
-------
``CRYPTONEWS``
    The semicolon CSV ``date;sentiment;source;subject;text;title;url`` with dates
    ``D-M-YYYY HH:MM`` in UTC (no zero padding). ``text`` becomes the summary.
``REDDIT``
    The r/Bitcoin CSV (``id,created_utc,...,title,selftext,permalink,url,...``): source
    ``reddit/r/Bitcoin``, URL ``https://www.reddit.com`` + ``permalink``, GUID ``id``,
    summary ``selftext``, time ``created_utc`` (Unix seconds).
``BITSTAMP``
    CryptoDataDownload's hourly export: a banner line, the header
    ``unix,date,symbol,open,high,low,close,Volume BTC,Volume USD``, rows newest first. Each row
    becomes a :class:`PriceTick` (source ``bitstamp``, symbol ``BTC-USD``, ``interval_s`` 3600,
    volume in BTC). Rows whose two volume columns are swapped (a known defect of the export,
    recognised by ``Volume BTC / Volume USD`` being closer to ``close`` than the reverse) are
    swapped back and counted as repaired.
``JSONL``
    One JSON object per line, UTF-8; blank lines are ignored. Keys:

    ============== ========= =============================================================
    key            required  meaning
    ============== ========= =============================================================
    ``published_at`` no      ISO-8601 time (``2022-07-05T04:24:00Z``; no zone means UTC).
                             Missing, ``null`` or ``""``: the item is kept with
                             ``time_estimated=True`` and replayed where it stands in the file.
    ``source``     no        feed or site name (``unknown`` when absent)
    ``url``        yes*      absolute http(s) URL of the article
    ``title``      yes       headline; HTML is stripped, must not end up empty
    ``summary``    no        lede / body; HTML is stripped
    ``guid``       no*       stable id from the feed; * an item needs a usable ``url`` or a ``guid``
    ============== ========= =============================================================

    Other keys are ignored. String values only (``null`` counts as absent).

Times and order
---------------
A replayed news item is stamped ``fetched_at = published_at`` (a replay reproduces the past).
A news time missing (JSONL) or further in the future than ``max_future_skew_s`` is not trusted:
the item is kept with ``time_estimated=True`` (its ``published_at`` is the read time) and it is
replayed at the time of the dated row before it in the file (or the first dated row), so that
it neither jumps to the end of the replay nor stalls the clock. A price bar with a future time
is rejected ("future date"). Rows are sorted by time; rows with equal times keep file order.

Bad rows are skipped and counted by a short, stable reason: ``not utf-8``, ``bad csv``,
``bad row`` (wrong number of fields), ``bad json``, ``bad field`` (a non-string value),
``line too long``, ``bad date``, ``future date``, ``empty title``, ``bad url``, ``bad price``.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cluster.ids import BadURLError
from cluster.records import NewsItem, PriceTick, parse_time

REDDIT_SOURCE = "reddit/r/Bitcoin"
REDDIT_BASE = "https://www.reddit.com"
BITSTAMP_SOURCE = "bitstamp"
BITSTAMP_SYMBOL = "BTC-USD"
MAX_EXAMPLES = 20
# A JSONL line longer than this is not an article; refuse it before json.loads spends memory on it.
MAX_LINE_BYTES = 1 << 20

_DMY_HM = re.compile(r"(\d{1,2})-(\d{1,2})-(\d{4}) (\d{1,2}):(\d{2})")
_NEWS_COLUMNS = frozenset({"date", "source", "text", "title", "url"})
_REDDIT_COLUMNS = frozenset({"id", "created_utc", "title", "selftext", "permalink"})
_BITSTAMP_COLUMNS = frozenset({"unix", "open", "high", "low", "close", "Volume BTC"})


class ReplayFormat(StrEnum):
    CRYPTONEWS = "cryptonews"
    REDDIT = "reddit"
    JSONL = "jsonl"
    BITSTAMP = "bitstamp"


@dataclass(frozen=True)
class ReplayRow:
    """One replayed record and where it came from; ``ts`` is its event time (epoch seconds)."""

    ts: float
    line: int
    record: NewsItem | PriceTick


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str


@dataclass
class ReplayReport:
    """What reading one or more files found; one report may be shared by several reads.

    ``read`` counts data rows (blank lines excluded), each of which ends up either ``ok`` or in
    ``bad`` (reason -> count). ``repaired`` (what -> count) and ``estimated`` (kept with an
    untrusted time) count kept rows; ``duplicates`` counts kept rows whose id was already seen.
    """

    read: int = 0
    ok: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    estimated: int = 0
    duplicates: int = 0
    files: list[str] = field(default_factory=list)
    examples: list[BadRow] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def repaired_total(self) -> int:
        return sum(self.repaired.values())

    def reject(self, file: str, line: int, reason: str) -> None:
        self.bad[reason] = self.bad.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(BadRow(file, line, reason))

    def repair(self, what: str) -> None:
        self.repaired[what] = self.repaired.get(what, 0) + 1

    def accept(self, record: NewsItem | PriceTick) -> None:
        self.ok += 1
        if record.id in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(record.id)

    def summary(self) -> str:
        """One line, e.g. ``cryptonews.csv: 7524 read, 7464 ok, 60 bad (bad url 32, empty title 28), ...``."""

        def detail(counts: dict[str, int]) -> str:
            return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""

        return (
            f"{', '.join(self.files) or 'nothing'}: {self.read} read, {self.ok} ok, "
            f"{self.bad_total} bad{detail(self.bad)}, {self.repaired_total} repaired{detail(self.repaired)}, "
            f"{self.estimated} time-estimated, {self.duplicates} duplicate ids"
        )


def _head(path: Path, n: int = 2) -> list[str]:
    with path.open("rb") as f:
        lines = [f.readline(64 * 1024).decode("utf-8", errors="replace") for _ in range(n)]
    return [line.lstrip("\ufeff").strip() for line in lines]


def detect_format(path: Path) -> ReplayFormat:
    """The format of ``path`` from its extension and first two lines.

    Raises ``ValueError`` naming the path when no format matches, ``OSError`` when it cannot be read.
    """
    head = _head(path)
    if path.suffix.lower() in (".jsonl", ".ndjson") or head[0].startswith("{"):
        return ReplayFormat.JSONL
    if set(head[0].split(";")) >= _NEWS_COLUMNS:
        return ReplayFormat.CRYPTONEWS
    if set(head[0].split(",")) >= _REDDIT_COLUMNS:
        return ReplayFormat.REDDIT
    if any(set(line.split(",")) >= _BITSTAMP_COLUMNS for line in head):
        return ReplayFormat.BITSTAMP
    raise ValueError(f"{path}: unknown replay format (expected cryptonews/reddit/bitstamp CSV or JSONL)")


def _lines(path: Path, bad_lines: set[int]) -> Iterator[str]:
    """Decoded physical lines; a line that is not UTF-8 is yielded with replacement characters
    and its number added to ``bad_lines``, so the row that contains it can be rejected."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.add(n)
                text = raw.decode("utf-8", errors="replace")
            yield text.lstrip("\ufeff") if n == 1 else text


def _csv_rows(
    path: Path, report: ReplayReport, *, delimiter: str, required: frozenset[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line number, row as dict) for each data row after the header, which is the first of
    the first two lines to hold every ``required`` column. Malformed rows are counted and skipped."""
    bad_lines: set[int] = set()
    lines = _lines(path, bad_lines)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    for _ in range(2):
        candidate = next(reader, None)
        if candidate is not None and required <= set(candidate):
            header = candidate
            break
    if header is None:
        raise ValueError(f"{path}: no header with columns {sorted(required)} in the first two lines")
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            # The reader resynchronises on the next line, so one broken quote costs one row.
            end = reader.line_num
            report.read += 1
            report.reject(path.name, start, "bad csv")
            continue
        end = reader.line_num
        if not row:  # a blank line is not a row
            continue
        report.read += 1
        if bad_lines and any(n in bad_lines for n in range(start, end + 1)):
            report.reject(path.name, start, "not utf-8")
        elif len(row) != len(header):
            report.reject(path.name, start, "bad row")
        else:
            yield start, dict(zip(header, row, strict=True))


def _url_repaired(raw: str, canon: str) -> bool:
    # canonical_url only changes the host when it repaired a doubled prefix
    # ("https://a.comhttps://a.com/x"); lower-casing and default ports are not repairs.
    if raw.count("://") < 2:  # cheap pre-check: a doubled prefix has two schemes
        return False
    try:
        raw_host = (urlsplit(raw.strip()).hostname or "").rstrip(".")
    except ValueError:
        return True
    return raw_host != (urlsplit(canon).hostname or "")


class _NewsBuilder:
    """Builds NewsItems for one file, classifying failures and time trust."""

    def __init__(
        self, path: Path, report: ReplayReport, max_title_chars: int, max_summary_chars: int, skew_s: float
    ) -> None:
        self.path, self.report = path, report
        self.limits = {"max_title_chars": max_title_chars, "max_summary_chars": max_summary_chars}
        self.read_at = datetime.now(UTC)
        self.horizon = self.read_at.timestamp() + skew_s

    def build(
        self,
        line: int,
        *,
        published: datetime | None,
        source: str,
        url: str,
        title: str,
        summary: str | None,
        guid: str | None = None,
    ) -> tuple[float | None, int, NewsItem] | None:
        trusted = published is not None and published.timestamp() <= self.horizon
        try:
            item = NewsItem.create(
                source=source,
                url=url,
                title=title,
                summary=summary,
                guid=guid,
                published_at=published if trusted else None,
                fetched_at=published if trusted else self.read_at,
                **self.limits,
            )
        except BadURLError:
            self.report.reject(self.path.name, line, "bad url")
            return None
        except ValueError as exc:
            self.report.reject(
                self.path.name, line, "empty title" if str(exc) == "empty title" else "bad row"
            )
            return None
        if url and _url_repaired(url, item.url):
            self.report.repair("doubled url prefix")
        if not trusted:
            self.report.estimated += 1
        self.report.accept(item)
        return (published.timestamp() if trusted and published else None), line, item


def _dmy_hm(text: str) -> datetime:
    """``D-M-YYYY HH:MM`` (UTC); raises ``ValueError``. strptime is ~5x slower on 7.5k rows."""
    match = _DMY_HM.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not D-M-YYYY HH:MM: {text[:40]!r}")
    day, month, year, hour, minute = map(int, match.groups())
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _cryptonews(path: Path, nb: _NewsBuilder) -> Iterator[tuple[float | None, int, NewsItem] | None]:
    for line, row in _csv_rows(path, nb.report, delimiter=";", required=_NEWS_COLUMNS):
        try:
            published = _dmy_hm(row["date"])
        except ValueError:
            nb.report.reject(path.name, line, "bad date")
            continue
        yield nb.build(
            line,
            published=published,
            source=row["source"],
            url=row["url"],
            title=row["title"],
            summary=row["text"],
        )


def _reddit(path: Path, nb: _NewsBuilder) -> Iterator[tuple[float | None, int, NewsItem] | None]:
    for line, row in _csv_rows(path, nb.report, delimiter=",", required=_REDDIT_COLUMNS):
        try:
            published = datetime.fromtimestamp(float(row["created_utc"]), UTC)
        except (ValueError, OverflowError, OSError):
            nb.report.reject(path.name, line, "bad date")
            continue
        permalink = row["permalink"].strip()
        yield nb.build(
            line,
            published=published,
            source=REDDIT_SOURCE,
            url=REDDIT_BASE + permalink if permalink.startswith("/") else permalink,
            title=row["title"],
            summary=row["selftext"],
            guid=row["id"],
        )


def _jsonl(path: Path, nb: _NewsBuilder) -> Iterator[tuple[float | None, int, NewsItem] | None]:
    report = nb.report
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            report.read += 1
            if len(raw) > MAX_LINE_BYTES:
                report.reject(path.name, line, "line too long")
                continue
            try:
                obj: Any = json.loads(raw.decode("utf-8").lstrip("\ufeff"))
            except UnicodeDecodeError:
                report.reject(path.name, line, "not utf-8")
                continue
            except ValueError:  # json.JSONDecodeError, and numbers json refuses
                report.reject(path.name, line, "bad json")
                continue
            if not isinstance(obj, dict):
                report.reject(path.name, line, "bad json")
                continue
            keys = ("published_at", "source", "url", "title", "summary", "guid")
            values = {k: obj.get(k) for k in keys}
            if any(v is not None and not isinstance(v, str) for v in values.values()):
                report.reject(path.name, line, "bad field")
                continue
            published: datetime | None = None
            if values["published_at"]:
                try:
                    published = parse_time(values["published_at"])
                except ValueError:
                    report.reject(path.name, line, "bad date")
                    continue
            yield nb.build(
                line,
                published=published,
                source=values["source"] or "",
                url=values["url"] or "",
                title=values["title"] or "",
                summary=values["summary"],
                guid=values["guid"],
            )


def _bitstamp(path: Path, report: ReplayReport, skew_s: float) -> Iterator[tuple[float, int, PriceTick]]:
    horizon = time.time() + skew_s
    bars: list[tuple[float, int, tuple[float, ...], float, bool]] = []
    for line, row in _csv_rows(path, report, delimiter=",", required=_BITSTAMP_COLUMNS):
        try:
            ts = float(row["unix"])
            datetime.fromtimestamp(ts, UTC)
        except (ValueError, OverflowError, OSError):
            report.reject(path.name, line, "bad date")
            continue
        if ts > horizon:
            report.reject(path.name, line, "future date")
            continue
        try:
            ohlc = tuple(float(row[k]) for k in ("open", "high", "low", "close"))
            vol_btc, vol_usd = float(row["Volume BTC"]), float(row.get("Volume USD") or "nan")
        except ValueError:
            report.reject(path.name, line, "bad price")
            continue
        # The export swapped the two volume columns for long stretches; the swap shows as
        # Volume BTC / Volume USD ~ close rather than the reverse.
        close = ohlc[3]
        swapped = (
            vol_btc > 0
            and vol_usd > 0
            and close > 0
            and abs(math.log(vol_btc / vol_usd / close)) < abs(math.log(vol_usd / vol_btc / close))
        )
        bars.append((ts, line, ohlc, vol_usd if swapped else vol_btc, swapped))
    # The bar length is not in the file: hourly and daily exports share the header, so take the
    # most common spacing of consecutive bars (one bar alone: hourly).
    times = sorted({bar[0] for bar in bars})
    gaps = Counter(int(b - a) for a, b in itertools.pairwise(times))
    interval = gaps.most_common(1)[0][0] if gaps else 3600
    for ts, line, (o, h, lo, c), vol, swapped in bars:
        try:
            if not (all(math.isfinite(v) for v in (o, h, lo, c, vol)) and vol >= 0):
                raise ValueError("not finite or negative volume")
            tick = PriceTick.create(
                source=BITSTAMP_SOURCE,
                symbol=BITSTAMP_SYMBOL,
                ts=datetime.fromtimestamp(ts, UTC),
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=vol,
                interval_s=interval,
            )
        except ValueError:
            report.reject(path.name, line, "bad price")
            continue
        if swapped:
            report.repair("swapped volumes")
        report.accept(tick)
        yield ts, line, tick


def read_file(
    path: Path,
    fmt: ReplayFormat | None = None,
    *,
    report: ReplayReport,
    max_title_chars: int = 500,
    max_summary_chars: int = 2000,
    max_future_skew_s: float = 300.0,
) -> Iterator[ReplayRow]:
    """The valid rows of ``path``, sorted by event time (ascending; ties keep file order).

    The whole file is read before this returns (the files are small, and sorting needs them
    all), so ``report`` is complete as soon as the call returns. Bad rows are counted in
    ``report`` and skipped. Raises only for the file as a whole: ``OSError`` when it cannot be
    read, ``ValueError`` when its format is unknown or its header is missing.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    report.files.append(path.name)
    entries: list[tuple[float | None, int, NewsItem | PriceTick]]
    if fmt is ReplayFormat.BITSTAMP:
        entries = list(_bitstamp(path, report, max_future_skew_s))
    else:
        nb = _NewsBuilder(path, report, max_title_chars, max_summary_chars, max_future_skew_s)
        parse = {
            ReplayFormat.CRYPTONEWS: _cryptonews,
            ReplayFormat.REDDIT: _reddit,
            ReplayFormat.JSONL: _jsonl,
        }
        entries = [e for e in parse[fmt](path, nb) if e is not None]
    return iter(_ordered(entries, fallback=time.time()))


def _ordered(entries: list[tuple[float | None, int, Any]], fallback: float) -> list[ReplayRow]:
    # An untrusted time (None) takes the time of the dated row before it in the file, so the row
    # is replayed where the file put it; rows before any dated row take the first dated time.
    first = next((ts for ts, _, _ in entries if ts is not None), fallback)
    rows: list[ReplayRow] = []
    last = first
    for ts, line, record in entries:
        last = ts if ts is not None else last
        rows.append(ReplayRow(last, line, record))
    rows.sort(key=lambda r: r.ts)  # stable: equal times keep file order
    return rows


def merge_by_time(*streams: Iterable[ReplayRow]) -> Iterator[ReplayRow]:
    """One ascending stream from ascending streams; equal times come in argument order."""
    return heapq.merge(*streams, key=lambda r: r.ts)


def clip(rows: Iterable[ReplayRow], start: float | None, end: float | None) -> Iterator[ReplayRow]:
    """The rows with ``start <= ts < end`` (``None``: unbounded). ``rows`` must ascend: reading
    stops at the first row at or after ``end``."""
    for row in rows:
        if end is not None and row.ts >= end:
            return
        if start is None or row.ts >= start:
            yield row


def news_span(paths: Sequence[Path]) -> tuple[float, float] | None:
    """First and last news time over ``paths`` (e.g. to clip prices to the news window); ``None``
    when they hold no news row."""
    times = [
        row.ts
        for path in paths
        for row in read_file(path, report=ReplayReport())
        if isinstance(row.record, NewsItem)
    ]
    return (min(times), max(times)) if times else None


class ReplayClock:
    """Paces a replay: event time advances ``speed`` times faster than wall time.

    Wall time starts when the clock is made, at event time ``first_ts``. ``speed`` 0 means as
    fast as possible. ``now`` and ``sleep`` are injectable (tests use a fake clock); one sleep is
    at most ``max_sleep_s`` so that a stop flag is seen promptly.
    """

    def __init__(
        self,
        speed: float,
        first_ts: float,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_sleep_s: float = 1.0,
    ) -> None:
        if not (speed >= 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be finite and >= 0, not {speed}")
        if max_sleep_s <= 0:
            raise ValueError("max_sleep_s must be > 0")
        self.speed, self.first_ts = speed, first_ts
        self._now, self._sleep, self._max_sleep = now, sleep, max_sleep_s
        self._start = now()

    def due(self, ts: float) -> float:
        """The wall (``now``) time at which event time ``ts`` is due."""
        return self._start if self.speed == 0 else self._start + (ts - self.first_ts) / self.speed

    def wait_for(self, ts: float, stop: threading.Event | None = None) -> bool:
        """Sleep until event time ``ts`` is due; ``False`` if ``stop`` was set (checked between
        sleeps and on return), else ``True``. A time already due returns at once."""
        target = self.due(ts)
        while True:
            if stop is not None and stop.is_set():
                return False
            remaining = target - self._now()
            if remaining <= 0:
                return True
            self._sleep(min(remaining, self._max_sleep))


__all__ = [
    "BadRow",
    "ReplayClock",
    "ReplayFormat",
    "ReplayReport",
    "ReplayRow",
    "clip",
    "detect_format",
    "merge_by_time",
    "news_span",
    "read_file",
]
