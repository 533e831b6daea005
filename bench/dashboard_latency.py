"""How long a new article takes to reach an open dashboard, on a running stack (``make up``).

    python -m bench.dashboard_latency [--url http://127.0.0.1:8000] [--n 20] [--gap 3]

A headless Chromium tab (Debian's package) opens the dashboard on the live 15-minute window.
Then, ``--n`` times, one real article of the recorded 2021-2022 news, dated now and with a URL
of its own, is published to ``news.raw`` (the same producer settings as the collectors), and
the script polls, in turn, the API (``GET /api/news/{id}``: the article is written and
readable) and the page (its status line counts one more article; its row, found by its URL,
is in the latest-news table). It reports, per article:

* ``published -> written``: the pipeline (analysis batch wait, models, stores);
* ``written -> on screen``: until the status line counts it (the aggregator has counted it
  and published its window, the live feed woke the session, which read the totals and the
  bucket and patched the page), the figure the dashboard's "within 1 s" target is about; it is
  split in two: ``written -> counted`` (``GET /healthz`` counts one more article: the
  aggregator's part) and ``counted -> on screen`` (the live feed and the page's part);
* ``written -> row in the news table``: the scored article itself on the page (the live feed
  hands it to the session as it was written; no read);
* ``published -> on screen``: the whole way, from the producer to the status line.

The polls alternate every ``--poll`` seconds, so each time is known to within one poll (and
the page's count is read through Playwright, a few ms a read). Nothing is asserted; the figures
are printed as a Markdown table and written as JSON beside the other benchmark results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.stack import NEWS, fresh_copy, real_items
from ui.screenshot import X_SPANS_JS


def _shown(page: Any) -> int:
    text = page.locator("text=/articles ·/").first.inner_text(timeout=30_000)
    match = re.search(r"([\d,]+)\s+articles", text)
    return int(match.group(1).replace(",", "")) if match else -1


def _counted(api: httpx.Client) -> int:
    """The articles the aggregator has counted (``/healthz``), -1 while it does not say."""
    articles = api.get("/healthz").json().get("articles")
    return int(articles) if articles is not None else -1


def _row_shown(page: Any, url: str) -> bool:
    """Whether the news table has the article's row (its link cell points at ``url``)."""
    return bool(
        page.locator(".tabulator-cell[tabulator-field='url'] a").evaluate_all(
            "(links, url) => links.some((a) => a.href === url || a.getAttribute('href') === url)", url
        )
    )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, n: int, gap_s: float, poll_s: float, news: Path) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    from cluster.settings import BtcpulseSettings
    from cluster.topics import Topics, connect, create_producer

    items = real_items([news])
    settings = BtcpulseSettings()
    client = connect(settings)
    producer = create_producer(client, Topics.from_settings(settings).news_raw)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("dashboard_latency: Debian's chromium is not installed")
    out: dict[str, list[float]] = {
        "written_s": [], "counted_s": [], "visible_s": [], "counted_visible_s": [], "row_s": [],
        "published_visible_s": [],
    }  # fmt: skip
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    with sync_playwright() as pw, httpx.Client(base_url=url, timeout=10) as api:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(url + "/dashboard")
        page.locator(".bk-Figure").first.wait_for(timeout=120_000)
        page.get_by_role("button", name="15 min", exact=True).click()
        time.sleep(2)
        for i in range(n):
            source = items[(i * 97) % len(items)]
            item = fresh_copy(source, f"latency-{run}-{i}")
            before = _shown(page)
            counted_before = _counted(api)
            t0 = time.monotonic()
            producer.send(item)
            written = counted = visible = row = None
            while time.monotonic() - t0 < 60 and None in (written, counted, visible, row):
                if written is None and api.get(f"/api/news/{item.id}").status_code == 200:
                    written = time.monotonic() - t0
                if counted is None and _counted(api) > counted_before:
                    counted = time.monotonic() - t0
                if visible is None and _shown(page) > before:
                    visible = time.monotonic() - t0
                if row is None and _row_shown(page, item.url):
                    row = time.monotonic() - t0
                time.sleep(poll_s)
            if written is None or counted is None or visible is None or row is None:
                raise SystemExit(
                    f"article {i} not seen within 60 s (written={written}, counted={counted}, "
                    f"visible={visible}, row={row})"
                )
            out["written_s"].append(written)
            out["counted_s"].append(max(0.0, counted - written))
            out["visible_s"].append(max(0.0, visible - written))
            out["counted_visible_s"].append(max(0.0, visible - counted))
            out["row_s"].append(max(0.0, row - written))
            out["published_visible_s"].append(visible)
            time.sleep(gap_s)
        browser.close()
    producer.close()
    client.close()
    return out


def history_paint(url: str, lo: datetime, hi: datetime, repeats: int = 5) -> dict[str, list[float]]:
    """Seconds, per fresh tab: ``open`` (navigation -> every chart drawn, live view) and
    ``history`` (a ``lo``-``hi`` range typed into the History picker -> the status line names
    it and the time axis spans it, i.e. every series of the range is read and drawn)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("dashboard_latency: Debian's chromium is not installed")
    span_ms = (hi - lo).total_seconds() * 1000
    out: dict[str, list[float]] = {"open": [], "history": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            t0 = time.monotonic()
            page.goto(url + "/dashboard")
            page.locator(".bk-Figure").nth(5).wait_for(timeout=120_000)
            _shown(page)
            out["open"].append(time.monotonic() - t0)
            page.get_by_role("button", name="History", exact=True).click()
            picker = page.locator("input.flatpickr-input:visible, input.bk-input.form-control:visible").last
            picker.wait_for(timeout=30_000)
            picker.fill(f"{lo:%Y-%m-%d %H:%M:%S} to {hi:%Y-%m-%d %H:%M:%S}")
            shown = f"history {lo:%Y-%m-%d %H:%M} – {hi:%Y-%m-%d %H:%M} UTC"
            t1 = time.monotonic()
            picker.press("Enter")
            while time.monotonic() - t1 < 120:
                text = page.locator("text=/articles ·/").first.inner_text(timeout=30_000)
                drawn = max(page.evaluate(X_SPANS_JS), default=0)
                if shown in text and abs(drawn - span_ms) <= 0.05 * span_ms:
                    break
                time.sleep(0.02)
            else:
                raise SystemExit(f"the {lo} - {hi} history view was not drawn within 120 s")
            out["history"].append(time.monotonic() - t1)
            page.close()
        browser.close()
    return out


def table(found: dict[str, list[float]]) -> str:
    rows = [
        "| stage | n | p50 | p95 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    stages = (
        ("published -> written (API)", "written_s"),
        ("written -> on screen (status line counts it)", "visible_s"),
        ("  of which written -> counted (the aggregator, /healthz)", "counted_s"),
        ("  of which counted -> on screen (live feed, page)", "counted_visible_s"),
        ("written -> row in the news table", "row_s"),
        ("published -> on screen", "published_visible_s"),
    )
    for name, key in stages:
        values = found[key]
        rows.append(
            f"| {name} | {len(values)} | {statistics.median(values) * 1000:.0f} ms "
            f"| {_quantile(values, 0.95) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between articles")
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--news", type=Path, default=NEWS)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--label", default="", help="added to the result file's name")
    args = parser.parse_args(argv)
    found = measure(args.url, args.n, args.gap, args.poll, args.news)
    md = table(found)
    sys.stdout.write(md + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    name = f"dashboard-latency-{stamp}{'-' + args.label if args.label else ''}.json"
    (args.out / name).write_text(
        json.dumps({"url": args.url, "load": os.getloadavg(), **found, "table": md}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
