"""Screenshot of a running dashboard in headless Chromium (Debian's package, via Playwright).

    python -m ui.screenshot [--url http://127.0.0.1:8000/dashboard] [--out docs/dashboard.png] [--query TEXT]

It waits until the status line counts articles and every chart is drawn, lets one refresh
pass, and writes a full-page PNG. The README's screenshot is made this way from a
``make up`` replay of the recorded 2021-2022 news and prices.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

#: For ``page.evaluate``: the span (ms) of every datetime x range in the page's Bokeh documents,
#: one per linked group of charts (the browser tests and ``bench.dashboard_latency`` read the
#: time axis this way).
X_SPANS_JS = """() => {
  const spans = [];
  for (const doc of window.Bokeh.documents) {
    for (const m of doc.all_models) {
      const name = m.type ?? m.constructor.__name__;
      if (name === "Range1d" && typeof m.start === "number" && m.start > 1e12) spans.push(m.end - m.start);
    }
  }
  return spans;
}"""


def take(
    url: str,
    out: Path,
    *,
    query: str = "",
    width: int = 1400,
    height: int = 2400,
    settle_s: float = 3.0,
) -> int:
    """Write the screenshot (after searching ``query`` when given); returns the article count
    the page showed."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("screenshot: Debian's chromium is not installed (apt-get install chromium)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.locator(".bk-Figure").first.wait_for(timeout=120_000)
        status = page.locator("text=/articles ·/").first
        deadline = time.monotonic() + 120
        count = 0
        while time.monotonic() < deadline:
            match = re.search(r"([\d,]+)\s+articles", status.inner_text(timeout=60_000))
            count = int(match.group(1).replace(",", "")) if match else 0
            if count:
                break
            time.sleep(1)
        if query:
            box = page.locator("input[placeholder^='Search similar news']")
            box.fill(query)
            box.press("Enter")
            page.locator(".tabulator-cell[tabulator-field='score']").first.wait_for(timeout=60_000)
        time.sleep(settle_s)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/dashboard")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--query", default="", help="search this in the search box first")
    args = parser.parse_args(argv)
    count = take(args.url, args.out, query=args.query)
    sys.stdout.write(f"{args.out}: {count} articles on the page\n")
    return 0 if count else 1


if __name__ == "__main__":
    raise SystemExit(main())
