"""Public request/response schemas of the HTTP API (kept apart from the topic records)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ArticlePublic(BaseModel):
    id: str
    title: str
    url: str
    source: str
    published_at: str
    sentiment: float = Field(description="-1 (negative) to 1 (positive)")
    sentiment_label: str


class SearchHitPublic(ArticlePublic):
    score: float = Field(description="cosine similarity of the article to the query")


class SearchResponse(BaseModel):
    results: list[SearchHitPublic]


class NewsResponse(BaseModel):
    results: list[ArticlePublic]


class BucketPublic(BaseModel):
    start: str
    count: int
    sentiment_mean: float | None
    positive: int
    neutral: int
    negative: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None


class SeriesResponse(BaseModel):
    start: str
    end: str
    step: str
    buckets: list[BucketPublic]


class SourcePublic(BaseModel):
    """One live source's health: counters since its collector started."""

    name: str
    kind: str
    enabled: bool
    fetched: int = Field(0, description="entries seen in the source's responses")
    new: int = Field(0, description="items published (each once)")
    duplicates: int = 0
    rejected: int = 0
    filtered: int = 0
    errors: int = Field(0, description="failed polls")
    last_status: int | str | None = None
    last_poll_at: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    next_poll_at: str | None = None
    consecutive_failures: int = 0


class SourcesResponse(BaseModel):
    sources: list[SourcePublic]


class DeadLetterPublic(BaseModel):
    topic: str
    message_id: str
    reason: str
    payload: str = Field(description="the original message, UTF-8 with replacement, at most 64 KiB")
    redeliveries: int
    failed_at: str


class DeadLettersResponse(BaseModel):
    results: list[DeadLetterPublic]


class HealthResponse(BaseModel):
    status: str = Field(description="ok when every part answered, degraded otherwise")
    parts: dict[str, str]
    articles: int | None = None
    prices: int | None = None
    first_at: str | None = None
    last_at: str | None = None
