"""``btcpulse analyze``: the consumers' models on a file, with no cluster.

Reads a CSV (comma, semicolon or tab separated, header row) or a JSONL file and writes one
JSON object per input row, in input order::

    {"row": 0, "sentiment": "positive", "score": 0.71, "confidence": 0.84,
     "categories": {"etf_institutional": 0.91}, "topic": {"id": 3, "label": "etf, sec, spot"},
     "story": 0}

``row`` is the 0-based data row; ``story`` is the ``row`` of the story's first article (rows
of the same story share it); a row that cannot be analysed (no text, a JSONL line that is not
an object) gets ``{"row": n, "error": "..."}`` so the output still lines up with the input.

The same :class:`models.pipeline.Analyzer` the analysis actors run scores each batch. Topics
come from the same online topic model, fed the file in time order and then applied to every
row with its final state, so that a row's topic does not depend on where it sat in the
file. Stories come from the same tracker, in time order. Rows are held in memory as their
vectors (1.5 KiB each): a million rows need about 1.5 GB.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Columns tried, in order, when no ``--text-column`` is given.
TITLE_COLUMNS = ("title", "headline")
BODY_COLUMNS = ("summary", "text", "selftext", "description", "body", "content")
TEXT_COLUMNS = ("text", "news", "headline", "content", "body", "summary", "sentence")
TIME_COLUMNS = (
    "published_at",
    "published",
    "date",
    "datetime",
    "time",
    "timestamp",
    "created_utc",
    "created_at",
)
MAX_TEXT_CHARS = 4000
CHUNK = 512

_DMY = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{4})(?: (\d{1,2}):(\d{2}))?$")


class AnalyzeError(ValueError):
    """The file cannot be analysed (unknown column, unreadable format); the message says why."""


@dataclass
class AnalyzeReport:
    rows: int = 0
    analysed: int = 0
    errors: int = 0
    seconds: float = 0.0
    topics: int = 0
    stories: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # the top ten, one line each

    def __str__(self) -> str:
        rate = self.analysed / self.seconds if self.seconds else 0.0
        text = (
            f"{self.rows} rows: {self.analysed} analysed, {self.errors} without text; "
            f"sentiment {self.labels}; {self.topics} topics; {self.stories} stories; "
            f"{self.seconds:.1f} s ({rate:.0f} rows/s)"
        )
        if self.events:
            text += "\ntop events (robust z, start..end, kind, label | keywords):\n  " + "\n  ".join(
                self.events
            )
        return text


def _day(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") if t is not None else "open"


def parse_when(value: Any) -> float | None:
    """A publication time from a cell: Unix seconds (or ms), ISO-8601, ``D-M-YYYY HH:MM``,
    ``YYYY-MM-DD``. ``None`` when empty or not a time."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = float(value)
        return v / 1000.0 if v > 1e12 else v
    text = str(value).strip()
    if not text:
        return None
    try:
        v = float(text)
        return v / 1000.0 if v > 1e12 else v
    except ValueError:
        pass
    m = _DMY.match(text)
    if m:
        d, mo, y, hh, mm = m.groups()
        return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), tzinfo=UTC).timestamp()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def read_rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any] | str]]:
    """``(columns, rows)``: each row a dict, or an error string for a line that is not one.

    Bytes that are not UTF-8 are replaced (U+FFFD), never fatal.
    """
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    head = text.lstrip()[:1]
    if path.suffix.lower() in (".jsonl", ".ndjson") or head == "{":
        return _jsonl(text)
    sample = text[:65536]
    try:
        dialect: Any = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    columns = list(reader.fieldnames or [])
    if not columns:
        raise AnalyzeError(f"{path}: empty file, or no header row")
    return columns, iter(reader)


