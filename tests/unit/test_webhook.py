"""actors.webhook.WebhookSender against a real local HTTP server: delivery, retries on a
failing server, a bounded queue that drops the oldest, and never blocking the caller."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actors.webhook import WebhookSender


class _Hook:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.fail_first = 0
        self.calls = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.calls += 1
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if hook.fail_first > 0:
                    hook.fail_first -= 1
                    self.send_response(503)
                else:
                    hook.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook()
    yield h
    h.server.shutdown()


def _wait(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_delivers_json_in_order(hook: _Hook) -> None:
    sender = WebhookSender(hook.url)
    for i in range(3):
        sender.send({"id": f"e{i}", "label": "luna, terra"})
    _wait(lambda: len(hook.bodies) == 3)
    assert [b["id"] for b in hook.bodies] == ["e0", "e1", "e2"]
    assert sender.stats["delivered"] == 3
    sender.close()


def test_retries_a_failing_server(hook: _Hook) -> None:
    hook.fail_first = 1
    sender = WebhookSender(hook.url, attempts=3)
    sender.send({"id": "e"})
    _wait(lambda: hook.bodies, timeout=15)
    assert hook.calls == 2 and sender.stats["retries"] == 1
    sender.close()


def test_unreachable_server_gives_up_without_blocking() -> None:
    sender = WebhookSender("http://127.0.0.1:9/nowhere", attempts=1, timeout_s=0.5, max_queue=2)
    t0 = time.monotonic()
    for i in range(10):
        sender.send({"id": i})
    assert time.monotonic() - t0 < 0.5, "send() must never wait on the server"
    _wait(lambda: sender.stats["failed"] >= 1)
    assert sender.stats["dropped"] >= 7
    sender.close(timeout_s=1)


def test_refuses_a_non_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSender("file:///etc/passwd")
