"""Soak: a steady stream of real articles through the whole system, memory and backlog over time.

    python -m bench.soak [--minutes 30] [--rate 50] [--every 30] [--out bench/results]
    make soak                              (the same, 30 minutes at 50 articles/s)

It starts a stack of its own (the CLI's ``up --no-live``, on ports 700 above the defaults and
a state directory of its own, so a running ``make up`` is left alone), publishes real
articles of the 2021-2022 news and r/Bitcoin to ``news.raw`` at ``--rate`` a second, dated
now (a live stream: the dashboard's live window moves), each with a URL of its own so every
one is new, and every ``--every`` seconds prints one line: articles published and stored,
each consuming stage's backlog, and the resident memory of each process of the stack.

At the end it prints, per process, the memory at the end of the warm-up (the first fifth),
at the end, and the growth between them per 10 minutes; a process whose memory grew by more
than 10 % after the warm-up is flagged. Then it stops the stack. Nothing is asserted: the
figures go to ``bench/results/soak-<date>.{tsv,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stack import btcpulse, fresh_copy, memory_mib, real_items, stack_env

REPO = Path(__file__).resolve().parents[1]
PORT_OFFSET = 700


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def soak(minutes: float, rate: float, every: float, out_dir: Path) -> dict[str, Any]:
    from cluster.pulsar_admin import subscription_backlog
    from cluster.settings import BtcpulseSettings
    from cluster.topics import Topics, connect, create_producer

    state_dir = Path(tempfile.mkdtemp(prefix="btcp-soak-"))
    env = stack_env(PORT_OFFSET, state_dir)
    os.environ.update(env)
    items = real_items()
    _say(f"soak: {minutes:g} min at {rate:g} articles/s over {len(items):,} real texts; state {state_dir}")
    btcpulse(["up", "--no-live"], env)
    settings = BtcpulseSettings()
    topics = Topics.from_settings(settings)
    client = connect(settings)
    producer = create_producer(client, topics.news_raw)
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    samples: list[dict[str, Any]] = []
    published = 0
    t0 = time.monotonic()
    next_sample = t0
    try:
        while (now := time.monotonic()) - t0 < minutes * 60:
            due = int((now - t0) * rate)
            while published < due:
                item = fresh_copy(items[published % len(items)], f"soak-{run}-{published}")
                producer.send_async(item, None, partition_key=item.id)
                published += 1
            if now >= next_sample:
                samples.append(
                    _sample(settings, topics, state_dir, now - t0, published, subscription_backlog)
                )
                next_sample += every
            time.sleep(0.02)
        producer.flush()
        # The stream ends: sample on until the backlog has drained (or 10 minutes).
        drain_until = time.monotonic() + 600
        while True:
            elapsed = time.monotonic() - t0
            samples.append(_sample(settings, topics, state_dir, elapsed, published, subscription_backlog))
            last = samples[-1]
            if (
                last["backlog_analysis"] == 0 and last["backlog_aggregator"] == 0
            ) or time.monotonic() > drain_until:
                break
            time.sleep(min(every, 10))
    finally:
        producer.close()
        client.close()
        btcpulse(["down"], env)
    return _report(samples, minutes, rate, out_dir)


def _sample(
    settings: Any, topics: Any, state_dir: Path, elapsed: float, published: int, backlog: Any
) -> dict:
    import httpx

    try:
        stored = httpx.get(f"{settings.api_url}/healthz", timeout=10).json().get("articles", -1)
    except (httpx.HTTPError, ValueError):
        stored = -1
    raw = backlog(settings, topics.news_raw.name, "analysis")
    scored = backlog(settings, topics.news_scored.name, "aggregator")
    memory = {name: round(mib) for name, mib in memory_mib(state_dir).items()}
    row = {
        "t_s": round(elapsed),
        "published": published,
        "stored": stored,
        "backlog_analysis": raw.backlog if raw else None,
        "backlog_aggregator": scored.backlog if scored else None,
        "rss_mib": memory,
    }
    mem = " ".join(f"{k}={v}" for k, v in memory.items())
    _say(
        f"{row['t_s']:>6}s published {published:>7} stored {stored:>7} backlog "
        f"{row['backlog_analysis']}/{row['backlog_aggregator']}  MiB: {mem}"
    )
    return row


def _report(samples: list[dict[str, Any]], minutes: float, rate: float, out_dir: Path) -> dict[str, Any]:
    warm = samples[max(1, len(samples) // 5)] if len(samples) > 2 else samples[0]
    last = samples[-1]
    span_min = max(1e-9, (last["t_s"] - warm["t_s"]) / 60)
    lines = [
        "| process | MiB after warm-up | MiB at end | growth per 10 min | flat |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    verdict = {}
    for name, end in sorted(last["rss_mib"].items()):
        start = warm["rss_mib"].get(name)
        if not start:
            continue
        per10 = (end - start) / span_min * 10
        flat = end <= start * 1.10
        verdict[name] = flat
        lines.append(f"| {name} | {start} | {end} | {per10:+.1f} | {'yes' if flat else 'NO'} |")
    table = "\n".join(lines)
    _say("\n" + table)
    _say(
        f"\npublished {last['published']:,} in {last['t_s']} s; stored {last['stored']:,}; "
        f"final backlog analysis {last['backlog_analysis']}, aggregator {last['backlog_aggregator']}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    keys = ["t_s", "published", "stored", "backlog_analysis", "backlog_aggregator"]
    names = sorted({n for s in samples for n in s["rss_mib"]})
    with (out_dir / f"soak-{stamp}.tsv").open("w", encoding="utf-8") as out:
        out.write("\t".join(keys + [f"rss_mib_{n}" for n in names]) + "\n")
        for s in samples:
            out.write(
                "\t".join([str(s[k]) for k in keys] + [str(s["rss_mib"].get(n, "")) for n in names]) + "\n"
            )
    result = {"minutes": minutes, "rate": rate, "samples": samples, "flat": verdict, "table": table}
    (out_dir / f"soak-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=50.0, help="articles per second")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    soak(args.minutes, args.rate, args.every, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
