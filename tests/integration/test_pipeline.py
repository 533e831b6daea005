"""End to end on the real stack: replay real news and prices through Pulsar, the Ray
consumers, Qdrant and the aggregates, and read everything back through the HTTP API."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from cluster.pulsar_admin import topic_stats
from cluster.topics import Topics
from tests.integration import api_checks as checks

pytestmark = pytest.mark.integration

N_NEWS = 500


@pytest.fixture(scope="module")
def replayed(stack, news_csv: Path, prices_csv: Path):
    return checks.replay_and_wait(stack, news_csv, prices_csv, N_NEWS)


def test_every_article_is_searchable_and_counted(stack, replayed) -> None:
    checks.check_every_article_is_searchable_and_counted(stack, N_NEWS)


def test_topical_query_finds_topical_articles(stack, replayed) -> None:
    checks.check_topical_query_finds_topical_articles(stack)


def test_concurrent_searches_match_lone_ones(stack, replayed) -> None:
    checks.check_concurrent_searches_match_lone_ones(stack)


def test_search_filters_by_time_and_source(stack, replayed) -> None:
    checks.check_search_filters_by_time_and_source(stack, N_NEWS)


def test_series_fields_narrow_the_buckets_and_openapi_lists_every_endpoint(stack, replayed) -> None:
    checks.check_series_fields_and_openapi(stack)


def test_bad_parameters_are_client_errors(stack) -> None:
    checks.check_bad_parameters_are_client_errors(stack)


def test_replaying_the_same_rows_changes_no_count(stack, replayed, news_csv: Path, prices_csv: Path) -> None:
    ids_before = {a["id"] for a in stack.get("/api/news/latest", limit=N_NEWS).json()["results"]}
    raw_topic = Topics.from_settings(stack.settings()).news_raw.name
    received_before = topic_stats(stack.settings(), raw_topic)["msgInCounter"]
    before = (stack.get("/healthz").json(), checks.series_totals(stack))
    done = stack.cli("replay", str(news_csv), str(prices_csv), "--limit", str(N_NEWS))
    assert f"published {N_NEWS} news" in done.stdout
    # The second run publishes under new producer names, so the broker delivers every message
    # again; only the consumers' idempotent writes keep the counts.
    stack.wait_for("the pipeline to drain", stack.drained, timeout=600)
    received = topic_stats(stack.settings(), raw_topic)["msgInCounter"]
    assert received == received_before + N_NEWS, "the broker did not take the second run"
    after = (stack.get("/healthz").json(), checks.series_totals(stack))
    assert after[0]["articles"] == before[0]["articles"] == N_NEWS
    assert after[0]["prices"] == before[0]["prices"]
    assert after[1] == before[1]
    assert {a["id"] for a in stack.get("/api/news/latest", limit=N_NEWS).json()["results"]} == ids_before


def test_articles_carry_every_analysis(stack, replayed) -> None:
    checks.check_articles_carry_every_analysis(stack, N_NEWS)


def test_category_filter_and_counts(stack, replayed) -> None:
    checks.check_category_filter_and_counts(stack, N_NEWS)


def test_topic_model_learns_readable_topics(stack, replayed, news_csv: Path) -> None:
    topics = checks.check_readable_topics(stack)
    # The same rows again (idempotent: no count changes): scored now with the fitted model,
    # they get topics that the API lists.
    known = {t["id"] for t in topics}
    stack.cli("replay", str(news_csv), "--limit", str(N_NEWS))
    stack.wait_for("the pipeline to drain", stack.drained, timeout=600)
    latest = stack.get("/api/news/latest", limit=N_NEWS).json()["results"]
    assert len(latest) == N_NEWS
    # The model kept learning from the second pass: every topic known before keeps its id and
    # label, new ones may have been added, and every article's topic is one the API lists.
    after = {t["id"]: t["label"] for t in stack.get("/api/topics").json()["results"]}
    assert {t["id"]: t["label"] for t in topics}.items() <= after.items()
    assigned = [a["topic_id"] for a in latest if a["topic_id"] >= 0]
    assert len(assigned) >= N_NEWS // 2, len(assigned)
    assert set(assigned) <= set(after), set(assigned) - set(after)
    assert known <= set(after)


def test_events_endpoint(stack, replayed) -> None:
    checks.check_events(stack)


def test_news_pages_cover_every_article_once(stack, replayed) -> None:
    checks.check_news_pages_cover_every_article_once(stack, N_NEWS)


def test_article_and_similar_articles(stack, replayed) -> None:
    checks.check_article_and_similar_articles(stack)


def test_metrics_in_prometheus_format(stack, replayed) -> None:
    response = stack.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert f"btcpulse_articles {float(N_NEWS)}" in lines
    processed = [
        line for line in lines if line.startswith('btcpulse_actor_stat{actor="analysis-0",stat="processed"}')
    ]
    assert processed and float(processed[0].split()[-1]) >= N_NEWS


def test_stream_pushes_articles_as_they_are_written(stack, replayed, news_csv: Path) -> None:
    """A replay of rows already stored (nothing is counted twice) re-scores them; each new
    analysis reaches an open /api/stream client as an `article` event."""
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        url = f"{stack.api}/api/stream"
        with httpx.stream("GET", url, params={"kinds": "article"}, timeout=120) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in response.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "article":
                    got.append(json.loads(line.removeprefix("data: ")))
                    if len(got) >= 5:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(30), "the stream did not open"
    stack.cli("replay", str(news_csv), "--limit", "5")
    listener.join(timeout=120)
    assert len(got) >= 5, got
    assert all(a["id"] and a["sentiment_label"] in ("negative", "neutral", "positive") for a in got)
    assert stack.get("/api/stream", kinds="bogus").status_code == 422


def test_pipeline_health(stack, replayed) -> None:
    def stages() -> dict[str, dict]:
        return {s["stage"]: s for s in stack.get("/api/pipeline").json()["stages"]}

    # an earlier test's last messages may still be on their way through
    drained = stack.wait_for(
        "both stages' backlogs to drain",
        lambda: (got := stages())["analysis"]["backlog"] == 0 and got["aggregator"]["backlog"] == 0 and got,
        timeout=120,
    )
    assert set(drained) == {"analysis", "aggregator"}
    assert drained["analysis"]["actors"] == 1 and drained["analysis"]["processed"] >= N_NEWS
    assert drained["analysis"]["last_batch_at"] is not None
    for stage in drained.values():
        assert 1 <= stage["batches"] <= stage["processed"], stage
    # where the analysis time went: the models most of it, every phase counted
    spent = drained["analysis"]["seconds"]
    assert set(spent) == {"models", "topics", "store", "publish", "ack"}, spent
    assert spent["models"] > 0 and all(v >= 0 for v in spent.values()), spent
