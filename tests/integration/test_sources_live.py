"""The live collectors on the real stack, against local servers that replay real recordings:
a local HTTP server serves a real CoinDesk RSS capture (items reach the API once each, the
health endpoint shows the source, a restarted collector publishes nothing twice), and a local
WebSocket server replays a recorded Coinbase session (1-second bars reach the prices topic).

(Runs after test_pipeline.py, which counts from an empty stack.)"""

from __future__ import annotations

import asyncio
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
def exchange_server() -> Iterator[str]:
    """Replays what Coinbase sent in a recorded session to each client that subscribes, then
    keeps the connection open."""
    from websockets.asyncio.server import serve

    recording = shared_file("feed_and_exchange_fixtures", "exchange_ws", "COINBASE.ws.28.0.txt")
    frames = [line.split(": ", 1)[1] for line in recording.read_text().splitlines() if line[:1].isdigit()]
    ready: dict[str, object] = {}
    started = threading.Event()

    async def session(ws) -> None:
        await ws.recv()  # the client's subscribe
        for frame in frames:
            await ws.send(frame)
        await asyncio.sleep(3600)

    async def main() -> None:
        async with serve(session, "127.0.0.1", 0) as server:
            ready["port"] = server.sockets[0].getsockname()[1]
            ready["stop"] = asyncio.get_running_loop().create_future()
            started.set()
            await ready["stop"]  # type: ignore[misc]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"ws://127.0.0.1:{ready['port']}"
    loop.call_soon_threadsafe(ready["stop"].set_result, None)  # type: ignore[attr-defined]
    thread.join(10)


@pytest.fixture(scope="module")
def sources_file(tmp_path_factory: pytest.TempPathFactory, feed_server: str, exchange_server: str) -> Path:
    path = tmp_path_factory.mktemp("conf") / "sources.toml"
    path.write_text(
        "[[source]]\n"
        f'name = "{SOURCE}"\nurl = "{feed_server}"\nkind = "rss"\ninterval_s = 30\nallow_private = true\n'
        # Only the local exchange, every symbol in its recording, and no REST fallback: the
        # test must reach nothing beyond this machine.
        "[prices]\nallow_private = true\nrest = []\n"
        f'[[prices.stream]]\nexchange = "coinbase"\nurl = "{exchange_server}"\nsymbols = []\n'
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
    # 200, or 304 where the next poll (30 s on) came first: the file unchanged since its Last-Modified.
    assert health["enabled"] and health["errors"] == 0 and health["last_status"] in (200, 304), health
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


def _price_row(stack) -> dict | None:
    rows = stack.get("/api/sources").json()["sources"]
    return next((r for r in rows if r["kind"] == "price-stream" and r["new"] > 0), None)


def test_price_stream_publishes_one_second_bars(stack, sources_file: Path) -> None:
    prices = Topics.from_settings(stack.settings()).prices.name
    before = (topic_stats(stack.settings(), prices) or {}).get("msgInCounter", 0)
    stack.cli("up", "--sources", str(sources_file))
    row = stack.wait_for("bars from the local exchange", lambda: _price_row(stack))
    assert row["last_status"] == "stream" and row["errors"] == 0
    assert topic_stats(stack.settings(), prices)["msgInCounter"] - before >= row["new"]
