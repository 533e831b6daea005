"""The whole system against its models, in one run: ``make bench`` (or ``python -m bench.pipeline``).

    python -m bench.pipeline [--n 1024] [--latency-s 60] [--rate 20] [--out bench/results]

On the same texts (the first ``--n`` articles of the real 2021-2022 news, headline + summary, as
the replay reads them), one after the other on this machine:

1. **Ceiling**: the models alone in this process (:class:`models.pipeline.Analyzer` as the
   settings build it for the analysis actors, through :func:`actors.analysis.analyze`, what an
   actor runs per batch), at batch sizes 16, 32, 64 and 128, after an untimed warm-up; the
   fastest is the ceiling. No stack runs meanwhile.
2. **Pipeline**: a stack of its own (``up --no-live``, ports 900 above the defaults). After a
   warm-up of 64 other real articles, the ``--n`` articles are replayed into ``news.raw`` as fast
   as the replay publishes (``actors.sources.ReplayPublisher``, what ``btcpulse replay`` runs),
   and the clock runs until the API counts all of them stored (``/healthz``: points in the vector
   store, each written after its models, topic and story). Rate = n / that time; ratio =
   pipeline / ceiling.
3. **Latency**: fresh copies of real articles (dated now, URLs of their own) published one by
   one at ``--rate`` a second for ``--latency-s`` seconds, then at 80 % of the pipeline's rate
   from step 2. For each article: publish -> on the live stream (``GET /api/stream``, read
   by a client held open the whole time: every article), and publish -> searchable
   (``GET /api/news/{id}`` answers 200; probed for every ``--sample``-th article only, one
   request every 50 ms for the oldest one waited on, so that the probe's load is bounded and
   cannot make the latency it measures). p50 / p95 / p99, and each process's CPU seconds.
4. **Memory**: resident MiB of each of the stack's processes when idle (after the warm-up),
   and the most seen while the replay's backlog was processed (sampled every second).

Nothing is asserted. Results: ``<out>/pipeline-<date>.json`` and a Markdown table on stdout
(``bench.run`` adds it to its own table when run by ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stack import NEWS, REDDIT, cpu_seconds, fresh_copy, memory_mib, own_stack, real_items

PORT_OFFSET = 900
BATCH_SIZES: tuple[int, ...] = (16, 32, 64, 128)
#: Warm-up articles (other real texts): more than the topic model's first fit needs (400), so
#: its first fit and one-off JIT are done before anything is timed.
WARMUP = 448
#: How often the latency run's prober asks the API for each article it waits on.
PROBE_S = 0.05
GOALS = {"ratio": 0.8, "p50_s": 0.25, "p99_s": 1.0}


def say(text: str) -> None:
    sys.stderr.write(f"[pipeline] {text}\n")
    sys.stderr.flush()


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --------------------------------------------------------------------------------------------
# 1. the models alone
# --------------------------------------------------------------------------------------------


def ceiling(
    items: Sequence[Any], warm: Sequence[Any], settings: Any, batches: Sequence[int] = BATCH_SIZES
) -> dict[str, Any]:
    """Items/s of the models alone over ``items``, at each batch size.

    ``analyzers``: :func:`actors.analysis.analyze` (embedder, sentiment, categories: what an
    analysis actor computes itself). ``all models``: the same, then what the other stages run
    per article with its vectors: the online topic model (assign, and its learning of every
    ``topic_refit_every`` documents, done in line here) and the story tracker. Both start warm:
    the models have run on ``warm`` (the topic model's first fit and its one-off JIT included).
    """
    from actors.analysis import analyze, analyzer_for
    from actors.vector_store import story_tracker
    from models.device import torch_threads
    from models.topics import OnlineTopicModel

    analyzer = analyzer_for(settings)
    warmed = analyze(list(warm), analyzer)
    rates: dict[str, dict[int, float]] = {"analyzers": {}, "all models": {}}
    for b in batches:
        analyzer.batch_size = b
        t0 = time.perf_counter()
        for i in range(0, len(items), b):
            analyze(list(items[i : i + b]), analyzer)
        rates["analyzers"][b] = len(items) / (time.perf_counter() - t0)
        say(f"ceiling, analyzers: batch {b}: {rates['analyzers'][b]:.1f} items/s")
    best = max(rates["analyzers"], key=lambda b: rates["analyzers"][b])
    # The topic model's learning makes every pass different: one pass, at the best batch size.
    analyzer.batch_size = best
    topics = OnlineTopicModel(refit_every=settings.topic_refit_every)
    topics.assign([it.text for it in warm], warmed.vectors, [it.published_ts for it in warm])
    topics.learn()
    stories = story_tracker(settings)
    t0 = time.perf_counter()
    for i in range(0, len(items), best):
        chunk = list(items[i : i + best])
        done = analyze(chunk, analyzer)
        ts = [it.published_ts for it in chunk]
        topics.assign([it.text for it in chunk], done.vectors, ts)
        stories.assign([it.id for it in chunk], done.vectors, ts)
        topics.learn()  # folds a chunk when refit_every documents are buffered, else nothing
    rates["all models"][best] = len(items) / (time.perf_counter() - t0)
    say(f"ceiling, all models: batch {best}: {rates['all models'][best]:.1f} items/s")
    return {
        "items": len(items),
        "rates": {k: {str(b): round(r, 2) for b, r in v.items()} for k, v in rates.items()},
        "best_batch": best,
        "analyzers_per_s": round(rates["analyzers"][best], 2),
        "items_per_s": round(rates["all models"][best], 2),
        "model": analyzer.name,
        "torch_threads": torch_threads(),
    }


# --------------------------------------------------------------------------------------------
# 2. the whole system
# --------------------------------------------------------------------------------------------


def analysis_seconds(api: Any) -> dict[str, float]:
    """The analysis stage's time per phase so far, and its batches (``/api/pipeline``)."""
    stages = api.get("/api/pipeline").json()["stages"]
    row: dict[str, Any] = next((s for s in stages if s["stage"] == "analysis"), {})
    return {**row.get("seconds", {}), "batches": float(row.get("batches", 0))}


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What grew between two readings (CPU seconds, phase seconds), the largest first."""
    grown = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in grown.items() if v >= 0.05), key=lambda kv: -kv[1]))


def stored(api: Any) -> int:
    return int(api.get("/healthz").json().get("articles", -1))


def wait_stored(api: Any, target: int, timeout_s: float, on_tick: Any = None) -> float | None:
    """Seconds (monotonic clock) when the store holds ``target`` articles, or ``None``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stored(api) >= target:
            return time.monotonic()
        if on_tick is not None:
            on_tick()
        time.sleep(0.25)
    return None


def replay_rows(n: int, settings: Any) -> list[Any]:
    """The first ``n`` news rows of the 2021-2022 file in the replay's (time) order."""
    from actors.sources import load_rows
    from cluster.records import NewsItem

    rows, _ = load_rows([NEWS], start=None, end=None, limit=n, settings=settings)
    return [r for r in rows if isinstance(r.record, NewsItem)]


def pipeline(env: dict[str, str], api: Any, rows: Sequence[Any], settings: Any) -> dict[str, Any]:
    from actors.sources import ReplayProgress, ReplayPublisher

    state = Path(env["BTCPULSE_STATE_DIR"])
    before = stored(api)
    peak: dict[str, float] = {}

    def sample() -> None:
        for name, mib in memory_mib(state).items():
            peak[name] = max(peak.get(name, 0.0), mib)

    phases0 = analysis_seconds(api)
    cpu0 = cpu_seconds(state)
    t0 = time.monotonic()
    ReplayPublisher(settings, "bench-" + datetime.now(UTC).strftime("%H%M%S")).run(
        list(rows), 0.0, ReplayProgress(total=len(rows)), threading.Event()
    )
    published_s = time.monotonic() - t0
    last_sample = [0.0]

    def tick() -> None:
        if time.monotonic() - last_sample[0] >= 1.0:
            sample()
            last_sample[0] = time.monotonic()

    done = wait_stored(api, before + len(rows), 900, tick)
    if done is None:
        raise SystemExit(f"pipeline: {stored(api) - before} of {len(rows)} stored after 15 min")
    wall = done - t0
    phases1 = analysis_seconds(api)
    cpu1 = cpu_seconds(state)
    return {
        "cpu_s": spent(cpu0, cpu1),
        "analysis_seconds": spent(phases0, phases1),
        "items": len(rows),
        "published_s": round(published_s, 2),
        "searchable_s": round(wall, 2),
        "items_per_s": round(len(rows) / wall, 2),
        "peak_rss_mib": peak,
    }


# --------------------------------------------------------------------------------------------
# 3. latency
# --------------------------------------------------------------------------------------------


class Stream:
    """A client of ``/api/stream?kinds=article``: when each article id arrived."""

    def __init__(self, url: str) -> None:
        self.seen: dict[str, float] = {}
        self._url = url
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._open.wait(30):
            raise SystemExit("pipeline: the live stream did not open")

    def _run(self) -> None:
        import httpx

        try:
            self._read(httpx)
        except httpx.HTTPError:  # the stack went down at the end of the run
            return

    def _read(self, httpx: Any) -> None:
        with httpx.stream("GET", self._url + "/api/stream", params={"kinds": "article"}, timeout=None) as r:
            for line in r.iter_lines():
                self._open.set()
                if line.startswith("data: "):
                    self.seen.setdefault(json.loads(line[6:])["id"], time.monotonic())


def latency(
    api_url: str, stream: Stream, items: Sequence[Any], rate: float, seconds: float, sample: int, tag: str
) -> dict[str, Any]:
    """Publish at ``rate`` for ``seconds``; each article's time to the stream and to the API."""
    import httpx

    from cluster.settings import BtcpulseSettings
    from cluster.topics import Topics, connect, create_producer

    settings = BtcpulseSettings()
    client = connect(settings)
    producer = create_producer(client, Topics.from_settings(settings).news_raw)
    sent: dict[str, float] = {}
    searchable: dict[str, float] = {}
    pending: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=api_url, timeout=10) as api:
            # One request per PROBE_S, for the oldest article waited on (they are written in
            # about the order they were sent): the probe's load stays the same however far
            # behind the system is, so it cannot make the latency it measures.
            while not stop.is_set():
                with lock:
                    oldest = pending[0] if pending else None
                if oldest is not None and api.get(f"/api/news/{oldest}").status_code == 200:
                    searchable[oldest] = time.monotonic()
                    with lock:
                        pending.pop(0)
                    continue  # the next may be there already
                time.sleep(PROBE_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    state = Path(settings.state_dir)
    reader = httpx.Client(base_url=api_url, timeout=30)
    cpu0, phases0 = cpu_seconds(state), analysis_seconds(reader)
    total = max(1, round(rate * seconds))
    t0 = time.monotonic()
    for k in range(total):
        due = t0 + k / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        item = fresh_copy(items[k % len(items)], f"{tag}-{k}")
        sent[item.id] = time.monotonic()
        producer.send_async(item, None, partition_key=item.id)
        if k % sample == 0:
            with lock:
                pending.append(item.id)
    producer.flush()
    publish_s = time.monotonic() - t0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (pending or any(i not in stream.seen for i in sent)):
        time.sleep(0.1)
    stop.set()
    poller.join(timeout=15)
    cpu1, phases1 = cpu_seconds(state), analysis_seconds(reader)
    reader.close()
    producer.close()
    client.close()
    live = [stream.seen[i] - t for i, t in sent.items() if i in stream.seen]
    found = [searchable[i] - sent[i] for i in searchable]
    return {
        "rate": round(rate, 2),
        "achieved_rate": round(total / publish_s, 2),
        "published": total,
        "stream": summary(live, total),
        "searchable": summary(found, (total + sample - 1) // sample),
        "cpu_s": spent(cpu0, cpu1),
        "analysis_seconds": spent(phases0, phases1),
        "load": load(),
    }


def summary(values: Sequence[float], expected: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "missing": expected}
    return {
        "n": len(values),
        "missing": expected - len(values),
        "p50_s": round(statistics.median(values), 4),
        "p95_s": round(quantile(values, 0.95), 4),
        "p99_s": round(quantile(values, 0.99), 4),
        "max_s": round(max(values), 4),
    }


# --------------------------------------------------------------------------------------------
# run, report
# --------------------------------------------------------------------------------------------


def run(n: int, rate: float, seconds: float, sample: int, extra: dict[str, str]) -> dict[str, Any]:
    import httpx

    from cluster.settings import BtcpulseSettings

    os.environ.update(extra)  # the ceiling runs the models as the stack's settings say
    settings = BtcpulseSettings()
    rows = replay_rows(n, settings)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra_env": extra,
        "load_before": load(),
    }
    others = real_items([REDDIT])
    warm = [fresh_copy(it, f"warm-{i}") for i, it in enumerate(others[:WARMUP])]
    result["ceiling"] = ceiling([r.record for r in rows], warm, settings)
    with own_stack(PORT_OFFSET, extra, prefix="btcp-pipeline-") as env:
        state = Path(env["BTCPULSE_STATE_DIR"])
        settings = BtcpulseSettings()
        api_url = settings.api_url
        with httpx.Client(base_url=api_url, timeout=30) as api:
            _publish_all(settings, warm)
            if wait_stored(api, len(warm), 300) is None:
                raise SystemExit("pipeline: the warm-up articles were not stored within 5 min")
            deadline = time.monotonic() + 300
            while not api.get("/api/topics").json()["results"]:  # the first fit is done
                if time.monotonic() > deadline:
                    raise SystemExit("pipeline: the topic model did not learn its first topics in 5 min")
                time.sleep(1)
            time.sleep(5)
            result["idle_rss_mib"] = memory_mib(state)
            result["pipeline"] = pipeline(env, api, rows, settings)
            result["ratio"] = round(result["pipeline"]["items_per_s"] / result["ceiling"]["items_per_s"], 3)
            result["ratio_analyzers"] = round(
                result["pipeline"]["items_per_s"] / result["ceiling"]["analyzers_per_s"], 3
            )
            say(f"pipeline {result['pipeline']['items_per_s']} items/s, ratio {result['ratio']}")
            stream = Stream(api_url)
            runs = []
            for r in (rate, 0.8 * result["pipeline"]["items_per_s"]):
                tag = f"lat{round(r)}-" + datetime.now(UTC).strftime("%H%M%S")
                found = latency(api_url, stream, others[WARMUP:], r, seconds, sample, tag)
                say(f"latency at {r:.1f}/s: {json.dumps(found)}")
                runs.append(found)
            result["latency"] = runs
            result["points"] = stored(api)
            result["dashboard"] = dashboard(api_url, rows)
    result["load_after"] = load()
    return result


def dashboard(api_url: str, rows: Sequence[Any], repeats: int = 5) -> dict[str, Any]:
    """The dashboard in headless Chromium: a new article written -> on screen (live window), and
    the first paint of a 30-day History view over the replayed articles' first 30 days."""
    from bench.dashboard_latency import history_paint, measure

    lo = datetime.fromtimestamp(min(r.record.published_ts for r in rows), UTC)
    lo = lo.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    hi = lo + timedelta(days=30)
    live = measure(api_url, 10, 1.0, 0.02, NEWS)
    paint = history_paint(api_url, lo, hi, repeats)
    return {
        "range": [lo.isoformat(), hi.isoformat()],
        "written_visible": summary(live["visible_s"], 10),
        "written_counted": summary(live["counted_s"], 10),
        "counted_visible": summary(live["counted_visible_s"], 10),
        "open": summary(paint["open"], repeats),
        "history_30d": summary(paint["history"], repeats),
    }


def _publish_all(settings: Any, items: Sequence[Any]) -> None:
    from cluster.topics import Topics, connect, create_producer

    client = connect(settings)
    producer = create_producer(client, Topics.from_settings(settings).news_raw)
    for item in items:
        producer.send_async(item, None, partition_key=item.id)
    producer.flush()
    producer.close()
    client.close()


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:,.0f}"


