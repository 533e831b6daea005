"""The HTTP API's checks against a stack holding ``n`` replayed rows of the real news (the first
``n`` of cryptonews.csv, with the hourly prices), shared by the test modules that run them on
different stacks: test_pipeline (embedded qdrant-edge) and test_api_client_store (the
qdrant-client path). Each ``check_*`` takes the stack (tests.conftest.Stack) and asserts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

SERIES_SPAN = {"start": "2021-10-01T00:00:00Z", "end": "2022-08-01T00:00:00Z"}
MISSING = "00000000-0000-0000-0000-000000000000"
LABELS = ("negative", "neutral", "positive")


def replay_and_wait(stack: Any, news_csv: Path, prices_csv: Path, n: int) -> Any:
    """Replay the first ``n`` news rows and the prices; return once all ``n`` are searchable,
    counted, and every consuming stage has drained."""
    done = stack.cli("replay", str(news_csv), str(prices_csv), "--limit", str(n))
    assert f"published {n} news" in done.stdout
    stack.wait_for(
        f"{n} searchable articles",
        lambda: (
            len(stack.get("/api/news/latest", limit=n).json()["results"]) == n
            and stack.get("/healthz").json()["articles"] == n
        ),
        timeout=600,
    )
    stack.wait_for("the pipeline to drain", stack.drained, timeout=300)
    return done


def latest(stack: Any, n: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = stack.get("/api/news/latest", limit=n).json()["results"]
    return results


def series_totals(stack: Any) -> tuple[int, int]:
    """(articles counted, days with a price) over the replayed span, in daily buckets."""
    body = stack.get("/api/series", **SERIES_SPAN, step="1d").json()
    articles = sum(b["count"] for b in body["buckets"])
    priced = sum(1 for b in body["buckets"] if b["close"] is not None)
    return articles, priced


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- counts and listings


def check_every_article_is_searchable_and_counted(stack: Any, n: int) -> None:
    rows = latest(stack, n)
    assert len({a["id"] for a in rows}) == n
    times = [a["published_at"] for a in rows]
    assert times == sorted(times, reverse=True), "latest news must come newest first"
    assert all(-1.0 <= a["sentiment"] <= 1.0 for a in rows)
    articles, priced_days = series_totals(stack)
    assert articles == n
    assert priced_days > 0
    health = stack.get("/healthz").json()
    assert health["status"] == "ok", health
    assert health["prices"] > 0


def check_articles_carry_every_analysis(stack: Any, n: int) -> None:
    rows = latest(stack, n)
    assert all(a["sentiment_label"] in LABELS for a in rows)
    assert all(0.0 <= a["confidence"] <= 1.0 for a in rows)
    assert all(len(a["categories"]) == len(a["category_scores"]) for a in rows)
    assert sum(1 for a in rows if a["categories"]) >= n // 2, "most news has a category"
    assert all(a["story_id"] for a in rows)
    # a story's timeline holds its articles, oldest first
    article = rows[0]
    timeline = stack.get(f"/api/stories/{article['story_id']}").json()["timeline"]
    assert article["id"] in [t["id"] for t in timeline]
    assert [t["published_at"] for t in timeline] == sorted(t["published_at"] for t in timeline)
    assert stack.get(f"/api/stories/{MISSING}").status_code == 404


def check_news_pages_cover_every_article_once(stack: Any, n: int) -> None:
    seen: list[str] = []
    params: dict[str, object] = {"limit": 70}
    for _ in range(20):
        page = stack.get("/api/news", **params).json()
        seen += [a["id"] for a in page["results"]]
        if page["next_before"] is None:
            break
        params["before"] = page["next_before"]
    assert len(seen) == len(set(seen)) == n
    one_source = stack.get("/api/news", source="CoinTelegraph", limit=500).json()["results"]
    assert one_source and all(a["source"] == "CoinTelegraph" for a in one_source)
    rows = latest(stack, n)
    assert {a["id"] for a in one_source} == {a["id"] for a in rows if a["source"] == "CoinTelegraph"}
    negative = stack.get("/api/news", sentiment="negative", limit=500).json()["results"]
    assert negative and all(a["sentiment_label"] == "negative" for a in negative)
    assert stack.get("/api/news", sentiment="bearish").status_code == 422
    assert stack.get("/api/news", limit=501).status_code == 422


def check_news_filters_by_time_category_and_topic(stack: Any, n: int) -> None:
    """/api/news's time range is half open, and its category and topic filters match."""
    rows = latest(stack, n)
    times = sorted(a["published_at"] for a in rows)
    start, end = times[n // 4], times[3 * n // 4]
    expected = {a["id"] for a in rows if start <= a["published_at"] < end}
    got = stack.get("/api/news", start=start, end=end, limit=500).json()["results"]
    assert expected and {a["id"] for a in got} == expected
    regulation = stack.get("/api/news", category="regulation", limit=500).json()["results"]
    assert {a["id"] for a in regulation} == {a["id"] for a in rows if "regulation" in a["categories"]}
    topic = rows[0]["topic_id"]
    same_topic = stack.get("/api/news", topic=topic, limit=500).json()["results"]
    assert {a["id"] for a in same_topic} == {a["id"] for a in rows if a["topic_id"] == topic}


# ---------------------------------------------------------------- search


def check_topical_query_finds_topical_articles(stack: Any) -> None:
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


def check_concurrent_searches_match_lone_ones(stack: Any) -> None:
    """Searches sent together (the replica embeds and searches them in batches) each get the
    hits they get alone: no answer goes to the wrong caller, k and filters stay their own."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    queries = [
        {"q": q, "k": k, **({"start": "2022-01-01T00:00:00Z"} if i % 3 == 0 else {})}
        for i, (q, k) in enumerate(
            [
                ("bitcoin price falls", 5),
                ("NFT marketplace", 7),
                ("Ethereum network upgrade", 3),
                ("exchange hacked, funds stolen", 10),
                ("regulators ban crypto mining", 4),
                ("El Salvador legal tender", 6),
                ("stablecoin reserves audit", 8),
                ("bitcoin ETF approval", 2),
                ("DeFi protocol exploit", 9),
                ("miners sell their coins", 5),
                ("central bank digital currency", 3),
                ("whales accumulate bitcoin", 6),
            ]
        )
    ]

    def hits(client: httpx.Client, params: dict[str, Any]) -> list[tuple[str, float]]:
        r = client.get("/api/search", params=params)
        assert r.status_code == 200, r.text
        return [(h["id"], h["score"]) for h in r.json()["results"]]

    with httpx.Client(base_url=stack.api, timeout=60) as client:
        alone = [hits(client, p) for p in queries]
    with ThreadPoolExecutor(16) as pool:

        def one(i: int) -> list[tuple[str, float]]:
            with httpx.Client(base_url=stack.api, timeout=60) as client:
                return hits(client, queries[i % len(queries)])

        together = list(pool.map(one, range(4 * len(queries))))
    for i, got in enumerate(together):
        want, params = alone[i % len(queries)], queries[i % len(queries)]
        assert len(got) == len(want) <= params["k"]
        assert "start" in params or len(want) == params["k"]
        assert {a for a, _ in got} == {a for a, _ in want}, params
        for (_, s1), (_, s2) in zip(sorted(got), sorted(want), strict=True):
            assert abs(s1 - s2) < 1e-4


def check_search_filters_by_time_and_source(stack: Any, n: int) -> None:
    rows = latest(stack, n)
    mid = sorted(a["published_at"] for a in rows)[n // 2]
    results = stack.get("/api/search", q="bitcoin price", k=50, start=mid).json()["results"]
    assert results and all(r["published_at"] >= mid for r in results)
    source = rows[0]["source"]
    results = stack.get("/api/search", q="bitcoin price", k=20, source=source).json()["results"]
    assert results and all(r["source"] == source for r in results)


def check_search_filters_by_sentiment_and_combined(stack: Any, n: int) -> None:
    """The sentiment filter, and every filter at once: each hit meets them all, and a filter
    that matches fewer articles than ``k`` returns exactly those."""
    rows = latest(stack, n)
    for label in LABELS:
        hits = stack.get("/api/search", q="bitcoin price", k=20, sentiment=label).json()["results"]
        assert all(h["sentiment_label"] == label for h in hits)
        assert len(hits) == min(20, sum(1 for a in rows if a["sentiment_label"] == label))
    times = sorted(a["published_at"] for a in rows)
    start, end = times[n // 4], times[-1]
    # every filter at once, on values one article of the range has (so some article matches)
    pivot = next(a for a in rows if start <= a["published_at"] < end and a["categories"])
    source, label, category = pivot["source"], pivot["sentiment_label"], pivot["categories"][0]
    matching = {
        a["id"]
        for a in rows
        if start <= a["published_at"] < end
        and a["source"] == source
        and a["sentiment_label"] == label
        and category in a["categories"]
    }
    assert pivot["id"] in matching
    hits = stack.get(
        "/api/search",
        q="bitcoin rallies",
        k=100,
        start=start,
        end=end,
        source=source,
        sentiment=label,
        category=category,
    ).json()["results"]
    assert {h["id"] for h in hits} == matching


def check_category_filter_and_counts(stack: Any, n: int) -> None:
    results = stack.get("/api/search", q="regulators and lawmakers", k=20, category="regulation").json()
    assert results["results"] and all("regulation" in r["categories"] for r in results["results"])
    body = stack.get("/api/series", **SERIES_SPAN, step="31d").json()
    counted = sum(c for b in body["buckets"] for c in b["category_counts"])
    rows = latest(stack, n)
    assert counted == sum(len(a["categories"]) for a in rows)
    # stories per window: the distinct story ids among the window's articles
    step = 31 * 86400
    expected: dict[int, set[str]] = {}
    for a in rows:
        expected.setdefault(int(_ts(a["published_at"]) // step), set()).add(a["story_id"])
    got = {int(_ts(b["start"]) // step): b["stories"] for b in body["buckets"] if b["count"]}
    assert got == {k: len(v) for k, v in expected.items()}


def check_article_and_similar_articles(stack: Any) -> None:
    article = stack.get("/api/news/latest", limit=1).json()["results"][0]
    got = stack.get(f"/api/news/{article['id']}")
    assert got.status_code == 200 and got.json()["title"] == article["title"]
    similar = stack.get(f"/api/news/{article['id']}/similar", k=5).json()["results"]
    assert len(similar) == 5 and article["id"] not in [s["id"] for s in similar]
    assert [s["score"] for s in similar] == sorted((s["score"] for s in similar), reverse=True)
    like = stack.get("/api/search", like=article["id"], k=5).json()["results"]
    assert [s["id"] for s in like] == [s["id"] for s in similar]
    assert stack.get(f"/api/news/{MISSING}").status_code == 404
    assert stack.get(f"/api/news/{MISSING}/similar").status_code == 404
    assert stack.get("/api/news/not-an-id!").status_code == 422
    assert stack.get("/api/search").status_code == 422
    assert stack.get("/api/search", q="bitcoin", like=article["id"]).status_code == 422


# ---------------------------------------------------------------- series, topics, events, sources


def check_series_fields_and_openapi(stack: Any) -> None:
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


def check_readable_topics(stack: Any) -> list[dict[str, Any]]:
    """Wait for the topic model's first fit; every topic has a label and plain keywords."""
    stack.wait_for("the first topics", lambda: stack.get("/api/topics").json()["results"], timeout=300)
    topics: list[dict[str, Any]] = stack.get("/api/topics").json()["results"]
    assert all(t["label"] and t["keywords"] for t in topics)
    assert all(all(w.replace(" ", "").replace("-", "").isalnum() for w in t["keywords"]) for t in topics)
    return topics


def check_events(stack: Any) -> None:
    body = stack.get("/api/events", **SERIES_SPAN).json()
    for event in body["results"]:
        assert event["kind"] in ("volume", "sentiment")
        assert event["start"] <= event["peak"]
        assert event["keywords"] and event["label"]
    assert (
        stack.get("/api/events", start="2022-02-01T00:00:00Z", end="2022-01-01T00:00:00Z").status_code == 422
    )
    assert stack.get("/api/events", limit=0).status_code == 422


def check_sources_without_live_collectors(stack: Any) -> None:
    """A stack started with --no-live runs no collector: the list is empty, not an error."""
    response = stack.get("/api/sources")
    assert response.status_code == 200
    assert response.json() == {"sources": []}


# ---------------------------------------------------------------- client errors


def check_bad_parameters_are_client_errors(stack: Any) -> None:
    assert stack.get("/api/search", q="x", k=0).status_code == 422
    assert stack.get("/api/search", q="x", start="not-a-date").status_code == 422
    assert stack.get("/api/series", step="7x").status_code == 422
    assert (
        stack.get("/api/series", start="2022-02-01T00:00:00Z", end="2022-01-01T00:00:00Z").status_code == 422
    )
    # k beyond its range, bad or reversed dates, times outside 1970..9998: 4xx, never a 500
    assert stack.get("/api/search", q="x", k=101).status_code == 422
    assert stack.get(f"/api/news/{MISSING}/similar", k=0).status_code == 422
    assert stack.get("/api/news", start="yesterday").status_code == 422
    assert stack.get("/api/news", before="2022-13-01T00:00:00Z").status_code == 422
    assert (
        stack.get("/api/search", q="x", start="2022-02-01T00:00:00Z", end="2022-01-01T00:00:00Z").status_code
        == 422
    )
    assert stack.get("/api/news", end="0001-01-01T00:00:00Z").status_code == 422
    assert stack.get("/api/series", start="9999-06-01T00:00:00Z").status_code == 422
