"""What the benchmarks that run the whole system share: a stack of their own, real articles,
fresh copies of them, and the stack's processes.

A benchmark's stack is the CLI's ``up --no-live`` on ports shifted by an offset of its own and a
state directory of its own, so a running ``make up`` (or another benchmark, or the tests) is
left alone; ``down`` stops it however the benchmark ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.records import NewsItem

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
NEWS = DATA / "crypto_news_2021_2022" / "cryptonews.csv"
REDDIT = DATA / "reddit_r_bitcoin_2021_2022" / "r_bitcoin_selfposts_2021-10-12_2022-07-05.csv"
#: The default ports of a stack; a benchmark adds its own offset to each.
PORTS = {
    "BTCPULSE_PULSAR_BROKER_PORT": 6650,
    "BTCPULSE_PULSAR_WEB_PORT": 8080,
    "BTCPULSE_PULSAR_BOOKIE_PORT": 3181,
    "BTCPULSE_RAY_PORT": 6379,
    "BTCPULSE_RAY_DASHBOARD_PORT": 8265,
    "BTCPULSE_API_PORT": 8000,
}


def stack_env(offset: int, state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the stack's ports, state directory and ``extra``."""
    env = dict(os.environ)
    env.update({k: str(v + offset) for k, v in PORTS.items()})
    env.update({"BTCPULSE_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra or {})
    return env


def btcpulse(args: Sequence[str], env: dict[str, str], timeout_s: float = 900) -> None:
    """Run the CLI (``python -m cluster.cli``, from this checkout) with ``env``."""
    subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], env=env, cwd=REPO, check=True, timeout=timeout_s
    )


@contextmanager
def own_stack(
    offset: int,
    extra: dict[str, str] | None = None,
    state_dir: Path | None = None,
    prefix: str = "btcp-bench-",
) -> Iterator[dict[str, str]]:
    """Start a stack (``up --no-live``) and yield its environment, which is also put in
    ``os.environ`` so the settings and clients of this process talk to it; stop it on the way out."""
    state = state_dir or Path(tempfile.mkdtemp(prefix=prefix))
    env = stack_env(offset, state, extra)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        btcpulse(["up", "--no-live"], env)
        yield env
    finally:
        try:
            btcpulse(["down"], env, timeout_s=300)
        except Exception as exc:  # the figures matter more; say what is left running
            sys.stderr.write(f"WARNING: btcpulse down failed ({exc}); stop the stack on {state} by hand\n")
        os.environ.clear()
        os.environ.update(saved)


def real_items(paths: Sequence[Path] = (NEWS, REDDIT)) -> list[NewsItem]:
    """The news items of the recorded files, in file order, read as the replay reads them."""
    from actors.replay import ReplayReport, read_file
    from cluster.records import NewsItem

    items: list[NewsItem] = []
    for path in paths:
        if path.exists():
            items.extend(
                r.record for r in read_file(path, report=ReplayReport()) if isinstance(r.record, NewsItem)
            )
    if not items:
        raise SystemExit(f"no news files under {DATA}")
    return items


def fresh_copy(item: NewsItem, tag: str, at: datetime | None = None) -> NewsItem:
    """``item`` as a new article dated ``at`` (now): the same texts, a URL (so an id) of its own.
    A query parameter, not a fragment: canonical URLs drop fragments."""
    from cluster.records import NewsItem

    stamp = at or datetime.now(UTC)
    return NewsItem.create(
        source=item.source,
        url=f"{item.url}{'&' if '?' in item.url else '?'}bench={tag}",
        title=item.title,
        summary=item.summary,
        published_at=stamp,
        fetched_at=stamp,
    )


def processes(state_dir: Path) -> dict[str, int]:
    """name -> pid of the stack's processes: Ray's actors by class, Pulsar, Ray's core."""
    from cluster.local.process import stack_processes

    found: dict[str, int] = {}
    for pid, cmd in stack_processes(state_dir).items():
        head = cmd[0].decode(errors="replace")
        if head.startswith("ray::"):
            name = head.removeprefix("ray::").split(".")[0].split(" ")[0]
            if name != "IDLE":
                # several actors of one class (the analysis pool): the first keeps the name
                found[name if name not in found else f"{name}#{pid}"] = pid
        elif b"org.apache.pulsar.PulsarStandaloneStarter" in cmd:
            found["pulsar"] = pid
        elif head.endswith(("/gcs_server", "/raylet")):
            found["ray-" + head.rsplit("/", 1)[1]] = pid
        elif any(part.endswith(b"dashboard/dashboard.py") for part in cmd):
            found["ray-dashboard"] = pid
    return found


def memory_mib(state_dir: Path) -> dict[str, float]:
    """Resident memory (MiB) of each of the stack's processes, by name."""
    from cluster.local.process import rss_mb

    return {name: round(rss_mb(pid) or 0.0, 1) for name, pid in sorted(processes(state_dir).items())}


def cpu_seconds(state_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) each of the stack's processes has used so far, by name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in processes(state_dir).items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out
