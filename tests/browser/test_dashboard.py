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
from ui.screenshot import X_SPANS_JS

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
    page.locator(".bk-Figure").nth(5).wait_for(timeout=60_000)
    stack.wait_for("the status line to count articles", lambda: _articles_shown(page) > 0, timeout=60)
    # price with sentiment, volume by source, sentiment share, topic river, categories, lead/lag
    assert page.locator(".bk-Figure").count() == 6
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


XSS_TITLE = (
    "Bitcoin &lt;img src=x onerror=window.__xss=1&gt; test &lt;script&gt;window.__xss=2&lt;/script&gt; rally"
)


def test_hostile_title_renders_as_text_and_search_finds_news(stack, page, tmp_path: Path) -> None:
    # Entities decode once at ingestion, so the stored title holds a literal <img ...> and <script>.
    now = datetime.now(UTC)
    item = {
        "published_at": now.isoformat(),
        "source": "xss-check",
        "url": "https://example.com/xss-check",
        "title": XSS_TITLE,
        "summary": "A test of how the dashboard shows text from the internet.",
    }
    path = tmp_path / "xss.jsonl"
    path.write_text(json.dumps(item) + "\n")
    stored = lambda: stack.get("/healthz").json()["articles"]  # noqa: E731
    before = stored()
    stack.cli("replay", str(path))
    stack.wait_for("the hostile article to be stored", lambda: stored() > before)
    page.goto(stack.api + "/dashboard")
    literal = "<img src=x onerror=window.__xss=1> test <script>window.__xss=2</script> rally"
    cell = page.locator(
        ".tabulator-cell[tabulator-field='title']", has_text="<script>window.__xss=2</script>"
    )
    cell.first.wait_for(timeout=60_000)
    assert literal in cell.first.inner_text()
    assert page.evaluate("window.__xss") is None, "a title ran as code"
    assert page.locator(".tabulator-cell[tabulator-field='title'] img").count() == 0

    box = page.locator("input[placeholder^='Search similar news']")
    box.fill("how the dashboard shows text from the internet")
    box.press("Enter")
    hit = page.locator(".tabulator-cell[tabulator-field='score']").first
    hit.wait_for(timeout=60_000)
    titles = page.locator(".tabulator-row", has=page.locator(".tabulator-cell[tabulator-field='score']"))
    assert "window.__xss=2" in titles.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-search.png"), full_page=True)


def _time_span_h(page) -> float:
    spans = page.evaluate(X_SPANS_JS)
    return max(spans) / 3_600_000 if spans else 0.0


def _wait_for_axis(stack, page, what: str, low_h: float, high_h: float, timeout: float) -> None:
    """Wait until the widest time axis spans ``low_h``-``high_h`` hours; on a timeout, say what
    every axis spanned and what the status line said."""
    try:
        stack.wait_for(what, lambda: low_h <= _time_span_h(page) <= high_h, timeout=timeout)
    except AssertionError as exc:
        spans = [round(s / 3_600_000, 2) for s in page.evaluate(X_SPANS_JS)]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"dashboard-axis-{low_h:g}h.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{exc}; axes span {spans} h; status: {_status(page)!r}; {shot.name}") from None


def _status(page) -> str:
    return page.locator("text=/articles ·/").first.inner_text(timeout=30_000)


def test_live_window_and_history_range_change_the_axes(stack, page) -> None:
    page.goto(stack.api + "/dashboard")
    page.locator(".bk-Figure").nth(5).wait_for(timeout=60_000)
    stack.wait_for("the live 7-day window", lambda: "live 7 days" in _status(page), timeout=60)
    _wait_for_axis(stack, page, "a 7-day time axis", 160, 180, timeout=60)

    page.get_by_role("button", name="24 hours", exact=True).click()
    stack.wait_for(
        "the live 24-hour window", lambda: "live 24 hours · 15m buckets" in _status(page), timeout=30
    )
    _wait_for_axis(stack, page, "a 24-hour time axis", 23, 25.5, timeout=30)

    # History: a range typed into the picker (UTC) sets the axes and the bucket step.
    first = datetime.fromisoformat(stack.get("/healthz").json()["first_at"].replace("Z", "+00:00"))
    lo = first.replace(hour=0, minute=0, second=0, microsecond=0)
    hi = lo + timedelta(days=3)
    page.get_by_role("button", name="History", exact=True).click()
    picker = page.locator("input.flatpickr-input:visible, input.bk-input.form-control:visible").last
    picker.wait_for(timeout=30_000)
    picker.fill(f"{lo:%Y-%m-%d %H:%M:%S} to {hi:%Y-%m-%d %H:%M:%S}")
    picker.press("Enter")
    shown = f"history {lo:%Y-%m-%d %H:%M} – {hi:%Y-%m-%d %H:%M} UTC · 15m buckets"
    stack.wait_for("the picked history range", lambda: shown in _status(page), timeout=30)
    _wait_for_axis(stack, page, "a 3-day time axis", 71, 73, timeout=30)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True)

    page.get_by_role("button", name="Live", exact=True).click()  # back to the moving window
    stack.wait_for("the live window again", lambda: "live 24 hours" in _status(page), timeout=30)


def test_open_tabs_share_one_pulsar_reader_per_stream(stack, page) -> None:
    """However many tabs are open, the broker serves one live reader per stream per replica."""
    from cluster.pulsar_admin import topic_stats
    from cluster.topics import Topics

    topics = Topics.from_settings(stack.settings())
    tabs = [page.context.browser.new_page() for _ in range(3)]
    try:
        for tab in tabs:
            tab.goto(stack.api + "/dashboard")
        for tab in tabs:
            tab.locator(".bk-Figure").nth(5).wait_for(timeout=60_000)

        def readers(topic: str) -> list[str]:
            stats = topic_stats(stack.settings(), topic) or {}
            return [name for name in stats.get("subscriptions", {}) if name.startswith("reader")]

        for topic in (topics.news_scored.name, topics.aggregates.name, topics.events.name):
            assert len(readers(topic)) == 1, (topic, readers(topic))
    finally:
        for tab in tabs:
            tab.close()
