"""The Ray Serve application: one FastAPI ingress for the API and the dashboard.

    GET /healthz                         each part's state
    GET /api/search?q=&k=&start=&end=&source=&sentiment=&category=&topic=
                                         semantic similarity over stored articles
    GET /api/news/latest?limit=          newest scored articles first
    GET /api/series?start=&end=&step=    time windows: counts, sentiment, OHLC price, topic
                                         shares, category counts, stories, events
    GET /api/events?start=&end=&limit=   volume/sentiment bursts overlapping the range
    GET /api/topics                      the online topic model's topics
    GET /api/stories/{story_id}          a story's timeline (its articles, oldest first)
    GET /api/sources                     each live source's health
    GET /api/deadletters?limit=          messages that could not be processed, with the reason
    GET /docs                            OpenAPI
    /dashboard                           the Panel/HoloViews dashboard (Bokeh sessions)

The FastAPI app is built by a function that runs on the replica, so it can hold the
replica's :class:`ReadService`. One replica: Bokeh sessions live in one process.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query
from ray import serve

from cluster.aggregates import parse_step
from cluster.records import format_time
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter
from serve.read import ReadService, epoch
from serve.schemas import (
    ArticlePublic,
    BucketPublic,
    DeadLetterPublic,
    DeadLettersResponse,
    EventPublic,
    EventsResponse,
    HealthResponse,
    NewsResponse,
    SearchHitPublic,
    SearchResponse,
    SeriesResponse,
    SourcePublic,
    SourcesResponse,
    StoryResponse,
    TopicPublic,
    TopicsResponse,
)

log = logging.getLogger(__name__)

APP_NAME = "btcpulse"
DEFAULT_SPAN = timedelta(hours=24)


_ARTICLE_KEYS = tuple(ArticlePublic.model_fields)
SENTIMENTS = ("negative", "neutral", "positive")


def _article(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: payload[k] for k in _ARTICLE_KEYS if payload.get(k) is not None}


def _range(start: datetime | None, end: datetime | None) -> SearchFilter:
    s, e = epoch(start), epoch(end)
    if s is not None and e is not None and e <= s:
        raise HTTPException(status_code=422, detail="end must be after start")
    return SearchFilter(start_ts=s, end_ts=e)


def build_api(settings: BtcpulseSettings) -> FastAPI:
    """Build the ingress app (runs on the replica)."""
    reader = ReadService(settings)
    app = FastAPI(
        title="btcpulse",
        version="0.1.0",
        description="Live analytics of Bitcoin news against the BTC price.",
    )

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        parts: dict[str, str] = {}
        totals = None
        try:
            totals = await reader.totals()
            parts["aggregator"] = "ok"
        except Exception as exc:  # report, never fail the health check itself
            parts["aggregator"] = f"error: {type(exc).__name__}"
        try:
            await reader.count()
            parts["vector-store"] = "ok"
        except Exception as exc:
            parts["vector-store"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in parts.values())
        return HealthResponse(
            status="ok" if ok else "degraded",
            parts=parts,
            articles=totals.articles if totals else None,
            prices=totals.prices if totals else None,
            first_at=format_time(totals.first_ts) if totals and totals.first_ts is not None else None,
            last_at=format_time(totals.last_ts) if totals and totals.last_ts is not None else None,
        )

    @app.get("/api/search", response_model=SearchResponse)
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=500, description="free text")],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        start: datetime | None = None,
        end: datetime | None = None,
        source: Annotated[str | None, Query(max_length=64)] = None,
        sentiment: Annotated[str | None, Query(pattern="^(negative|neutral|positive)$")] = None,
        category: Annotated[str | None, Query(max_length=64, description="e.g. regulation")] = None,
        topic: Annotated[int | None, Query(ge=-1, description="topic id (GET /api/topics)")] = None,
    ) -> SearchResponse:
        rng = _range(start, end)
        flt = SearchFilter(
            start_ts=rng.start_ts,
            end_ts=rng.end_ts,
            source=source,
            sentiment_label=sentiment,
            category=category,
            topic_id=topic,
        )
        hits = await reader.search(q, k, flt)
        return SearchResponse(results=[SearchHitPublic(**_article(h.payload), score=h.score) for h in hits])

    @app.get("/api/news/latest", response_model=NewsResponse)
    async def latest(
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        source: Annotated[str | None, Query(max_length=64)] = None,
    ) -> NewsResponse:
        rows = await reader.latest(limit, SearchFilter(source=source) if source else None)
        return NewsResponse(results=[ArticlePublic(**_article(r)) for r in rows])

    @app.get("/api/series", response_model=SeriesResponse)
    async def series(
        start: datetime | None = None,
        end: datetime | None = None,
        step: Annotated[str, Query(max_length=8, description="1m, 5m, 15m, 1h, 6h, 1d ...")] = "1h",
    ) -> SeriesResponse:
        try:
            step_s = parse_step(step)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        s, e = epoch(start), epoch(end)
        if e is None:
            totals = await reader.totals()
            e = (totals.last_ts + 1) if totals.last_ts is not None else datetime.now(UTC).timestamp()
        if s is None:
            s = e - DEFAULT_SPAN.total_seconds()
        if e <= s:
            raise HTTPException(status_code=422, detail="end must be after start")
        try:
            windows = await reader.series(s, e, step_s)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return SeriesResponse(
            start=format_time(s),
            end=format_time(e),
            step=step,
            buckets=[
                BucketPublic(
                    start=w.start,
                    count=w.count,
                    sentiment_mean=w.sentiment_mean,
                    positive=w.positive,
                    neutral=w.neutral,
                    negative=w.negative,
                    open=w.open,
                    high=w.high,
                    low=w.low,
                    close=w.close,
                    topics=w.topics,
                    topic_counts=w.topic_counts,
                    categories=w.categories,
                    category_counts=w.category_counts,
                    stories=w.stories,
                    events=w.events,
                )
                for w in windows
            ],
        )

    @app.get("/api/events", response_model=EventsResponse)
    async def events(
        start: datetime | None = None,
        end: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        distinct: Annotated[
            bool, Query(description="one event per happening (a crash bursts on several keys at once)")
        ] = True,
    ) -> EventsResponse:
        s, e = epoch(start), epoch(end)
        if e is None:
            totals = await reader.totals()
            e = (totals.last_ts + 1) if totals.last_ts is not None else datetime.now(UTC).timestamp()
        if s is None:
            s = e - 7 * DEFAULT_SPAN.total_seconds()
        if e <= s:
            raise HTTPException(status_code=422, detail="end must be after start")
        found = await reader.events(s, e, limit, distinct)
        ids = sorted({i for ev in found for i in ev.examples})
        by_id = {p["id"]: p for p in await reader.retrieve(ids)} if ids else {}
        return EventsResponse(
            start=format_time(s),
            end=format_time(e),
            results=[
                EventPublic(
                    **{
                        **ev.to_dict(),
                        "examples": [ArticlePublic(**_article(by_id[i])) for i in ev.examples if i in by_id],
                    }
                )
                for ev in found
            ],
        )

    @app.get("/api/topics", response_model=TopicsResponse)
    async def topics() -> TopicsResponse:
        return TopicsResponse(results=[TopicPublic(**t) for t in await reader.topics()])

    @app.get("/api/stories/{story_id}", response_model=StoryResponse)
    async def story(
        story_id: Annotated[str, Path(min_length=1, max_length=64, pattern="^[0-9a-fA-F-]+$")],
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> StoryResponse:
        rows = await reader.timeline(story_id, limit)
        if not rows:
            raise HTTPException(status_code=404, detail=f"no story {story_id}")
        return StoryResponse(story_id=story_id, timeline=[ArticlePublic(**_article(r)) for r in rows])

    @app.get("/api/sources", response_model=SourcesResponse)
    async def sources() -> SourcesResponse:
        fields = SourcePublic.model_fields
        rows = [{k: v for k, v in row.items() if k in fields} for row in await reader.sources()]
        return SourcesResponse(sources=[SourcePublic(**row) for row in rows])

    @app.get("/api/deadletters", response_model=DeadLettersResponse)
    async def deadletters(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DeadLettersResponse:
        letters = await reader.deadletters(limit)
        return DeadLettersResponse(results=[DeadLetterPublic(**d.to_dict()) for d in letters])

    _mount_dashboard(app, reader, settings)
    return app


def _mount_dashboard(app: FastAPI, reader: ReadService, settings: BtcpulseSettings) -> None:
    from panel.io.fastapi import add_applications

    from ui.dashboard import create_dashboard

    def session() -> Any:
        # A plain function: Panel calls it once per browser session.
        return create_dashboard(reader)

    origins = [f"{host}:{settings.api_port}" for host in ("127.0.0.1", "localhost", settings.bind_host)]
    add_applications(
        {"/dashboard": session},
        app=app,
        title="btcpulse",
        websocket_origin=sorted(set(origins)),
    )


def build_application(settings: BtcpulseSettings) -> Any:
    """The bound Serve application (``serve.run`` target)."""

    def builder() -> FastAPI:
        # Serve calls a plain function on the replica (a functools.partial would be taken
        # for an ASGI app).
        return build_api(settings)

    @serve.deployment(
        name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200
    )
    @serve.ingress(builder)
    class Ingress:
        """FastAPI + dashboard ingress; the routes live in :func:`build_api`."""

    return Ingress.bind()  # type: ignore[attr-defined]
