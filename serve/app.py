"""The Ray Serve application: one FastAPI ingress for the API and the dashboard.

    GET /healthz                         each part's state
    GET /api/search?q=&k=&start=&end=&source=&sentiment=&category=&topic=
                                         semantic similarity over stored articles
    GET /api/news/latest?limit=          newest scored articles first
    GET /api/news?start=&end=&source=&sentiment=&category=&topic=&limit=&before=
                                         scored articles, newest first, filtered, paged
    GET /api/news/{id}                   one article
    GET /api/news/{id}/similar?k=        the stored articles most like it
    GET /api/series?start=&end=&step=    time windows: counts, sentiment, OHLC price, topic
                                         shares, category counts, stories, events
    GET /api/events?start=&end=&limit=   volume/sentiment bursts overlapping the range
    GET /api/topics                      the online topic model's topics
    GET /api/stories/{story_id}          a story's timeline (its articles, oldest first)
    GET /api/sources                     each live source's health
    GET /api/deadletters?limit=          messages that could not be processed, with the reason
    GET /api/pipeline                    each consuming stage's backlog and progress
    GET /metrics                         Prometheus text: totals and every actor's counters
    GET /api/stream?kinds=&source=&sentiment=&category=&topic=
                                         server-sent events: scored articles, aggregates, events
    GET /docs                            OpenAPI
    /dashboard                           the Panel/HoloViews dashboard (Bokeh sessions)

The FastAPI app is built by a function that runs on the replica, so it can hold the
replica's :class:`ReadService`. One replica: Bokeh sessions live in one process. The guards of
serve/security.py (token, CORS, request limits) wrap all of it, dashboard included.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BeforeValidator
from ray import serve

from cluster.aggregates import parse_step
from cluster.records import format_time
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter
from serve import security
from serve.live import StreamFilter
from serve.read import ReadService, epoch
from serve.schemas import (
    ArticlePublic,
    BucketPublic,
    DeadLetterPublic,
    DeadLettersResponse,
    ErrorResponse,
    EventPublic,
    EventsResponse,
    HealthResponse,
    NewsPage,
    NewsResponse,
    PipelineResponse,
    PipelineStage,
    SearchHitPublic,
    SearchResponse,
    SeriesFieldsResponse,
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
_ID = "^[0-9a-fA-F-]{1,64}$"
# An article id is a UUID (cluster.ids); the vector store fails on anything else.
_UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SENTIMENTS = ("negative", "neutral", "positive")
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "not stored"}}


def _article(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: payload[k] for k in _ARTICLE_KEYS if payload.get(k) is not None}


def render_metrics(totals: Any, points: int, stats: dict[str, dict[str, Any]]) -> bytes:
    """Prometheus exposition of the totals and of every numeric counter each actor reports."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    class Snapshot:
        def collect(self) -> Any:
            yield GaugeMetricFamily(
                "btcpulse_articles", "articles in the aggregates store", value=totals.articles
            )
            yield GaugeMetricFamily(
                "btcpulse_prices", "price points in the aggregates store", value=totals.prices
            )
            yield GaugeMetricFamily("btcpulse_vector_points", "points in the vector store", value=points)
            if totals.last_ts is not None:
                yield GaugeMetricFamily(
                    "btcpulse_newest_data_timestamp_seconds",
                    "publication time of the newest data",
                    value=totals.last_ts,
                )
            actor = GaugeMetricFamily(
                "btcpulse_actor_stat", "an actor's counter (see btcpulse status)", labels=["actor", "stat"]
            )
            for name, values in sorted(stats.items()):
                for key, value in sorted(values.items()):
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        actor.add_metric([name, key], float(value))
            yield actor

    registry = CollectorRegistry()
    registry.register(Snapshot())
    return bytes(generate_latest(registry))


