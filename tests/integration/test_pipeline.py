"""End to end on the real stack: replay real news and prices through Pulsar, the Ray
consumers, Qdrant and the aggregates, and read everything back through the HTTP API."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from cluster.pulsar_admin import topic_stats
from cluster.topics import Topics

pytestmark = pytest.mark.integration

N_NEWS = 500


def _series_totals(stack) -> tuple[int, int]:
    body = stack.get(
        "/api/series", start="2021-10-01T00:00:00Z", end="2022-08-01T00:00:00Z", step="1d"
    ).json()
    articles = sum(b["count"] for b in body["buckets"])
    priced = sum(1 for b in body["buckets"] if b["close"] is not None)
    return articles, priced


@pytest.fixture(scope="module")
def replayed(stack, news_csv: Path, prices_csv: Path):
    done = stack.cli("replay", str(news_csv), str(prices_csv), "--limit", str(N_NEWS))
    assert f"published {N_NEWS} news" in done.stdout
    stack.wait_for(
        f"{N_NEWS} searchable articles",
        lambda: (
            stack.get("/api/news/latest", limit=N_NEWS).json()["results"].__len__() == N_NEWS
            and stack.get("/healthz").json()["articles"] == N_NEWS
        ),
        timeout=600,
    )
    stack.wait_for("the pipeline to drain", stack.drained, timeout=300)
    return done


def test_every_article_is_searchable_and_counted(stack, replayed) -> None:
    latest = stack.get("/api/news/latest", limit=N_NEWS).json()["results"]
    assert len({a["id"] for a in latest}) == N_NEWS
    times = [a["published_at"] for a in latest]
    assert times == sorted(times, reverse=True), "latest news must come newest first"
    assert all(-1.0 <= a["sentiment"] <= 1.0 for a in latest)
    articles, priced_days = _series_totals(stack)
    assert articles == N_NEWS
    assert priced_days > 0
    health = stack.get("/healthz").json()
    assert health["status"] == "ok", health
    assert health["prices"] > 0


def test_topical_query_finds_topical_articles(stack, replayed) -> None:
    for query, words in (
        ("NFT marketplace and digital collectibles", ("nft", "non-fungible", "collectible")),
        ("Ethereum network upgrade", ("ethereum", "eth")),
    ):
        results = stack.get("/api/search", q=query, k=10).json()["results"]
        assert len(results) == 10
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        topical = [r for r in results if any(w in r["title"].lower() for w in words)]
        assert len(topical) >= 6, [r["title"] for r in results]


def test_search_filters_by_time_and_source(stack, replayed) -> None:
    latest = stack.get("/api/news/latest", limit=N_NEWS).json()["results"]
    mid = sorted(a["published_at"] for a in latest)[N_NEWS // 2]
    results = stack.get("/api/search", q="bitcoin price", k=50, start=mid).json()["results"]
    assert results and all(r["published_at"] >= mid for r in results)
    source = latest[0]["source"]
    results = stack.get("/api/search", q="bitcoin price", k=20, source=source).json()["results"]
    assert results and all(r["source"] == source for r in results)


def test_series_fields_narrow_the_buckets_and_openapi_lists_every_endpoint(stack, replayed) -> None:
    body = stack.get("/api/series", step="1d", fields="count,close").json()
    assert body["buckets"] and all(set(b) == {"start", "count", "close"} for b in body["buckets"])
    full = stack.get("/api/series", step="1d").json()
    assert [b["count"] for b in body["buckets"]] == [b["count"] for b in full["buckets"]]
    bad = stack.get("/api/series", fields="count,bogus")
    assert bad.status_code == 422 and "bogus" in bad.json()["detail"]
    paths = set(stack.get("/openapi.json").json()["paths"])
    for path in (
        "/healthz",
        "/api/search",
        "/api/news",
        "/api/news/latest",
        "/api/news/{article_id}",
        "/api/news/{article_id}/similar",
        "/api/series",
        "/api/topics",
        "/api/events",
        "/api/sources",
        "/api/stories/{story_id}",
        "/api/deadletters",
        "/api/stream",
        "/api/pipeline",
        "/metrics",
    ):
        assert path in paths, path
    assert stack.get("/docs").status_code == 200


def test_bad_parameters_are_client_errors(stack) -> None:
    assert stack.get("/api/search", q="x", k=0).status_code == 422
    assert stack.get("/api/search", q="x", start="not-a-date").status_code == 422
    assert stack.get("/api/series", step="7x").status_code == 422
    assert (
        stack.get("/api/series", start="2022-02-01T00:00:00Z", end="2022-01-01T00:00:00Z").status_code == 422
    )


def test_replaying_the_same_rows_changes_no_count(stack, replayed, news_csv: Path, prices_csv: Path) -> None:
    ids_before = {a["id"] for a in stack.get("/api/news/latest", limit=N_NEWS).json()["results"]}
    raw_topic = Topics.from_settings(stack.settings()).news_raw.name
    received_before = topic_stats(stack.settings(), raw_topic)["msgInCounter"]
    before = (stack.get("/healthz").json(), _series_totals(stack))
    done = stack.cli("replay", str(news_csv), str(prices_csv), "--limit", str(N_NEWS))
    assert f"published {N_NEWS} news" in done.stdout
    # The second run publishes under new producer names, so the broker delivers every message
    # again; only the consumers' idempotent writes keep the counts.
    stack.wait_for("the pipeline to drain", stack.drained, timeout=600)
    received = topic_stats(stack.settings(), raw_topic)["msgInCounter"]
    assert received == received_before + N_NEWS, "the broker did not take the second run"
    after = (stack.get("/healthz").json(), _series_totals(stack))
    assert after[0]["articles"] == before[0]["articles"] == N_NEWS
    assert after[0]["prices"] == before[0]["prices"]
    assert after[1] == before[1]
    assert {a["id"] for a in stack.get("/api/news/latest", limit=N_NEWS).json()["results"]} == ids_before


def test_articles_carry_every_analysis(stack, replayed) -> None:
    latest = stack.get("/api/news/latest", limit=N_NEWS).json()["results"]
    assert all(a["sentiment_label"] in ("negative", "neutral", "positive") for a in latest)
    assert all(0.0 <= a["confidence"] <= 1.0 for a in latest)
    assert all(len(a["categories"]) == len(a["category_scores"]) for a in latest)
    assert sum(1 for a in latest if a["categories"]) >= N_NEWS // 2, "most news has a category"
    assert all(a["story_id"] for a in latest)
    # a story's timeline holds its articles, oldest first
    article = latest[0]
    timeline = stack.get(f"/api/stories/{article['story_id']}").json()["timeline"]
    assert article["id"] in [t["id"] for t in timeline]
    assert [t["published_at"] for t in timeline] == sorted(t["published_at"] for t in timeline)
    assert stack.get("/api/stories/00000000-0000-0000-0000-000000000000").status_code == 404


def test_category_filter_and_counts(stack, replayed) -> None:
    results = stack.get("/api/search", q="regulators and lawmakers", k=20, category="regulation").json()
    assert results["results"] and all("regulation" in r["categories"] for r in results["results"])
    body = stack.get(
        "/api/series", start="2021-10-01T00:00:00Z", end="2022-08-01T00:00:00Z", step="31d"
    ).json()
    counted = sum(n for b in body["buckets"] for n in b["category_counts"])
    latest = stack.get("/api/news/latest", limit=N_NEWS).json()["results"]
    assert counted == sum(len(a["categories"]) for a in latest)
    # stories per window: the distinct story ids among the window's articles
    step = 31 * 86400
    expected: dict[int, set[str]] = {}
    for a in latest:
        ts = datetime.fromisoformat(a["published_at"].replace("Z", "+00:00")).timestamp()
        expected.setdefault(int(ts // step), set()).add(a["story_id"])
    got = {
        int(datetime.fromisoformat(b["start"].replace("Z", "+00:00")).timestamp() // step): b["stories"]
        for b in body["buckets"]
        if b["count"]
    }
    assert got == {k: len(v) for k, v in expected.items()}


def test_topic_model_learns_readable_topics(stack, replayed, news_csv: Path) -> None:
    stack.wait_for("the first topics", lambda: stack.get("/api/topics").json()["results"], timeout=300)
    topics = stack.get("/api/topics").json()["results"]
    assert all(t["label"] and t["keywords"] for t in topics)
    assert all(all(w.replace(" ", "").replace("-", "").isalnum() for w in t["keywords"]) for t in topics)
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
    body = stack.get("/api/events", start="2021-10-01T00:00:00Z", end="2022-08-01T00:00:00Z").json()
    for event in body["results"]:
        assert event["kind"] in ("volume", "sentiment")
        assert event["start"] <= event["peak"]
        assert event["keywords"] and event["label"]
    assert (
        stack.get("/api/events", start="2022-02-01T00:00:00Z", end="2022-01-01T00:00:00Z").status_code == 422
    )
    assert stack.get("/api/events", limit=0).status_code == 422


def test_news_pages_cover_every_article_once(stack, replayed) -> None:
    seen: list[str] = []
    params: dict[str, object] = {"limit": 70}
    for _ in range(20):
        page = stack.get("/api/news", **params).json()
        seen += [a["id"] for a in page["results"]]
        if page["next_before"] is None:
            break
        params["before"] = page["next_before"]
    assert len(seen) == len(set(seen)) == N_NEWS
    one_source = stack.get("/api/news", source="CoinTelegraph", limit=500).json()["results"]
    assert one_source and all(a["source"] == "CoinTelegraph" for a in one_source)
    negative = stack.get("/api/news", sentiment="negative", limit=500).json()["results"]
    assert negative and all(a["sentiment_label"] == "negative" for a in negative)
    assert stack.get("/api/news", sentiment="bearish").status_code == 422
    assert stack.get("/api/news", limit=501).status_code == 422


def test_article_and_similar_articles(stack, replayed) -> None:
    article = stack.get("/api/news/latest", limit=1).json()["results"][0]
    got = stack.get(f"/api/news/{article['id']}")
    assert got.status_code == 200 and got.json()["title"] == article["title"]
    similar = stack.get(f"/api/news/{article['id']}/similar", k=5).json()["results"]
    assert len(similar) == 5 and article["id"] not in [s["id"] for s in similar]
    assert [s["score"] for s in similar] == sorted((s["score"] for s in similar), reverse=True)
    like = stack.get("/api/search", like=article["id"], k=5).json()["results"]
    assert [s["id"] for s in like] == [s["id"] for s in similar]
    missing = "00000000-0000-0000-0000-000000000000"
    assert stack.get(f"/api/news/{missing}").status_code == 404
    assert stack.get(f"/api/news/{missing}/similar").status_code == 404
    assert stack.get("/api/news/not-an-id!").status_code == 422
    assert stack.get("/api/search").status_code == 422
    assert stack.get("/api/search", q="bitcoin", like=article["id"]).status_code == 422


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
