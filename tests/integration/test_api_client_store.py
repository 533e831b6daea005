"""The API's checks on a stack whose vectors go through qdrant-client (cluster.vectors'
ClientVectorStore: the code a Qdrant server is reached by) instead of the embedded qdrant-edge.

No Qdrant server runs here, so the stack's QDRANT_URL is ``path:qdrant-client``: qdrant-client's
in-process mode kept in a directory under the state dir. Its own stack (tests.conftest's
client_store_stack, on TEST_PORTS + 500), a small real slice (the first 450 news rows in time:
two sources, and enough for the topic model's first fit at 400), and the assertions test_pipeline
makes (api_checks), with a few more. Its API is served through Serve's proxy (direct ingress off),
so those checks cover both ways HTTP reaches the API."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from cluster.local.process import stack_processes
from tests.integration import api_checks as checks

pytestmark = pytest.mark.integration

N_NEWS = 450


@pytest.fixture(scope="module")
def stack(client_store_stack):
    """Every check of this module runs on the client-store stack (never the session's)."""
    return client_store_stack


@pytest.fixture(scope="module")
def replayed(stack, news_csv: Path, prices_csv: Path):
    return checks.replay_and_wait(stack, news_csv, prices_csv, N_NEWS)


def test_vectors_live_in_the_client_store(stack, replayed) -> None:
    local = stack.state_dir / "qdrant-client"
    meta = json.loads((local / "meta.json").read_text())
    assert "news" in meta["collections"]
    assert not (stack.state_dir / "qdrant").exists(), "the embedded store must stay unused"
    health = stack.get("/healthz").json()
    assert health["parts"]["vector-store"] == "ok" and health["articles"] == N_NEWS


def test_every_article_is_searchable_and_counted(stack, replayed) -> None:
    checks.check_every_article_is_searchable_and_counted(stack, N_NEWS)


def test_articles_carry_every_analysis(stack, replayed) -> None:
    checks.check_articles_carry_every_analysis(stack, N_NEWS)


def test_news_pages_cover_every_article_once(stack, replayed) -> None:
    checks.check_news_pages_cover_every_article_once(stack, N_NEWS)


def test_news_filters_by_time_category_and_topic(stack, replayed) -> None:
    checks.check_news_filters_by_time_category_and_topic(stack, N_NEWS)


def test_topical_query_finds_topical_articles(stack, replayed) -> None:
    checks.check_topical_query_finds_topical_articles(stack)


def test_search_filters_by_time_and_source(stack, replayed) -> None:
    checks.check_search_filters_by_time_and_source(stack, N_NEWS)


def test_search_filters_by_sentiment_and_all_at_once(stack, replayed) -> None:
    checks.check_search_filters_by_sentiment_and_combined(stack, N_NEWS)


def test_category_filter_and_counts(stack, replayed) -> None:
    checks.check_category_filter_and_counts(stack, N_NEWS)


def test_article_and_similar_articles(stack, replayed) -> None:
    checks.check_article_and_similar_articles(stack)


def test_series_fields_narrow_the_buckets_and_openapi_lists_every_endpoint(stack, replayed) -> None:
    checks.check_series_fields_and_openapi(stack)


def test_events_endpoint(stack, replayed) -> None:
    checks.check_events(stack)


def test_sources_endpoint(stack, replayed) -> None:
    checks.check_sources_without_live_collectors(stack)


def test_bad_parameters_are_client_errors(stack) -> None:
    checks.check_bad_parameters_are_client_errors(stack)


def test_topic_model_learns_readable_topics(stack, replayed) -> None:
    topics = checks.check_readable_topics(stack)
    assert topics


def _stored(stack) -> int | None:
    """Articles the API lists now (None while the store does not answer)."""
    response = stack.get("/api/news/latest", limit=500)
    return len(response.json()["results"]) if response.status_code == 200 else None


def test_a_restarted_vector_store_keeps_its_points(stack, replayed) -> None:
    """The directory outlives the actor: killed, Ray restarts it and it opens the same data."""
    ids_before = {a["id"] for a in checks.latest(stack, N_NEWS)}
    pids = [
        pid
        for pid, cmd in stack_processes(stack.state_dir).items()
        if cmd[0].startswith(b"ray::VectorStoreActor")
    ]
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    stack.wait_for(
        "the vector store to come back",
        lambda: (
            pids[0] not in stack_processes(stack.state_dir)
            and stack.get("/healthz").json()["parts"]["vector-store"] == "ok"
            and _stored(stack) == N_NEWS
        ),
        timeout=180,
    )
    assert {a["id"] for a in checks.latest(stack, N_NEWS)} == ids_before
    checks.check_article_and_similar_articles(stack)


def test_with_direct_ingress_off_the_proxy_serves_the_api_port(stack, replayed) -> None:
    settings = stack.settings()
    assert not settings.serve_direct_ingress
    assert stack.get("/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):  # nothing listens on the proxy's other port
        httpx.get(f"http://127.0.0.1:{settings.proxy_port}/healthz", timeout=5)
