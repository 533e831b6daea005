"""Faults on the real stack: each test replays 2,000 real articles of the 2021-2022 news
while one fault strikes, and the final stores must equal those of a clean run of the same
articles: every article once in Qdrant with the same analysis, every hourly count of the
aggregates the same, the totals up by exactly 2,000 (0 lost, 0 counted twice).

Each run publishes its own copy of the same rows (the article URLs gain ``?copy=<run>``, the
source becomes ``fault-<run>``), so the runs share one stack and stay apart in the stores. A
clean run goes first; every fault run is compared with it. Runs after the other integration
tests (they count from an empty stack) and leaves the stack up for the browser tests.

    kill-analysis      kill -9 of the analysis actor's process, five times during the run
    kill-aggregator    kill -9 of the aggregator's process
    broker-outage      Pulsar stopped for 30 s while the replay publishes, then started again
    down-up            ``btcpulse down`` while the backlog drains, then ``btcpulse up``
    crash-before-ack   both consumers crash after their writes and before the acknowledgement
    poison             three messages the models fail on, amid the 2,000

Recovery time (fault to the next processed batch) is printed per fault, for the README.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.replay import ReplayReport, read_file
from cluster.local.process import http_ok, rss_mb, stack_processes
from cluster.records import NewsItem, format_time
from cluster.topics import PRODUCER_BATCH_MAX
from tests.conftest import ARTIFACTS, REPO

pytestmark = pytest.mark.integration

N = 2000
SKIP = 500  # test_pipeline's rows (the first 500 in time); these runs take the next 2,000
RESULTS = ARTIFACTS / "faults.tsv"

_RAY_CALL = """
import json, sys, ray
address, namespace, actor, method, args = sys.argv[1:6]
ray.init(address=address, namespace=namespace, logging_level="ERROR", log_to_driver=False)
print(json.dumps(ray.get(getattr(ray.get_actor(actor), method).remote(*json.loads(args)), timeout=60)))
"""


@dataclass
class Observed:
    """What the stores hold for one run's copy."""

    articles: dict[str, tuple[str, float]]  # original URL -> (sentiment label, score)
    hourly: dict[str, int]  # bucket start -> articles of this copy (aggregates)
    stored_total: int  # vector points of this copy


# -- the stack's processes and actors ----------------------------------------------------------
def _stack_pids(stack, prefix: str) -> list[int]:
    """Processes whose command line starts with ``prefix`` and that belong to this stack."""
    return [
        pid for pid, cmd in stack_processes(stack.state_dir).items() if cmd[0].startswith(prefix.encode())
    ]


def _kill9(stack, prefix: str) -> int:
    pids = _stack_pids(stack, prefix)
    assert len(pids) == 1, f"expected one {prefix} process of this stack, found {pids}"
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def _ray_call(stack, actor: str, method: str, *args: object) -> object:
    settings = stack.settings()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RAY_CALL,
            f"127.0.0.1:{settings.ray_port}",
            settings.ray_namespace,
            actor,
            method,
            json.dumps(list(args)),
        ],
        env=stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(news_csv: Path) -> list[NewsItem]:
    report = ReplayReport()
    news = [r.record for r in read_file(news_csv, report=report)]
    assert len(news) >= SKIP + N
    return news[SKIP : SKIP + N]


def _copy_file(tmp: Path, run: str, rows: list[NewsItem], extra: list[dict] | None = None) -> Path:
    path = tmp / f"{run}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for item in rows:
            sep = "&" if "?" in item.url else "?"
            line = {
                "published_at": item.published_at,
                "source": f"fault-{run}",
                "url": f"{item.url}{sep}copy={run}",
                "title": item.title,
                "summary": item.summary,
            }
            out.write(json.dumps(line) + "\n")
        for line in extra or []:
            out.write(json.dumps(line) + "\n")
    return path


def _original_url(url: str, run: str) -> str:
    # canonical URLs sort their query: the copy parameter may sit anywhere in it
    return url.replace(f"copy={run}&", "").replace(f"&copy={run}", "").replace(f"?copy={run}", "")


def _stored(stack, source: str) -> int:
    """Articles of ``source`` in the vector store (newest-first pages of /api/news)."""
    return len(_articles(stack, source))


