"""Public request/response schemas of the HTTP API (kept apart from the topic records)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ArticlePublic(BaseModel):
    id: str
    title: str
    url: str
    source: str
    published_at: str
    sentiment: float = Field(description="-1 (negative) to 1 (positive)")
    sentiment_label: str
    confidence: float = Field(0.0, description="of the sentiment label, 0 to 1")
    categories: list[str] = Field(default_factory=list, description="best first")
    category_scores: list[float] = Field(default_factory=list, description="same order as categories")
    topic_id: int = Field(-1, description="-1: not assigned")
    topic_label: str = ""
    story_id: str = Field("", description="articles of the same story share it (GET /api/stories/{id})")


class SearchHitPublic(ArticlePublic):
    score: float = Field(description="cosine similarity of the article to the query")


class SearchResponse(BaseModel):
    results: list[SearchHitPublic]


class NewsResponse(BaseModel):
    results: list[ArticlePublic]


class NewsPage(BaseModel):
    results: list[ArticlePublic] = Field(description="newest first")
    next_before: str | None = Field(
        description="pass as before= for the next page; null when this page is the last"
    )


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
    topics: list[int] = Field(default_factory=list, description="topic ids, largest first")
    topic_counts: list[int] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    category_counts: list[int] = Field(default_factory=list)
    stories: int = Field(0, description="distinct stories among the window's articles")
    events: int = Field(0, description="events that started in the window")
    sources: list[str] = Field(default_factory=list, description="sources seen in the window, largest first")
    source_counts: list[int] = Field(default_factory=list)


class SeriesResponse(BaseModel):
    start: str
    end: str
    step: str
    buckets: list[BucketPublic]


class BucketFields(BaseModel):
    """A bucket narrowed by ``fields=``: ``start`` and any of BucketPublic's other fields."""

    model_config = ConfigDict(extra="forbid")

    start: str
    count: int | None = None
    sentiment_mean: float | None = None
    positive: int | None = None
    neutral: int | None = None
    negative: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    topics: list[int] | None = None
    topic_counts: list[int] | None = None
    categories: list[str] | None = None
    category_counts: list[int] | None = None
    stories: int | None = None
    events: int | None = None
    sources: list[str] | None = None
    source_counts: list[int] | None = None


class SeriesFieldsResponse(BaseModel):
    start: str
    end: str
    step: str
    buckets: list[BucketFields]


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


class EventPublic(BaseModel):
    """A volume or sentiment burst on a topic or keyword (robust z-score over a moving baseline)."""

    id: str
    kind: str = Field(description="volume or sentiment")
    key: str = Field(description="topic:<id> or kw:<keyword>")
    label: str
    keywords: list[str]
    start: str
    peak: str
    end: str | None = Field(description="null while the event is still open")
    peak_value: float = Field(description="articles per window (volume) or mean sentiment at the peak")
    baseline: float
    score: float
    examples: list[ArticlePublic] = Field(description="example articles")


class EventsResponse(BaseModel):
    start: str
    end: str
    results: list[EventPublic]


class TopicPublic(BaseModel):
    id: int
    label: str
    keywords: list[str]
    size: int = Field(description="documents the model has assigned to it")
    created_at: float


class TopicsResponse(BaseModel):
    results: list[TopicPublic]


class StoryResponse(BaseModel):
    story_id: str
    timeline: list[ArticlePublic] = Field(description="the story's articles, oldest first")


class PipelineStage(BaseModel):
    stage: str = Field(description="analysis or aggregator")
    actors: int = Field(description="actors of the stage answering")
    backlog: int | None = Field(description="messages its subscription has not acknowledged (null: unknown)")
    unacked: int | None = Field(description="delivered, not yet acknowledged")
    processed: int = Field(description="messages processed since the actors started")
    batches: int = Field(default=0, description="batches processed since the actors started")
    last_batch_at: str | None = Field(description="when the stage last finished a batch")
    seconds: dict[str, float] = Field(
        default_factory=dict,
        description="where its batches' time went since its actors started, summed over them "
        "(analysis: models, topics, store, publish, ack)",
    )


class PipelineResponse(BaseModel):
    stages: list[PipelineStage]


class ErrorResponse(BaseModel):
    """A refused request (404, 401, 413, 414, and the 422s the routes raise themselves)."""

    detail: str