def _not_a_number(value: Any) -> Any:
    """Times are ISO-8601, as documented: pydantic would also take "0.3" as seconds since 1970."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("an ISO-8601 time (e.g. 2022-05-11T00:00:00Z), not a number")
    return value


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    """From 1970 to 9998: a default span or bucket step around the time then stays a valid
    time (the fuzzer's ``end=0001-01-01`` minus the default 7 days was year 0: a 500)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    if not _EARLIEST <= aware < _LATEST:
        raise ValueError("a time from 1970-01-01 to 9998-12-31")
    return value


Time = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_range)]


def _canonical_id(text: str) -> str:
    """The stored form of an article id (lower-case UUID); the route's pattern let it through."""
    return str(uuid.UUID(text))


def _range(start: datetime | None, end: datetime | None) -> SearchFilter:
    s, e = epoch(start), epoch(end)
    if s is not None and e is not None and e <= s:
        raise HTTPException(status_code=422, detail="end must be after start")
    return SearchFilter(start_ts=s, end_ts=e)


def build_api(settings: BtcpulseSettings, *, load_model: bool = True) -> FastAPI:
    """Build the ingress app (runs on the replica). It reaches the actors on first use, so it
    can be built without a cluster; ``load_model=False`` also defers the query model."""
    reader = ReadService(settings, load_model=load_model)
    app = FastAPI(
        title="btcpulse",
        version="0.1.0",
        description="Live analytics of Bitcoin news against the BTC price.",
        responses=security.documented_responses(settings),
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

    @app.get("/api/search", response_model=SearchResponse, responses=NOT_FOUND)
    async def search(
        q: Annotated[str | None, Query(min_length=1, max_length=500, description="free text")] = None,
        like: Annotated[
            str | None, Query(max_length=36, pattern=_UUID, description="an article id: more like it")
        ] = None,
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        start: Time | None = None,
        end: Time | None = None,
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
        if (q is None) == (like is None):
            raise HTTPException(
                status_code=422, detail="give exactly one of q (text) or like (an article id)"
            )
        if like is not None:
            like = _canonical_id(like)
            found = await reader.similar(like, k, flt)
            if found is None:
                raise HTTPException(status_code=404, detail=f"no article {like}")
            hits = found
        else:
            hits = await reader.search(str(q), k, flt)
        return SearchResponse(results=[SearchHitPublic(**_article(h.payload), score=h.score) for h in hits])

    # Before /api/news/{article_id}, which would otherwise take "latest" for an id.
    @app.get("/api/news/latest", response_model=NewsResponse)
    async def latest(
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        source: Annotated[str | None, Query(max_length=64)] = None,
    ) -> NewsResponse:
        rows = await reader.latest(limit, SearchFilter(source=source) if source else None)
        return NewsResponse(results=[ArticlePublic(**_article(r)) for r in rows])

    @app.get("/api/news", response_model=NewsPage)
    async def news(
        start: Time | None = None,
        end: Time | None = None,
        before: Annotated[
            Time | None,
            Query(description="at or before this time; the next_before of the previous page"),
        ] = None,
        source: Annotated[str | None, Query(max_length=64)] = None,
        sentiment: Annotated[str | None, Query(pattern="^(negative|neutral|positive)$")] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        topic: Annotated[int | None, Query(ge=-1)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> NewsPage:
        rng = _range(start, end)
        end_ts = rng.end_ts
        if before is not None:  # "at or before": times are kept to the millisecond
            b = float(epoch(before) or 0.0) + 0.0005
            end_ts = b if end_ts is None or b < end_ts else end_ts
        flt = SearchFilter(
            start_ts=rng.start_ts,
            end_ts=end_ts,
            source=source,
            sentiment_label=sentiment,
            category=category,
            topic_id=topic,
        )
        rows = await reader.latest(limit, flt)
        next_before = None
        if len(rows) == limit:
            # The articles of the page's oldest instant go to the next page whole (the cursor is
            # inclusive), so none is skipped or shown twice; unless the whole page is one instant.
            last = rows[-1]["published_ts"]
            head = [r for r in rows if r["published_ts"] != last]
            if head:
                rows, next_before = head, rows[-1]["published_at"]
            else:
                next_before = format_time(last - 0.001)
        return NewsPage(results=[ArticlePublic(**_article(r)) for r in rows], next_before=next_before)

    @app.get("/api/news/{article_id}", response_model=ArticlePublic, responses=NOT_FOUND)
    async def article(article_id: Annotated[str, Path(max_length=36, pattern=_UUID)]) -> ArticlePublic:
        article_id = _canonical_id(article_id)
        rows = await reader.retrieve([article_id])
        if not rows:
            raise HTTPException(status_code=404, detail=f"no article {article_id}")
        return ArticlePublic(**_article(rows[0]))

    @app.get("/api/news/{article_id}/similar", response_model=SearchResponse, responses=NOT_FOUND)
    async def similar(
        article_id: Annotated[str, Path(max_length=36, pattern=_UUID)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        start: Time | None = None,
        end: Time | None = None,
    ) -> SearchResponse:
        article_id = _canonical_id(article_id)
        found = await reader.similar(article_id, k, _range(start, end))
        if found is None:
            raise HTTPException(status_code=404, detail=f"no article {article_id}")
        return SearchResponse(results=[SearchHitPublic(**_article(h.payload), score=h.score) for h in found])

    @app.get(
        "/api/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    )
    async def stream(
        request: Request,
        kinds: Annotated[
            str, Query(max_length=64, pattern="^(article|aggregate|event)(,(article|aggregate|event))*$")
        ] = "article,aggregate,event",
        source: Annotated[str | None, Query(max_length=64)] = None,
        sentiment: Annotated[str | None, Query(pattern="^(negative|neutral|positive)$")] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        topic: Annotated[int | None, Query(ge=-1)] = None,
    ) -> StreamingResponse:
        """Live updates as they are written: ``event: article|aggregate|event``, ``data: {json}``
        (the records as on their topics); a comment line every 15 s keeps proxies from closing
        an idle stream. Filters apply to articles."""
        flt = StreamFilter(frozenset(kinds.split(",")), source, sentiment, category, topic)
        sub = reader.live().subscribe(flt)

        async def events() -> Any:
            try:
                yield ": btcpulse live stream\n\n"
                while not await request.is_disconnected():
                    try:
                        update = await asyncio.wait_for(sub.queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield update.sse()
            finally:
                sub.close()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        totals = await reader.totals()
        stats = await reader.actor_stats()
        live = reader.live()
        stats["serve-live-feed"] = {**live.stats, "subscribers": live.subscribers}
        body = render_metrics(totals, await reader.count(), stats)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/api/series",
        response_model=SeriesResponse | SeriesFieldsResponse,
        description="With `fields`, each bucket holds `start` and the fields named (SeriesFieldsResponse).",
    )
    async def series(
        start: Time | None = None,
        end: Time | None = None,
        step: Annotated[str, Query(max_length=8, description="1m, 5m, 15m, 1h, 6h, 1d ...")] = "1h",
        fields: Annotated[
            str | None,
            Query(
                max_length=300,
                description="comma-separated bucket fields to return (start is always returned); "
                "default: all",
            ),
        ] = None,
    ) -> SeriesResponse | JSONResponse:
        try:
            step_s = parse_step(step)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        chosen = None
        if fields is not None:
            chosen = {"start", *(f.strip() for f in fields.split(",") if f.strip())}
            unknown = sorted(chosen - set(BucketPublic.model_fields))
            if unknown:
                known = ", ".join(BucketPublic.model_fields)
                raise HTTPException(status_code=422, detail=f"unknown fields {unknown}; known: {known}")
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
        body = SeriesResponse(
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
                    sources=w.sources,
                    source_counts=w.source_counts,
                )
                for w in windows
            ],
        )
        if chosen is None:
            return body
        # only the chosen fields of each bucket (a narrower answer for long ranges)
        return JSONResponse(
            body.model_dump(
                include={"start": True, "end": True, "step": True, "buckets": {"__all__": chosen}}
            )
        )

    @app.get("/api/events", response_model=EventsResponse)
    async def events(
        start: Time | None = None,
        end: Time | None = None,
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

    @app.get("/api/stories/{story_id}", response_model=StoryResponse, responses=NOT_FOUND)
    async def story(
        story_id: Annotated[str, Path(min_length=1, max_length=64, pattern=_ID)],
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

    @app.get("/api/pipeline", response_model=PipelineResponse)
    async def pipeline() -> PipelineResponse:
        """Each consuming stage: broker backlog, unacknowledged, processed, last batch time."""
        rows = await reader.pipeline()
        return PipelineResponse(
            stages=[
                PipelineStage(
                    **{
                        **r,
                        "last_batch_at": format_time(r["last_batch_at"]) if r["last_batch_at"] else None,
                    }
                )
                for r in rows
            ]
        )

    @app.get("/api/deadletters", response_model=DeadLettersResponse)
    async def deadletters(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DeadLettersResponse:
        letters = await reader.deadletters(limit)
        return DeadLettersResponse(results=[DeadLetterPublic(**d.to_dict()) for d in letters])

    _mount_dashboard(app, reader, settings)
    security.install(app, settings)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """A 422 is either FastAPI's list of validation errors or a route's own message."""
    plain = {"$ref": "#/components/schemas/ErrorResponse"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
                "ErrorResponse", ErrorResponse.model_json_schema()
            )
            for operations in schema["paths"].values():
                for op in operations.values():
                    content = op.get("responses", {}).get("422", {}).get("content", {})
                    body = content.get("application/json")
                    if body is not None:
                        body["schema"] = {"anyOf": [body["schema"], plain]}
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_dashboard(app: FastAPI, reader: ReadService, settings: BtcpulseSettings) -> None:
    from panel.io.fastapi import add_applications

    from ui.dashboard import create_dashboard

    def session() -> Any:
        # A plain function: Panel calls it once per browser session.
        return create_dashboard(reader)

    # With direct ingress the page may also come through Serve's proxy (cluster.serve_ingress).
    ports = {settings.api_port, settings.proxy_port} if settings.serve_direct_ingress else {settings.api_port}
    hosts = ("127.0.0.1", "localhost", settings.bind_host)
    origins = [f"{host}:{port}" for host in hosts for port in ports]
    add_applications(
        {"/dashboard": session},
        app=app,
        title="btcpulse",
        websocket_origin=sorted(set(origins)),
    )
    # The dashboard's page and resources are HTML and files, not part of the JSON API.
    for route in app.routes:
        if isinstance(route, APIRoute) and not route.path.startswith(("/api/", "/healthz", "/metrics")):
            route.include_in_schema = False


def build_application(settings: BtcpulseSettings, *, direct_ingress: bool = False) -> Any:
    """The bound Serve application (``serve.run`` target). With ``direct_ingress`` the replica
    answers on the API port itself (:mod:`cluster.serve_ingress`): it runs on the head node,
    whose address the API has."""
    from actors.common import on_head

    def builder() -> FastAPI:
        # Serve calls a plain function on the replica (a functools.partial would be taken
        # for an ASGI app).
        return build_api(settings)

    pinned = {"resources": on_head()} if direct_ingress else {}

    @serve.deployment(
        name="ingress",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0, **pinned},
        max_ongoing_requests=200,
        logging_config={"enable_access_log": settings.serve_access_log},
    )
    @serve.ingress(builder)
    class Ingress:
        """FastAPI + dashboard ingress; the routes live in :func:`build_api`."""

    return Ingress.bind()  # type: ignore[attr-defined]
