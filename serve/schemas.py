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


class HealthResponse(BaseModel):
    status: str = Field(description="ok when every part answered, degraded otherwise")
    parts: dict[str, str]
    articles: int | None = None
    prices: int | None = None
    first_at: str | None = None
    last_at: str | None = None
