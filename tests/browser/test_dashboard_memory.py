"""The dashboard's memory under a live stream: with a browser tab open on the live window,
real articles arrive for ``BTCPULSE_MEMORY_MINUTES`` (10 by default); the resident memory of
the process that serves the dashboard (the Serve replica) and the page's JS heap must stay flat
once warmed up. Marker ``long``: not part of ``make test``; run it with ``make memtest``."""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from tests.browser.test_dashboard import CHROMIUM_ARGS, _chromium, _status
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.long]

MINUTES = float(os.environ.get("BTCPULSE_MEMORY_MINUTES", "10"))
BATCH_EVERY_S = 10.0
PER_BATCH = 40  # 4 articles/s, a busy news day
WARMUP_S = 120.0
MAX_GROWTH_MB = 40.0


def _replica(port: str) -> psutil.Process:
    """The Serve replica that serves the dashboard for the stack on ``port``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica" in cmd and "ingress" in cmd:
            try:
                if proc.environ().get("BTCPULSE_API_PORT") == port:
                    return proc
            except psutil.Error:
                continue
            found.append(proc)
    if len(found) == 1:
        return found[0]
    raise AssertionError(f"no single Serve replica found for port {port}: {found}")


def test_dashboard_memory_stays_flat_under_a_live_stream(stack, news_csv: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from actors.replay import ReplayReport, read_file
    from cluster.records import NewsItem

    items = [r.record for r in read_file(news_csv, report=ReplayReport()) if isinstance(r.record, NewsItem)]
    replica = _replica(stack.env["BTCPULSE_API_PORT"])
    samples: list[tuple[float, float, float, int]] = []  # (s, replica MB, page heap MB, articles)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(stack.api + "/dashboard")
        page.locator(".bk-Figure").nth(5).wait_for(timeout=120_000)
        page.get_by_role("button", name="15 min", exact=True).click()
        t0 = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - t0) < MINUTES * 60:
            now = datetime.now(UTC)
            lines = []
            for i in range(PER_BATCH):
                item = items[n % len(items)]
                lines.append(
                    json.dumps(
                        {
                            "published_at": (
                                now - timedelta(seconds=BATCH_EVERY_S * (1 - i / PER_BATCH))
                            ).isoformat(),
                            "source": item.source,
                            "url": f"{item.url}#memory-{n}",
                            "title": item.title,
                            "summary": item.summary,
                        }
                    )
                )
                n += 1
            batch = tmp_path / "batch.jsonl"
            batch.write_text("\n".join(lines) + "\n")
            stack.cli("replay", str(batch))
            heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0") / 2**20
            samples.append((elapsed, replica.memory_info().rss / 2**20, heap, n))
            time.sleep(max(0.0, BATCH_EVERY_S - (time.monotonic() - t0 - elapsed)))
        status = _status(page)
        browser.close()

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-memory.tsv").write_text(
        "seconds\treplica_rss_mb\tpage_heap_mb\tarticles_sent\n"
        + "".join(f"{s:.0f}\t{r:.1f}\t{h:.1f}\t{a}\n" for s, r, h, a in samples)
    )
    warm = [s for s in samples if s[0] >= WARMUP_S]
    assert len(warm) >= 6, "the run was too short to judge"
    first, last = warm[: len(warm) // 4 or 1], warm[-(len(warm) // 4 or 1) :]
    rss_growth = statistics.median(s[1] for s in last) - statistics.median(s[1] for s in first)
    heap_growth = statistics.median(s[2] for s in last) - statistics.median(s[2] for s in first)
    assert rss_growth < MAX_GROWTH_MB, (
        f"the dashboard's process grew {rss_growth:.0f} MB: see dashboard-memory.tsv"
    )
    assert heap_growth < MAX_GROWTH_MB, (
        f"the page's JS heap grew {heap_growth:.0f} MB: see dashboard-memory.tsv"
    )
    assert "live 15 min" in status
