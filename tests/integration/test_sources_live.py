"""The live news collector on the real stack, against a local HTTP server that serves a real
CoinDesk RSS capture: items reach the API once each, the health endpoint shows the source,
and a restarted collector publishes nothing twice.

(Runs after test_pipeline.py, which counts from an empty stack.)"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cluster.pulsar_admin import topic_stats
from cluster.topics import Topics
from tests.conftest import shared_file

pytestmark = pytest.mark.integration

SOURCE = "CoinDesk local"
ITEMS = 25  # <item>s in the capture


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    capture = shared_file("feed_and_exchange_fixtures", "rss", "coindesk_rss_2026-09-30_quantdashboard.xml")
    root = tmp_path_factory.mktemp("feeds")
    shutil.copy(capture, root / "coindesk.xml")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/coindesk.xml"
    server.shutdown()


@pytest.fixture(scope="module")
def sources_file(tmp_path_factory: pytest.TempPathFactory, feed_server: str) -> Path:
    path = tmp_path_factory.mktemp("conf") / "sources.toml"
    path.write_text(
        "[[source]]\n"
        f'name = "{SOURCE}"\nurl = "{feed_server}"\nkind = "rss"\ninterval_s = 30\nallow_private = true\n'
    )
    return path


def _source(stack) -> dict | None:
    rows = stack.get("/api/sources").json()["sources"]
    return next((r for r in rows if r["name"] == SOURCE), None)


def test_collector_publishes_each_item_once_across_a_restart(stack, sources_file: Path) -> None:
    stack.cli("up", "--sources", str(sources_file))
    health = stack.wait_for(
        "the source to publish", lambda: (s := _source(stack)) and s["new"] == ITEMS and s
    )
    assert health["enabled"] and health["errors"] == 0 and health["last_status"] == 200
    stack.wait_for(
        "the collected items to be searchable",
        lambda: len(stack.get("/api/news/latest", source=SOURCE, limit=100).json()["results"]) == ITEMS,
    )
    results = stack.get("/api/search", q="bitcoin price", k=5, source=SOURCE).json()["results"]
    assert results and all(
        r["source"] == SOURCE and r["url"].startswith("https://www.coindesk.com/") for r in results
    )

    raw = Topics.from_settings(stack.settings()).news_raw.name
    published = topic_stats(stack.settings(), raw)["msgInCounter"]
    # A new collector process: its first poll sees the whole feed again, all of it known.
    stack.cli("up", "--sources", str(sources_file))
    again = stack.wait_for(
        "the restarted collector to poll", lambda: (s := _source(stack)) and s["fetched"] and s
    )
    assert (again["fetched"], again["duplicates"], again["new"]) == (ITEMS, ITEMS, 0)
    assert topic_stats(stack.settings(), raw)["msgInCounter"] == published
    assert len(stack.get("/api/news/latest", source=SOURCE, limit=100).json()["results"]) == ITEMS
