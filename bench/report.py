"""The performance goals and what the latest ``make bench`` measured: ``python -m bench.report``.

Reads the newest ``bench/results/pipeline-<date>.json`` and ``pipeline-<date>-torch.json``
(``bench.pipeline`` with the defaults, int8 ONNX Runtime on the CPU, and with
``BTCPULSE_EMBED_BACKEND=torch``) and the newest
``search-<date>[-tag].json`` (``bench.search``), and writes one table, each figure against its
goal, to stdout and into the README between ``<!-- goals-table -->`` and ``<!-- /goals-table -->``.
Only results of the same date as the newest pipeline result are used, so the table is one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.run import update_readme

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MARKERS = ("<!-- goals-table -->", "<!-- /goals-table -->")
#: The pipeline runs of ``make bench``: the defaults, then the models on torch (``--label``).
LABELS = ("", "torch")


def newest(pattern: str, results: Path) -> list[Path]:
    """The files matching ``pattern`` of the newest date among them (``<kind>-YYYY-MM-DD...``)."""
    files = sorted(results.glob(pattern))
    if not files:
        return []
    day = max(f.name.split("-", 1)[1][:10] for f in files)
    return [f for f in files if f.name.split("-", 1)[1].startswith(day)]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def pipeline_rows(r: dict[str, Any]) -> list[str]:
    label = r.get("extra_env") or {}
    name = ", ".join(f"{k.removeprefix('BTCPULSE_').lower()}={v}" for k, v in label.items()) or "defaults"
    c, p, lat = r["ceiling"], r["pipeline"], r["latency"]
    rows = [
        f"| ceiling vs pipeline ({name}) | {p['items_per_s']:,.1f} / {c['items_per_s']:,.1f} items/s = "
        f"**{r['ratio']:.2f}** (analysis models alone: {r['ratio_analyzers']:.2f}) | >= 0.8 | "
        f"{yes(r['ratio'] >= 0.8)} |"
    ]
    for run in lat[:1]:
        for what, key in (("live stream", "stream"), ("searchable", "searchable")):
            s = run[key]
            ok = bool(s.get("n")) and s["p50_s"] <= 0.25 and s["p99_s"] <= 1.0
            rows.append(
                f"| publish -> {what} at {run['rate']:g}/s ({name}): p50 / p95 / p99 | "
                f"{ms(s.get('p50_s'))} / {ms(s.get('p95_s'))} / {ms(s.get('p99_s'))} | "
                f"p50 <= 250 ms, p99 <= 1 s | {yes(ok)} |"
            )
    for run in lat[1:]:
        s = run["stream"]
        rows.append(
            f"| publish -> live stream at {run['rate']:g}/s = 80 % of max ({name}): p50 / p99 | "
            f"{ms(s.get('p50_s'))} / {ms(s.get('p99_s'))} | (reported) | |"
        )
    d = r.get("dashboard")
    if d:
        w, h = d["written_visible"], d["history_30d"]
        rows.append(
            f"| dashboard: written -> on screen ({name}): p50 / max | {ms(w.get('p50_s'))} / "
            f"{ms(w.get('max_s'))} | <= 1 s | {yes(bool(w.get('n')) and w['max_s'] <= 1.0)} |"
        )
        c, v = d.get("written_counted"), d.get("counted_visible")
        if c and v:  # results written before the split have neither
            rows.append(
                f"| of which written -> counted (aggregator) / counted -> on screen (page), "
                f"{name}: p50 / max | {ms(c.get('p50_s'))} / {ms(c.get('max_s'))}; "
                f"{ms(v.get('p50_s'))} / {ms(v.get('max_s'))} | (reported) | |"
            )
        rows.append(
            f"| dashboard: first paint of a 30-day History view ({name}): p50 / max | "
            f"{ms(h.get('p50_s'))} / {ms(h.get('max_s'))} | (reported) | |"
        )
    idle, peak = r["idle_rss_mib"], p["peak_rss_mib"]
    rows.append(
        f"| memory, all processes ({name}): idle / under load | {sum(idle.values()):,.0f} / "
        f"{sum(peak.values()):,.0f} MiB | (reported) | |"
    )
    return rows


def search_rows(s: dict[str, Any]) -> list[str]:
    h = s["http"]
    rows = []
    for key, what in (("none", "no filter"), ("time", "30-day filter")):
        one, eight = h.get(f"{key}/1"), h.get(f"{key}/8")
        if not one or not eight:
            continue
        rows.append(
            f"| search at {s['corpus']['stored']:,} points, {what}: p99 1 / 8 clients | "
            f"{one['p99_ms']:.0f} / {eight['p99_ms']:.0f} ms | <= 50 ms | "
            f"{yes(one['p99_ms'] <= 50 and eight['p99_ms'] <= 50)} |"
        )
        rows.append(
            f"| search, {what}: QPS 1 / 8 clients | {one['qps']:.0f} / {eight['qps']:.0f} | >= 100 | "
            f"{yes(max(one['qps'], eight['qps']) >= 100)} |"
        )
        # Open loop: requests arrive at the offered rate whatever the server's pace; a server
        # that falls behind shows in p99 (latency counts from each request's due time).
        open_loop = [(k.rsplit("@", 1)[1], v) for k, v in h.items() if k.startswith(f"{key}/@")]
        for rate, at in sorted(open_loop, key=lambda kv: -float(kv[0])):  # the goal's rate first
            met = at["p99_ms"] <= 50 and float(rate) >= 100 and not at.get("errors")
            rows.append(
                f"| search, {what}: p50 / p99 at {rate}/s offered (open loop) | {at['p50_ms']:.0f} / "
                f"{at['p99_ms']:.0f} ms | <= 50 ms at >= 100/s | {yes(met)} |"
            )
        recall = one.get("recall@10")
        if recall is not None:
            rows.append(
                f"| search, {what}: recall@10 vs exact | {recall:.3f} | >= 0.95 | {yes(recall >= 0.95)} |"
            )
    return rows


def table(results: Path = RESULTS, labels: tuple[str, ...] = LABELS) -> str:
    runs = newest("pipeline-*.json", results)
    if not runs:
        raise SystemExit(f"no pipeline results under {results}: run python -m bench.pipeline")
    day = runs[0].name.split("-", 1)[1][:10]
    # the configurations make bench runs (other labels are one-off experiments of that day)
    pipelines = [
        p for lab in labels if (p := results / f"pipeline-{day}{'-' + lab if lab else ''}.json").exists()
    ]
    lines = [
        f"Measured by `make bench` on {day} (`bench/results/pipeline-{day}*.json`"
        + (f", `search-{day}*.json`" if newest(f"search-{day}*.json", results) else "")
        + "):",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | :---: |",
    ]
    loads = []
    for path in pipelines:
        r = json.loads(path.read_text())
        lines += pipeline_rows(r)
        loads.append(f"{r['load_before']}-{r['load_after']}")
    for path in newest(f"search-{day}*.json", results)[-1:]:
        lines += search_rows(json.loads(path.read_text()))
    lines += [
        "| GPU: embedding + sentiment on one H100 | not run in this run (no GPU machine) | >= 20,000 "
        "headlines/s | - |",
        "",
        f"Load average (1 min) before-after each pipeline run: {', '.join(loads)}; 2 CPU cores.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    md = table(args.results)
    sys.stdout.write(md + "\n")
    if not args.no_readme:
        update_readme(REPO / "README.md", md, MARKERS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
