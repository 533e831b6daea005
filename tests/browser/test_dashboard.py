"""The dashboard in real headless Chromium (Debian's package, driven by Playwright without a
browser download): it renders, shows real data, and changes while data arrives."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def page(stack) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        yield page
        browser.close()


def _articles_shown(page) -> int:
    text = page.locator("text=/articles ·/").first.inner_text(timeout=30_000)
    match = re.search(r"([\d,]+)\s+articles", text)
    return int(match.group(1).replace(",", "")) if match else -1


def _recent_news(news_csv: Path, out: Path, rows: slice, minutes_ago: float) -> Path:
    """Real articles from the recorded news, re-dated to the last minutes (as a JSONL replay
    file), so they are the newest data whatever earlier tests stored: the live window follows
    the newest data."""
    from actors.replay import ReplayReport, read_file
    from cluster.records import NewsItem

    items = [r.record for r in read_file(news_csv, report=ReplayReport()) if isinstance(r.record, NewsItem)][
        rows
    ]
    now = datetime.now(UTC)
    step = timedelta(minutes=minutes_ago) / max(len(items), 1)
    lines = [
        json.dumps(
            {
                "published_at": (now - timedelta(minutes=minutes_ago) + i * step).isoformat(),
                "source": item.source,
                "url": item.url,
                "title": item.title,
                "summary": item.summary,
            },
            ensure_ascii=False,
        )
        for i, item in enumerate(items)
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def test_dashboard_renders_and_updates_live(stack, page, news_csv: Path, tmp_path: Path) -> None:
    # Counted, not looked up by title: earlier tests may have stored newer articles.
    stored = lambda: stack.get("/healthz").json()["articles"]  # noqa: E731
    before = stored()
    first = _recent_news(news_csv, tmp_path / "first.jsonl", slice(2000, 2040), minutes_ago=50)
    stack.cli("replay", str(first))
    stack.wait_for("the first articles to be counted", lambda: stored() >= before + 40)
    page.goto(stack.api + "/dashboard")
    # Bokeh renders inside shadow roots; Playwright's CSS locators pierce them.
    page.locator(".bk-Figure").nth(2).wait_for(timeout=60_000)
    stack.wait_for("the status line to count articles", lambda: _articles_shown(page) > 0, timeout=60)
    assert page.locator(".bk-Figure").count() == 3, "price, sentiment and volume charts"
    time.sleep(1.5)  # one refresh period, so the first data is drawn
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-before.png"), full_page=True)
    before_count = _articles_shown(page)
    before_plot = page.locator(".bk-GridPlot").first.screenshot()
    assert page.locator(".tabulator-cell[tabulator-field='title']").count() > 0

    # More real articles arrive while the page is open: the page must change by itself.
    second = _recent_news(news_csv, tmp_path / "second.jsonl", slice(2040, 2100), minutes_ago=5)
    stack.cli("replay", str(second))
    stack.wait_for(
        "the page to count the new articles", lambda: _articles_shown(page) > before_count, timeout=120
    )
    time.sleep(1.5)
    after_plot = page.locator(".bk-GridPlot").first.screenshot()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert after_plot != before_plot, "the charts did not change while data arrived"
    assert _articles_shown(page) == stack.get("/healthz").json()["articles"]
