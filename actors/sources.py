"""Source actors (producers). For now: the replay source.

    files (news CSV / reddit CSV / JSONL / hourly prices)
      -> read_file + merge_by_time     ReplayRow(ts, line, NewsItem | PriceTick), oldest first
      -> clip to [start, end)
      -> ReplayClock(speed)            speed 0: as fast as possible; 60: 60x real time
      -> news.raw / prices             producer names fixed per run, sequence id = row ordinal,
                                       so the broker drops what a restarted run sends again
      -> checkpoint                    every few hundred rows, after the broker confirmed them

A restarted replay actor reads its checkpoint and goes on from there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from actors.common import ACTOR_OPTIONS, BatchSender, supervised_thread
from actors.replay import ReplayClock, ReplayReport, ReplayRow, clip, merge_by_time, read_file
from cluster.records import NewsItem
from cluster.settings import BtcpulseSettings
from cluster.topics import Topics, connect, create_producer

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 500
ALIGN_MARGIN_S = 3600.0


def load_rows(
    paths: list[Path],
    *,
    start: float | None,
    end: float | None,
    limit: int | None,
    settings: BtcpulseSettings,
) -> tuple[list[ReplayRow], list[ReplayReport]]:
    """Every row of ``paths`` in time order, clipped to ``[start, end)``; at most ``limit``
    news rows (and the prices up to the last of them).

    When news and prices are replayed together and no ``start`` is given, the replay starts
    an hour before the first news item, so years of older prices do not delay the news;
    likewise it ends an hour after the last news item unless ``end`` is given.
    """
    reports = [ReplayReport() for _ in paths]
    streams = [
        read_file(
            p,
            report=r,
            max_title_chars=settings.max_title_chars,
            max_summary_chars=settings.max_summary_chars,
        )
        for p, r in zip(paths, reports, strict=True)
    ]
    rows = list(merge_by_time(*streams))
    news_times = [row.ts for row in rows if isinstance(row.record, NewsItem)]
    if news_times and len(news_times) < len(rows):
        start = start if start is not None else news_times[0] - ALIGN_MARGIN_S
        end = end if end is not None else news_times[-1] + ALIGN_MARGIN_S
    rows = list(clip(rows, start, end))
    if limit is not None:
        news_seen = 0
        for i, row in enumerate(rows):
            if isinstance(row.record, NewsItem):
                news_seen += 1
                if news_seen == limit:
                    rows = rows[: i + 1]
                    break
    return rows, reports


@dataclass
class ReplayProgress:
    total: int
    sent: int = 0
    news: int = 0
    prices: int = 0
    done: bool = False
    reports: list[str] = field(default_factory=list)


class ReplayPublisher:
    """Publishes rows to Pulsar at a chosen speed; resumable from a checkpoint file."""

    def __init__(self, settings: BtcpulseSettings, run_id: str) -> None:
        self._settings = settings
        self._run_id = run_id
        self._checkpoint = settings.state_dir / "replay" / f"{run_id}.json"

    def _load_checkpoint(self) -> int:
        try:
            return int(json.loads(self._checkpoint.read_text())["sent"])
        except (OSError, ValueError, KeyError):
            return 0

    def _save_checkpoint(self, sent: int, done: bool) -> None:
        self._checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sent": sent, "done": done}))
        tmp.replace(self._checkpoint)

    def run(
        self,
        rows: list[ReplayRow],
        speed: float,
        progress: ReplayProgress,
        stop: threading.Event,
        on_row: Callable[[int], None] | None = None,
        pace_from: float | None = None,
    ) -> None:
        """Publish ``rows[checkpoint:]``; rows before ``pace_from`` go out at full speed (the
        history a dashboard opens on), later ones at ``speed``."""
        topics = Topics.from_settings(self._settings)
        client = connect(self._settings)
        try:
            news = BatchSender(create_producer(client, topics.news_raw, name=f"replay-{self._run_id}-news"))
            prices = BatchSender(create_producer(client, topics.prices, name=f"replay-{self._run_id}-prices"))
            resume = self._load_checkpoint()
            progress.sent = resume
            clock: ReplayClock | None = None
            for ordinal in range(resume, len(rows)):
                row = rows[ordinal]
                paced = speed > 0 and (pace_from is None or row.ts >= pace_from)
                if paced and clock is None:
                    clock = ReplayClock(speed, row.ts)
                if clock is not None and not clock.wait_for(row.ts, stop):
                    break
                if isinstance(row.record, NewsItem):
                    news.send(row.record, key=row.record.id, sequence_id=ordinal)
                    progress.news += 1
                else:
                    prices.send(row.record, sequence_id=ordinal)
                    progress.prices += 1
                progress.sent = ordinal + 1
                if on_row is not None:
                    on_row(ordinal + 1)
                # Waiting for the broker each row would cap speed; checkpoint in chunks, and
                # also whenever the replay is paced (a slow stream stays fresh on screen).
                if progress.sent % CHECKPOINT_EVERY == 0 or paced:
                    news.wait()
                    prices.wait()
                    self._save_checkpoint(progress.sent, False)
            news.wait()
            prices.wait()
            progress.done = progress.sent == len(rows)
            self._save_checkpoint(progress.sent, progress.done)
        finally:
            client.close()


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class ReplaySource:
    """A replay as a supervised actor (``btcpulse up --replay``)."""

    def __init__(
        self,
        settings: BtcpulseSettings,
        paths: list[str],
        speed: float,
        run_id: str,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
        pace_from: float | None = None,
    ) -> None:
        self._stop = threading.Event()
        rows, reports = load_rows(
            [Path(p) for p in paths], start=start, end=end, limit=limit, settings=settings
        )
        self._progress = ReplayProgress(total=len(rows), reports=[r.summary() for r in reports])
        for path, report in zip(paths, reports, strict=True):
            log.info("replay %s: %s", path, report.summary())
        publisher = ReplayPublisher(settings, run_id)
        self._thread = supervised_thread(
            lambda: publisher.run(rows, speed, self._progress, self._stop, pace_from=pace_from),
            f"replay-{run_id}",
        )

    def progress(self) -> dict[str, Any]:
        p = self._progress
        return {
            "total": p.total,
            "sent": p.sent,
            "news": p.news,
            "prices": p.prices,
            "done": p.done,
            "reports": p.reports,
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