def table(result: dict[str, Any]) -> str:
    c, p = result["ceiling"], result["pipeline"]
    lines = [
        "### The system against its models (bench.pipeline)",
        "",
        "| measurement | figure | goal | met |",
        "| --- | ---: | ---: | :---: |",
        f"| ceiling: all the models alone, one process, best batch ({c['best_batch']}) "
        f"| {c['items_per_s']:,.1f} items/s | | |",
        f"| ceiling: the analysis actor's models alone (embed, sentiment, categories) "
        f"| {c['analyzers_per_s']:,.1f} items/s | | |",
        f"| pipeline: replay -> searchable, {p['items']:,} articles | {p['items_per_s']:,.1f} items/s | | |",
        f"| ratio pipeline / ceiling (all the models) | {result['ratio']:.2f} | >= {GOALS['ratio']} "
        f"| {'yes' if result['ratio'] >= GOALS['ratio'] else 'no'} |",
        f"| ratio pipeline / ceiling (the analysis actor's models) | {result['ratio_analyzers']:.2f} | | |",
    ]
    for i, run_ in enumerate(result["latency"]):
        for what, key in (("on the live stream", "stream"), ("searchable in the API", "searchable")):
            s = run_[key]
            goal = i == 0
            met = goal and s.get("n") and s["p50_s"] <= GOALS["p50_s"] and s["p99_s"] <= GOALS["p99_s"]
            lines.append(
                f"| publish -> {what} at {run_['rate']:g}/s{'' if goal else ' (80 % of max)'}: "
                f"p50 / p95 / p99 ms (n {s.get('n', 0)}) | {ms(s.get('p50_s'))} / {ms(s.get('p95_s'))} "
                f"/ {ms(s.get('p99_s'))} | {'p50 <= 250, p99 <= 1,000' if goal else ''} "
                f"| {('yes' if met else 'no') if goal else ''} |"
            )
    d = result.get("dashboard")
    if d:
        w, o, h = d["written_visible"], d["open"], d["history_30d"]
        lines += [
            f"| dashboard: written -> on screen, live window: p50 / max ms (n {w['n']}) "
            f"| {ms(w.get('p50_s'))} / {ms(w.get('max_s'))} | 1,000 | "
            f"{'yes' if w.get('n') and w['max_s'] <= 1.0 else 'no'} |",
            f"| dashboard: opened -> every chart drawn: p50 / max ms (n {o['n']}) "
            f"| {ms(o.get('p50_s'))} / {ms(o.get('max_s'))} | | |",
            f"| dashboard: 30-day History view, range entered -> drawn: p50 / max ms (n {h['n']}) "
            f"| {ms(h.get('p50_s'))} / {ms(h.get('max_s'))} | | |",
        ]
    idle, peak = result["idle_rss_mib"], p["peak_rss_mib"]
    lines += ["", "| process | MiB idle | MiB under load (peak) |", "| --- | ---: | ---: |"]
    for name in sorted(set(idle) | set(peak)):
        lines.append(f"| {name} | {idle.get(name, 0):,.0f} | {peak.get(name, 0):,.0f} |")
    lines.append(f"| **total** | {sum(idle.values()):,.0f} | {sum(peak.values()):,.0f} |")
    rates = ", ".join(f"{b}: {r:,.1f}" for b, r in c["rates"]["analyzers"].items())
    phases = p.get("analysis_seconds") or {}
    spent = ", ".join(f"{k} {v:g} s" for k, v in phases.items()) or "not reported"
    cpu = ", ".join(f"{k} {v:g}" for k, v in p.get("cpu_s", {}).items())
    lines += [
        "",
        f"Ceiling of the analysis actor's models by batch size (items/s): {rates}; all the models: "
        f"embedder, sentiment, categories, topic model (assign and learning, in line), story tracker; "
        f"model {c['model']}, torch threads {c['torch_threads']}. "
        f"Pipeline: published in {p['published_s']} s, all searchable {p['searchable_s']} s after the "
        f"first publish; the analysis actors' time in it: {spent}; CPU seconds of each process in it: "
        f"{cpu}. "
        f"Latency: every article on the stream, every {result.get('sample', 4)}th polled "
        f"in the API; achieved rates {', '.join(str(r['achieved_rate']) for r in result['latency'])}/s. "
        f"Load average {result['load_before']} before, {result['load_after']} after. "
        f"Extra settings: {result['extra_env'] or 'none'}.",
        "",
        "Command: `python -m bench.pipeline`",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="articles for the ceiling and the replay")
    parser.add_argument("--rate", type=float, default=20.0, help="articles/s of the first latency run")
    parser.add_argument("--latency-s", type=float, default=60.0)
    parser.add_argument("--sample", type=int, default=10, help="probe the API for every k-th article")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the stack (repeat)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.env)
    result = run(args.n, args.rate, args.latency_s, args.sample, extra)
    result["sample"] = args.sample
    md = table(result)
    sys.stdout.write(md + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    name = f"pipeline-{stamp}{'-' + args.label if args.label else ''}"
    (args.out / f"{name}.json").write_text(json.dumps({**result, "table": md}, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
