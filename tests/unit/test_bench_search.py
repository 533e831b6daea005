"""bench.search's pure parts (texts without duplicates, exact top-k, recall, summaries) and its
HTTP load generators against a small local server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import numpy as np
import pytest

from bench.search import (
    Unit,
    Variant,
    arrivals,
    article_units,
    exact_topk,
    fold,
    http_open,
    http_run,
    passages,
    percentile,
    point_id,
    recall_at_k,
    sentences,
    summarize,
    texts_key,
    unique_units,
    window,
)


def _unit(text: str, kind: str = "passage", article: str = "a1") -> Unit:
    return Unit(text, kind, article, "src", "https://x.test/a", "T", "2022-01-01T00:00:00Z", 1.0)


def test_sentences_split_after_end_marks_before_capitals() -> None:
    assert sentences("Bitcoin fell. It rose again! Why? e.g. this stays") == [
        "Bitcoin fell.",
        "It rose again!",
        "Why? e.g. this stays",
    ]


def test_passages_are_whole_sentences_within_bounds() -> None:
    body = " ".join(f"Sentence number {i} is about the price of bitcoin today." for i in range(30))
    out = passages(body, min_chars=60, max_chars=300)
    assert len(out) > 1
    assert all(len(p) <= 300 for p in out)
    assert all(p.endswith(".") for p in out)
    assert " ".join(out) == body  # nothing lost, nothing repeated


def test_passages_cut_an_overlong_sentence_and_drop_links() -> None:
    long = "word " * 200 + "end. Short tail."
    out = passages("see https://example.com/x " + long, min_chars=60, max_chars=300)
    assert all(len(p) <= 300 for p in out)
    assert not any("https://" in p for p in out)


def test_unique_units_drop_folded_duplicates_and_near_empty() -> None:
    units = [
        _unit("Bitcoin hits a new all-time high"),
        _unit("bitcoin  hits a NEW all-time high", article="a2"),  # same text folded
        _unit("lol 100%"),  # too few letters
        _unit("Ethereum merges successfully at last"),
    ]
    out = unique_units(units)
    assert [u.text for u in out] == [
        "Bitcoin hits a new all-time high",
        "Ethereum merges successfully at last",
    ]
    assert len({fold(u.text) for u in out}) == len(out)


def test_article_units_and_ids_are_distinct() -> None:
    item = SimpleNamespace(
        id="art",
        source="reddit/r/Bitcoin",
        url="https://reddit.test/p",
        title="Is now a good time to buy bitcoin?",
        summary="I have been reading a lot about it. My friends say I should wait for a dip first.",
        text="Is now a good time to buy bitcoin?. I have been reading a lot about it. My friends...",
        published_at="2022-01-01T00:00:00Z",
        published_ts=1.0,
    )
    units = article_units(item, body_passages=True)
    assert [u.kind for u in units][:2] == ["article", "title"]
    assert {u.kind for u in units[2:]} == {"passage"}
    ids = [point_id(u) for u in units]
    assert len(set(ids)) == len(ids)
    assert point_id(units[0]) == point_id(units[0])  # stable


def test_texts_key_depends_on_texts_model_and_backend() -> None:
    k = texts_key(["a", "b"], "m", "onnx-int8")
    assert k == texts_key(["a", "b"], "m", "onnx-int8")
    assert len({k, texts_key(["ab"], "m", "onnx-int8"), texts_key(["a", "b"], "m", "torch")}) == 3


def test_exact_topk_matches_a_full_sort_and_respects_the_mask() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = v[:7] + 0.1 * rng.normal(size=(7, 16)).astype(np.float32)
    got = exact_topk(v, q, 10)
    want = np.argsort(-(q @ v.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(got, want)
    mask = np.zeros(500, dtype=bool)
    mask[100:130] = True
    sub = exact_topk(v, q, 10, mask)
    assert ((sub >= 100) & (sub < 130)).all()
    assert sub.shape == (7, 10)
    tiny = exact_topk(v, q, 10, np.arange(500) < 4)  # fewer rows than k
    assert tiny.shape == (7, 4)


def test_recall_at_k() -> None:
    truth = [["a", "b", "c", "d"], ["x", "y"], []]
    found = [["a", "c", "z", "w"], ["y", "x"], ["q"]]
    assert recall_at_k(found, truth, k=4) == pytest.approx((0.5 + 1.0) / 2)  # empty truth skipped
    assert recall_at_k([["a"]], [["a", "b"]], k=1) == 1.0


def test_percentile_and_summary() -> None:
    lat = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile([x * 1000 for x in lat], 50) == pytest.approx(50.5)
    s = summarize(lat, wall_s=2.0, clients=8)
    assert s["requests"] == 100 and s["clients"] == 8
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == 100.0
    assert s["qps"] == 50.0
    assert np.isnan(percentile([], 50))


def test_window_and_variant_parsing() -> None:
    start, end = window(np.array([0.0, 86400.0 * 40]), days=30)
    assert end == 86400.0 * 40 + 1 and end - start == 30 * 86400.0
    assert Variant.parse("m32:32:200") == Variant("m32", 32, 200, True)
    assert Variant.parse("plain:16:100:plain").optimize is False


def test_arrivals_are_a_seeded_poisson_stream_at_the_rate() -> None:
    times = arrivals(100.0, 5000)
    assert times == arrivals(100.0, 5000)  # the same stream each run
    gaps = np.diff([0.0, *times])
    assert (gaps > 0).all()
    assert np.mean(gaps) == pytest.approx(0.01, rel=0.05)
    assert np.std(gaps) == pytest.approx(0.01, rel=0.1)  # exponential: std == mean


SERVICE_S = 0.05  # the test server's time per request, one request at a time


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(SERVICE_S)
        body = json.dumps({"results": [{"id": self.path.rsplit("=", 1)[-1]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_api() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Slow)  # not threading: 20 requests/s at most
    server.protocol_version = "HTTP/1.1"  # keep-alive, as the API
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_open_loop_counts_the_wait_of_a_server_that_falls_behind(slow_api: str) -> None:
    """Offered 100/s to a server of 20/s: the requests queue, and each latency counts from the
    request's scheduled time, not from when a connection was free to send it."""
    n = 30
    params = [{"q": f"q{i}"} for i in range(n)]
    summary, got = http_open(slow_api, params, 100.0, n, connections=4)
    assert summary["requests"] == n and summary["errors"] == 0
    assert got == [[f"q{i}"] for i in range(n)]
    # One at a time, the last answer comes no sooner than n service times after the start; it
    # was due at arrivals()[-1].
    assert summary["max_ms"] >= 1000 * (n * SERVICE_S - arrivals(100.0, n)[-1])
    assert summary["qps"] < 100 and summary["offered_qps"] == 100.0


def test_closed_loop_latency_is_the_service_time_alone(slow_api: str) -> None:
    """One client sends the next request when the last is answered: no queue, and the lower
    bound of every latency is the server's service time."""
    summary, _ = http_run(slow_api, [{"q": "a"}, {"q": "b"}], 1, 6)
    assert summary["requests"] == 6 and summary["errors"] == 0
    assert summary["p50_ms"] >= 1000 * SERVICE_S
