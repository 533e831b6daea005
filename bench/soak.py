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
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = (
    DATA / "crypto_news_2021_2022" / "cryptonews.csv",
    DATA / "reddit_r_bitcoin_2021_2022" / "r_bitcoin_selfposts_2021-10-12_2022-07-05.csv",
)
PORT_OFFSET = 700
PORTS = {
    "BTCPULSE_PULSAR_BROKER_PORT": 6650,
    "BTCPULSE_PULSAR_WEB_PORT": 8080,
    "BTCPULSE_PULSAR_BOOKIE_PORT": 3181,
    "BTCPULSE_RAY_PORT": 6379,
    "BTCPULSE_RAY_DASHBOARD_PORT": 8265,
    "BTCPULSE_API_PORT": 8000,
}


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v + PORT_OFFSET) for k, v in PORTS.items()})
    env.update({"BTCPULSE_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cluster.cli", *args], env=env, cwd=REPO, check=True, timeout=900)


def _processes(state_dir: Path) -> dict[str, int]:
    """name -> pid of the stack's processes: Ray's actors by name, Pulsar, Ray's core."""
    from cluster.local.process import stack_processes

    found: dict[str, int] = {}
    for pid, cmd in stack_processes(state_dir).items():
        head = cmd[0].decode(errors="replace")
        if head.startswith("ray::"):
            name = head.removeprefix("ray::").split(".")[0].split(" ")[0]
            if name != "IDLE":
                found[name] = pid
        elif b"org.apache.pulsar.PulsarStandaloneStarter" in cmd:
            found["pulsar"] = pid
        elif head.endswith(("/gcs_server", "/raylet")):
            found["ray-" + head.rsplit("/", 1)[1]] = pid
        elif any(part.endswith(b"dashboard/dashboard.py") for part in cmd):
            found["ray-dashboard"] = pid
    return found


def _texts() -> list[Any]:
    from actors.replay import ReplayReport, read_file
    from cluster.records import NewsItem

    items: list[Any] = []
    for path in SOURCES:
        if path.exists():
            items.extend(
                r.record for r in read_file(path, report=ReplayReport()) if isinstance(r.record, NewsItem)
            )
    if not items:
        raise SystemExit(f"soak: no news files under {DATA}")
    return items


def soak(minutes: float, rate: float, every: float, out_dir: Path) -> dict[str, Any]:
    from cluster.pulsar_admin import subscription_backlog
    from cluster.records import NewsItem
    from cluster.settings import BtcpulseSettings
    from cluster.topics import Topics, connect, create_producer

    state_dir = Path(tempfile.mkdtemp(prefix="btcp-soak-"))
    env = _env(state_dir)
    os.environ.update(env)
    items = _texts()
    _say(f"soak: {minutes:g} min at {rate:g} articles/s over {len(items):,} real texts; state {state_dir}")
    _cli(env, "up", "--no-live")
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
                src = items[published % len(items)]
                stamp = datetime.now(UTC)
                producer.send_async(
                    NewsItem.create(
                        source=src.source,
                        url=f"{src.url}{'&' if '?' in src.url else '?'}soak={run}-{published}",
                        title=src.title,
                        summary=src.summary,
                        published_at=stamp,
                        fetched_at=stamp,
                    ),
                    None,
                )
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
        _cli(env, "down")
    return _report(samples, minutes, rate, out_dir)


def _sample(
    settings: Any, topics: Any, state_dir: Path, elapsed: float, published: int, backlog: Any
) -> dict:
    import httpx

    from cluster.local.process import rss_mb

    try:
        stored = httpx.get(f"{settings.api_url}/healthz", timeout=10).json().get("articles", -1)
    except (httpx.HTTPError, ValueError):
        stored = -1
    raw = backlog(settings, topics.news_raw.name, "analysis")
    scored = backlog(settings, topics.news_scored.name, "aggregator")
    memory = {name: round(rss_mb(pid) or 0) for name, pid in sorted(_processes(state_dir).items())}
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