def _articles(stack, source: str) -> list[dict]:
    found: list[dict] = []
    before: str | None = None
    while True:
        params: dict[str, object] = {"source": source, "limit": 500}
        if before:
            params["before"] = before
        body = stack.get("/api/news", **params).json()
        found.extend(body["results"])
        before = body.get("next_before")
        if not before or not body["results"]:
            return found


def _observe(stack, run: str, rows: list[NewsItem]) -> Observed:
    source = f"fault-{run}"
    articles = _articles(stack, source)
    first, last = min(item.published_ts for item in rows), max(item.published_ts for item in rows)
    start, end = format_time(first // 3600 * 3600), format_time((last // 3600 + 1) * 3600)
    body = stack.get("/api/series", start=start, end=end, step="1h").json()
    hourly = {
        b["start"]: dict(zip(b["sources"], b["source_counts"], strict=True)).get(source, 0)
        for b in body["buckets"]
    }
    return Observed(
        articles={_original_url(a["url"], run): (a["sentiment_label"], a["sentiment"]) for a in articles},
        hourly={k: v for k, v in hourly.items() if v},
        stored_total=len(articles),
    )


def _totals(stack) -> tuple[int, int]:
    """(articles in the aggregates, points in the vector store), once both answer: right after a
    fault the stage that holds one may still be coming back."""

    def read() -> tuple[int, int] | None:
        articles = stack.get("/healthz").json().get("articles")
        points = [
            int(float(line.split()[-1]))
            for line in stack.get("/metrics").text.splitlines()
            if line.startswith("btcpulse_vector_points ")
        ]
        return (articles, points[0]) if articles is not None and points else None

    return stack.wait_for("the stores' totals", read, timeout=300)


def _wait_complete(stack, run: str, timeout: float = 900) -> None:
    source = f"fault-{run}"
    stack.wait_for(
        f"{N} articles of {source} stored and counted",
        lambda: _stored(stack, source) >= N and stack.drained(),
        timeout=timeout,
        every=3,
    )


def _progress(stack, run: str, at_least: int, timeout: float = 600) -> int:
    """Wait until ``at_least`` articles of the run are stored; returns how many are."""
    source = f"fault-{run}"
    got = stack.wait_for(
        f"{at_least} articles of {source}",
        lambda: (n := _stored(stack, source)) >= at_least and n,
        timeout=timeout,
        every=1,
    )
    return int(got)


def _record(fault: str, what: str, lost: int, duplicated: int, recovery_s: float | None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", encoding="utf-8") as out:
        w = csv.writer(out, delimiter="\t")
        if new:
            w.writerow(["fault", "what happened", "lost", "duplicated", "recovery_s"])
        w.writerow([fault, what, lost, duplicated, "" if recovery_s is None else f"{recovery_s:.1f}"])
    print(f"{fault}: lost {lost}, duplicated {duplicated}, recovery {recovery_s}")


# The clean run's burst, sampled while it drains: (phase, s, backlog entries, unacked messages,
# analysis RSS MiB, articles stored). The broker counts its backlog in entries (a producer's
# batch is one), so the messages still to process are N - stored.
BURST: list[tuple[str, float, int, int, float, int]] = []


def _analysis_rss(stack) -> float:
    pids = _stack_pids(stack, "ray::AnalysisConsumer")
    return (rss_mb(pids[0]) or 0.0) if pids else 0.0


def _sample_drain(stack, run: str, t0: float) -> None:
    from cluster.pulsar_admin import subscription_backlog
    from cluster.topics import Topics

    settings = stack.settings()
    raw = Topics.from_settings(settings).news_raw.name
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        b = subscription_backlog(settings, raw, "analysis")
        stored = _stored(stack, f"fault-{run}")
        BURST.append(("draining", time.monotonic() - t0, b.backlog if b else -1, b.unacked if b else -1,
                      _analysis_rss(stack), stored))  # fmt: skip
        if stored >= N and b is not None and not b.backlog and not b.unacked and stack.drained():
            return
        time.sleep(2)
    raise AssertionError(f"the {run} burst did not drain in 900 s: {BURST[-3:]}")


@pytest.fixture(scope="module")
def clean(stack, rows: list[NewsItem], tmp_path_factory) -> Observed:
    if RESULTS.exists():
        RESULTS.unlink()
    path = _copy_file(tmp_path_factory.mktemp("faults"), "clean", rows)
    before = _totals(stack)
    t0 = time.monotonic()
    done = stack.cli("replay", str(path))
    assert f"published {N} news" in done.stdout, done.stdout
    BURST.append(
        ("published", time.monotonic() - t0, 0, 0, _analysis_rss(stack), _stored(stack, "fault-clean"))
    )
    _sample_drain(stack, "clean", t0)
    observed = _observe(stack, "clean", rows)
    assert observed.stored_total == N and len(observed.articles) == N
    assert sum(observed.hourly.values()) == N
    after = _totals(stack)
    assert (after[0] - before[0], after[1] - before[1]) == (N, N)
    return observed


def _compare(
    stack, run: str, rows: list[NewsItem], clean: Observed, before: tuple[int, int]
) -> tuple[int, int]:
    """Assert this run's stores equal the clean run's; returns (lost, duplicated)."""
    got = _observe(stack, run, rows)
    after = _totals(stack)
    counted = sum(got.hourly.values())
    lost = len(set(clean.articles) - set(got.articles)) + max(0, N - counted)
    duplicated = max(0, counted - N) + max(0, got.stored_total - N)
    print(f"{run}: totals {before} -> {after}; this copy: {got.stored_total} points, {counted} counted")
    assert lost == 0 and got.stored_total == N, f"{run}: {lost} lost, {got.stored_total} stored"
    assert counted == N, f"{run}: the aggregates count {counted} of its {N} articles"
    assert got.hourly == clean.hourly, {
        k: (clean.hourly.get(k), got.hourly.get(k))
        for k in set(clean.hourly) | set(got.hourly)
        if clean.hourly.get(k) != got.hourly.get(k)
    }
    for url, (label, score) in clean.articles.items():
        assert got.articles[url][0] == label, url
        assert abs(got.articles[url][1] - score) < 1e-3, url
    return lost, duplicated


@dataclass
class Replay:
    proc: subprocess.Popen[str]

    def wait(self, timeout: float = 900) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]
        return out


def _replay(stack, path: Path, *extra: str) -> Replay:
    cmd = [
        sys.executable,
        "-m",
        "cluster.cli",
        "replay",
        str(path),
        *extra,
        "--state-dir",
        str(stack.state_dir),
    ]
    return Replay(
        subprocess.Popen(
            cmd, env=stack.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    )


def _recovered(stack, run: str, since: int, timeout: float = 600) -> float:
    """Seconds until the run's stored count grows past ``since`` (the stage works again)."""
    t0 = time.monotonic()
    _progress(stack, run, since + 1, timeout=timeout)
    return time.monotonic() - t0


@pytest.fixture
def run_copy(stack, rows, clean, tmp_path) -> Callable[..., tuple[Path, tuple[int, int]]]:
    def make(run: str, extra: list[dict] | None = None) -> tuple[Path, tuple[int, int]]:
        return _copy_file(tmp_path, run, rows, extra), _totals(stack)

    return make


# -- the faults ------------------------------------------------------------------------------------
def test_kill_analysis_actor_five_times(stack, rows, clean, run_copy) -> None:
    path, before = run_copy("kill-analysis")
    assert f"published {N} news" in stack.cli("replay", str(path)).stdout
    recoveries = []
    for i in range(5):
        seen = _progress(stack, "kill-analysis", 150 * (i + 1))
        if seen >= N:
            break
        _kill9(stack, "ray::AnalysisConsumer")
        recoveries.append(_recovered(stack, "kill-analysis", _stored(stack, "fault-kill-analysis")))
    assert len(recoveries) == 5, f"the run finished after {len(recoveries)} kills"
    _wait_complete(stack, "kill-analysis")
    lost, dup = _compare(stack, "kill-analysis", rows, clean, before)
    _record(
        "kill -9 analysis actor x5",
        "Ray restarts it; unacked batches redelivered",
        lost,
        dup,
        max(recoveries),
    )


def test_kill_aggregator(stack, rows, clean, run_copy) -> None:
    path, before = run_copy("kill-aggregator")
    assert f"published {N} news" in stack.cli("replay", str(path)).stdout
    _progress(stack, "kill-aggregator", 400)
    counted = stack.get("/healthz").json()["articles"]
    t0 = time.monotonic()
    _kill9(stack, "ray::AggregatorConsumer")
    stack.wait_for(
        "the aggregator to count again",
        lambda: (stack.get("/healthz").json()["articles"] or 0) > counted,  # None while it is down
        timeout=300,
        every=0.5,
    )
    recovery = time.monotonic() - t0
    _wait_complete(stack, "kill-aggregator")
    lost, dup = _compare(stack, "kill-aggregator", rows, clean, before)
    _record(
        "kill -9 aggregator",
        "restarted; burst state rebuilt from the store; redelivered rows ignored",
        lost,
        dup,
        recovery,
    )


def test_kill_api_replica(stack, rows, clean, run_copy) -> None:
    """The API's Serve replica killed mid-stream: Serve starts another, and the API answers
    again (on the port itself with direct ingress on); the stream is untouched."""
    path, before = run_copy("kill-api")
    assert f"published {N} news" in stack.cli("replay", str(path)).stdout
    _progress(stack, "kill-api", 300)
    replica = "ray::ServeReplica:btcpulse:ingress"
    t0 = time.monotonic()
    old = _kill9(stack, replica)
    stack.wait_for(
        "the API to answer again", lambda: http_ok(f"{stack.api}/healthz", 5), timeout=300, every=0.5
    )
    recovery = time.monotonic() - t0
    new = _stack_pids(stack, replica)
    assert len(new) == 1 and new != [old], new
    if stack.settings().serve_direct_ingress:  # the other way in, Serve's proxy, reaches it too
        assert http_ok(f"http://127.0.0.1:{stack.settings().proxy_port}/healthz", 5)
    _wait_complete(stack, "kill-api")
    lost, dup = _compare(stack, "kill-api", rows, clean, before)
    _record("kill -9 API replica", "Serve started another; the API answered again", lost, dup, recovery)


def test_broker_outage_30s(stack, rows, clean, run_copy) -> None:
    from cluster.local.pulsar import PulsarStandalone

    path, before = run_copy("broker-outage")
    span = rows[-1].published_ts - rows[0].published_ts
    replay = _replay(stack, path, "--speed", f"{span / 60:.0f}")  # ~60 s of publishing
    _progress(stack, "broker-outage", 200)
    pulsar = PulsarStandalone(stack.settings())
    assert pulsar.stop()
    time.sleep(30)
    t0 = time.monotonic()
    pulsar.start()
    since = _stored(stack, "fault-broker-outage")
    _recovered(stack, "broker-outage", since)
    recovery = time.monotonic() - t0  # from the broker's start to the next stored article
    out = replay.wait()
    assert f"published {N} news" in out, out
    _wait_complete(stack, "broker-outage")
    lost, dup = _compare(stack, "broker-outage", rows, clean, before)
    _record(
        "Pulsar stopped 30 s mid-replay",
        "producer blocked and resent; consumers reconnected/restarted",
        lost,
        dup,
        recovery,
    )


def test_down_then_up_resumes(stack, rows, clean, run_copy) -> None:
    path, before = run_copy("down-up")
    assert f"published {N} news" in stack.cli("replay", str(path)).stdout
    _progress(stack, "down-up", 300)
    stack.cli("down", timeout=300)
    t0 = time.monotonic()
    stack.cli("up", "--no-live", timeout=900)
    since = _stored(stack, "fault-down-up")
    assert since < N, "the backlog drained before the stack came down"
    _recovered(stack, "down-up", since)
    recovery = time.monotonic() - t0  # from `btcpulse up` to the next stored article
    _wait_complete(stack, "down-up")
    lost, dup = _compare(stack, "down-up", rows, clean, before)
    _record(
        "btcpulse down mid-stream, then up",
        "consumers resumed from their subscription cursors",
        lost,
        dup,
        recovery,
    )


def test_crash_between_write_and_ack(stack, rows, clean, run_copy) -> None:
    path, before = run_copy("crash-before-ack")
    assert f"published {N} news" in stack.cli("replay", str(path)).stdout
    recoveries = []
    for i, actor in enumerate(("analysis-0", "aggregator", "analysis-0", "aggregator")):
        _progress(stack, "crash-before-ack", 300 * (i + 1))
        prefix = "ray::AnalysisConsumer" if actor.startswith("analysis") else "ray::AggregatorConsumer"
        old = _stack_pids(stack, prefix)
        t0 = time.monotonic()
        _ray_call(stack, actor, "inject_fault", "crash_after_write")
        stack.wait_for(
            f"{actor} to crash and come back",
            lambda p=prefix, o=old: (now := _stack_pids(stack, p)) and now != o,
            timeout=180,
        )
        recoveries.append(time.monotonic() - t0)
    _wait_complete(stack, "crash-before-ack")
    lost, dup = _compare(stack, "crash-before-ack", rows, clean, before)
    _record(
        "crash after the store write, before the ack (x2 per stage)",
        "batch redelivered; idempotent writes changed nothing",
        lost,
        dup,
        max(recoveries),
    )


def test_poison_messages_are_dead_lettered(stack, rows, clean, run_copy) -> None:
    marker = f"POISON-{int(time.time())}"
    poison = [
        {
            "published_at": rows[i].published_at,
            "source": "fault-poison",
            "title": f"{marker} #{i} {rows[i].title}",
            "url": f"https://example.com/{marker.lower()}/{i}",
        }
        for i in (10, 1000, 1990)
    ]
    path, before = run_copy("poison", poison)
    _ray_call(stack, "analysis-0", "inject_fault", "poison", marker)
    t0 = time.monotonic()
    assert f"published {N + 3} news" in stack.cli("replay", str(path)).stdout

    def letters() -> list[dict]:
        rows_ = stack.get("/api/deadletters", limit=500).json()["results"]
        return [r for r in rows_ if marker in r["payload"]]

    found = stack.wait_for("three dead letters", lambda: len(letters()) == 3 and letters(), timeout=600)
    assert all("injected poison" in r["reason"] and r["redeliveries"] >= 4 for r in found), found
    _wait_complete(stack, "poison")
    elapsed = time.monotonic() - t0
    lost, dup = _compare(stack, "poison", rows, clean, before)
    _record(
        "3 poison messages amid 2,000",
        "dead-lettered with the reason after 5 tries; stream went on",
        lost,
        dup,
        None,
    )
    print(f"poison run: {elapsed:.0f}s for {N} articles and 3 dead letters")


def test_a_burst_keeps_memory_bounded_and_drains(clean) -> None:
    """Back-pressure: the clean run publishes 2,000 articles at once, far faster than the
    models take them (about 2 s against a minute or more): the broker holds the backlog, the
    consumer holds at most its receiver queue and one batch, its memory stays flat, and the
    backlog drains to 0."""
    from cluster.settings import BtcpulseSettings

    settings = BtcpulseSettings()
    published = next(b for b in BURST if b[0] == "published")
    draining = [b for b in BURST if b[0] == "draining"]
    waiting = N - published[5]  # messages in the broker when the replay had published them all
    assert waiting >= N // 2, f"the burst never outran the consumers ({published[5]} already stored)"
    # Flow control: the consumer holds its receiver queue and the batch in hand; the broker
    # hands out whole producer batches, so one may overshoot the queue.
    unacked = max(b[3] for b in draining)
    assert unacked <= settings.receiver_queue_size + settings.batch_max_size + 2 * PRODUCER_BATCH_MAX, unacked
    assert draining[-1][2] == 0 and draining[-1][3] == 0 and draining[-1][5] == N
    rss = [b[4] for b in BURST if b[4]]
    growth = max(rss) - rss[0]
    _record(
        f"replay burst: {N:,} published in {published[1]:.0f} s",
        f"{waiting:,} waited in the broker, at most {unacked} unacked in the consumer; analysis RSS "
        f"{rss[0]:.0f} -> max {max(rss):.0f} MiB; drained in {draining[-1][1]:.0f} s",
        0,
        0,
        None,
    )
    assert growth < 300, f"analysis actor grew {growth:.0f} MiB while draining"
