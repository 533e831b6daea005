"""Events to an operator's webhook: POSTed as JSON, off the consumer's path.

The aggregator must never wait on a third-party server, so deliveries go through a bounded
queue drained by one thread; each is retried with exponential backoff, and when the queue is
full the oldest delivery is dropped and counted (the events topic and ``GET /api/events``
keep every event regardless: the webhook is a notification, not the record).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

import httpx

log = logging.getLogger(__name__)


class WebhookSender:
    """POST JSON bodies to ``url`` in the background; :meth:`send` never blocks.

    Args:
        url: where to POST; the body is the event as on the events topic.
        max_queue: deliveries kept waiting before the oldest is dropped.
        attempts: tries per delivery (1 s, 2 s, 4 s ... between them, capped at 30 s).
        timeout_s: per request.
    """

    def __init__(self, url: str, *, max_queue: int = 1000, attempts: int = 5, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self.attempts = attempts
        self.stats: Counter[str] = Counter()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queue)
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(body)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.stats["dropped"] += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self._queue.get()
            if body is None:
                return
            self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"content-type": "application/json", "user-agent": "btcpulse-webhook"}
        reason = "no attempt"
        for attempt in range(self.attempts):
            try:
                response = self._client.post(self.url, content=data, headers=headers)
                if response.status_code < 300:
                    self.stats["delivered"] += 1
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            self.stats["retries"] += 1
            if self._stop.wait(min(30.0, 2.0**attempt)):
                break
        self.stats["failed"] += 1
        log.warning("webhook %s: gave up on event %s (%s)", self.url, body.get("id"), reason)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within ``timeout_s``, then stop."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=timeout_s)
        self._client.close()
