"""The dashboard in real headless Chromium (Debian's package, driven by Playwright without a
browser download): it renders, shows real data, and changes while data arrives."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
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


def test_dashboard_renders_and_updates_live(stack, page, news_csv: Path, prices_csv: Path) -> None:
    # Real news from one day of 2022 (after the rows the integration tests replay).
    stack.cli(
        "replay",
        str(news_csv),
        str(prices_csv),
        "--from",
        "2022-01-20T00:00:00Z",
        "--to",
        "2022-01-21T00:00:00Z",
    )
    stack.wait_for(
        "the first day to be counted", lambda: (stack.get("/healthz").json()["last_at"] or "") >= "2022-01-20"
    )
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
    title_cells = page.locator(".tabulator-cell[tabulator-field='title']")
    assert title_cells.count() > 0

    # More real data arrives while the page is open: the page must change by itself.
    stack.cli(
        "replay",
        str(news_csv),
        str(prices_csv),
        "--from",
        "2022-01-21T00:00:00Z",
        "--to",
        "2022-01-23T00:00:00Z",
    )
    stack.wait_for(
        "the page to count the new articles", lambda: _articles_shown(page) > before_count, timeout=120
    )
    time.sleep(1.5)
    after_plot = page.locator(".bk-GridPlot").first.screenshot()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert after_plot != before_plot, "the charts did not change while data arrived"
    assert _articles_shown(page) == stack.get("/healthz").json()["articles"]