def _jsonl(text: str) -> tuple[list[str], Iterator[dict[str, Any] | str]]:
    rows: list[dict[str, Any] | str] = []
    columns: dict[str, None] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(f"line {n}: not JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            rows.append(f"line {n}: a JSON {type(value).__name__}, not an object")
            continue
        columns.update(dict.fromkeys(value))
        rows.append(value)
    return list(columns), iter(rows)


def text_getter(columns: list[str], text_column: str | None) -> Callable[[dict[str, Any]], str]:
    """How a row becomes the text the models read (headline, then summary, as the consumers do)."""
    lower = {c.lower(): c for c in columns}
    if text_column:
        if text_column not in columns:
            raise AnalyzeError(f"no column {text_column!r}; the file has {', '.join(columns)}")
        return lambda row: _cell(row, text_column)
    title = next((lower[c] for c in TITLE_COLUMNS if c in lower), None)
    if title:
        body = next((lower[c] for c in BODY_COLUMNS if c in lower and lower[c] != title), None)

        def title_and_body(row: dict[str, Any]) -> str:
            head, rest = _cell(row, title), _cell(row, body) if body else ""
            return f"{head}. {rest}" if head and rest else head or rest

        return title_and_body
    only = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    if only is None:
        raise AnalyzeError(f"no text column found among {', '.join(columns)}; name one with --text-column")
    return lambda row: _cell(row, only)


def _cell(row: dict[str, Any], column: str) -> str:
    from cluster.records import clean_text

    value = row.get(column)
    return clean_text(
        value if isinstance(value, str | bytes) else (str(value) if value is not None else None),
        MAX_TEXT_CHARS,
    )


def analyze_file(
    path: Path,
    sink: IO[str],
    *,
    text_column: str | None = None,
    time_column: str | None = None,
    sentiment_model: str = "",
    device: str = "auto",
    backend: str = "torch",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    analyzer: Any = None,
    events_sink: IO[str] | None = None,
    burst_params: dict[str, Any] | None = None,
) -> AnalyzeReport:
    """Analyse ``path`` and write JSON lines to ``sink``; see the module docstring.

    With ``events_sink``, the burst detector also runs over the file (in time order, with
    the rows' topics and keywords) and writes one JSON line per distinct event, strongest
    first; ``burst_params`` go to :class:`models.bursts.BurstDetector` (default: daily
    windows, a 28-day baseline, at least 6 articles).
    """
    from models.bursts import dedupe_events, detect_events, keywords_of
    from models.stories import StoryTracker
    from models.topics import OnlineTopicModel

    t0 = time.perf_counter()
    columns, rows = read_rows(path)
    get_text = text_getter(columns, text_column)
    if time_column and time_column not in columns:
        raise AnalyzeError(f"no column {time_column!r}; the file has {', '.join(columns)}")
    lower = {c.lower(): c for c in columns}
    when_col = time_column or next((lower[c] for c in TIME_COLUMNS if c in lower), None)

    texts: list[str] = []
    times: list[float | None] = []
    errors: dict[int, str] = {}
    for n, row in enumerate(rows):
        if isinstance(row, str):
            errors[n] = row
            texts.append("")
            times.append(None)
            continue
        texts.append(get_text(row))
        times.append(parse_when(row.get(when_col)) if when_col else None)
        if not texts[-1]:
            errors[n] = "no text"
    report = AnalyzeReport(rows=len(texts), errors=len(errors))
    good = [i for i in range(len(texts)) if i not in errors]

    if analyzer is None:
        from models.pipeline import Analyzer

        analyzer = Analyzer(device=device, backend=backend, sentiment_model=sentiment_model, batch_size=32)
    # A missing time takes the previous row's (a file without times is one moment).
    last = 0.0
    ts: list[float] = []
    for t in times:
        last = t if t is not None else last
        ts.append(last)

    vectors = np.zeros((len(texts), analyzer.dim), dtype=np.float32)
    results: dict[int, dict[str, Any]] = {}
    for start in range(0, len(good), batch_size):
        idx = good[start : start + batch_size]
        out = analyzer.analyze([texts[i] for i in idx])
        vectors[idx] = out.vectors
        for j, i in enumerate(idx):
            results[i] = {
                "row": i,
                "sentiment": str(out.sentiment.labels[j]),
                "score": round(float(out.sentiment.scores[j]), 4),
                "confidence": round(float(out.sentiment.confidence[j]), 4),
                "categories": {k: round(float(v), 4) for k, v in out.categories[j].items()},
            }
        if progress:
            progress(min(start + batch_size, len(good)), len(good))

    # Topics: learn over the file in time order, then label every row with the final model.
    order = sorted(good, key=lambda i: (ts[i], i))
    topics = OnlineTopicModel()
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
        topics.assign([texts[i] for i in idx], vectors[idx], [ts[i] for i in idx])
        topics.learn()
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
        found = topics.assign([texts[i] for i in idx], vectors[idx], [ts[i] for i in idx], learn=False)
        for i, a in zip(idx, found, strict=True):
            results[i]["topic"] = {"id": a.topic_id, "label": a.label, "keywords": a.keywords}
    report.topics = len(topics.topics())

    # Stories, in time order; a story is named by the row of its first article.
    tracker = StoryTracker()
    story_ids = (
        tracker.assign([str(i) for i in order], vectors[order], [ts[i] for i in order]) if order else []
    )
    for i, story in zip(order, story_ids, strict=True):
        results[i]["story"] = int(story)
    report.stories = len(set(story_ids))

    if events_sink is not None:
        rows_in_time = [
            {
                "ts": ts[i],
                "article_id": str(i),
                "topic_id": results[i]["topic"]["id"],
                "topic_label": results[i]["topic"]["label"],
                "topic_keywords": results[i]["topic"]["keywords"],
                "keywords": keywords_of(texts[i]),
                "sentiment": results[i]["score"],
            }
            for i in order
        ]
        params = {"step_s": 86400, "baseline_windows": 28, "min_count": 6, **(burst_params or {})}
        events = dedupe_events(detect_events(rows_in_time, **params))
        for e in events:
            line = {**asdict(e), "examples": [int(x) for x in e.examples]}
            events_sink.write(json.dumps(line, ensure_ascii=False) + "\n")
        report.events = [
            f"{e.score:5.1f} {_day(e.start)}..{_day(e.end)} {e.kind:9s} {e.label} | "
            f"{', '.join(e.keywords[:5])} | e.g. row {e.examples[0] if e.examples else '-'}"
            for e in events[:10]
        ]

    for n in range(len(texts)):
        line = results.get(n) or {"row": n, "error": errors.get(n, "not analysed")}
        sink.write(json.dumps(line, ensure_ascii=False) + "\n")
        if "sentiment" in line:
            report.labels[line["sentiment"]] = report.labels.get(line["sentiment"], 0) + 1
    report.analysed = len(results)
    report.seconds = time.perf_counter() - t0
    return report
