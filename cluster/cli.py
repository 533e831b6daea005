"""The ``btcpulse`` command: the composition root that starts, stops and inspects the stack.

    btcpulse up [--replay PATH ...] [--speed X] [--state-dir DIR]   start everything
    btcpulse down [--state-dir DIR]                                  stop what `up` started
    btcpulse status [--state-dir DIR]                                each part's state
    btcpulse replay PATH ... [--speed X]                             replay in the foreground
    btcpulse analyze PATH [--text-column COL] [--out OUT.jsonl]     the models on a file, offline

It is the one module that knows every layer (it starts actors and the Serve app), so it
imports them lazily, inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.settings import BtcpulseSettings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Live analytics of Bitcoin news vs the BTC price."
)

StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="where data, logs and pids live (env BTCPULSE_STATE_DIR)")
]


def _settings(state_dir: Path | None) -> BtcpulseSettings:
    from cluster.local.ray_head import ray_env

    if state_dir is not None:
        os.environ["BTCPULSE_STATE_DIR"] = str(state_dir.resolve())
    settings = BtcpulseSettings()
    # Before Ray is imported: a driver of a loopback head must keep its node on 127.0.0.1.
    os.environ.update(ray_env(settings))
    return settings


def _say(text: str) -> None:
    typer.echo(text)


def _child_env(settings: BtcpulseSettings) -> dict[str, str]:
    """The environment every Ray worker inherits: offline models, this stack's settings."""
    from cluster.local.ray_head import ray_env

    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "BTCPULSE_STATE_DIR": str(settings.state_dir),
            "RAY_SERVE_HTTP_HOST": settings.bind_host,
            **ray_env(settings),
        }
    )
    return env


def _ts(text: str | None) -> float | None:
    if text is None:
        return None
    from cluster.records import parse_time

    try:
        return parse_time(text).timestamp()
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO-8601 time: {text!r}") from exc


def _connect_ray(settings: BtcpulseSettings) -> None:
    import ray

    from cluster.local.ray_head import RayHead

    if not ray.is_initialized():
        ray.init(
            address=RayHead(settings).address,
            namespace=settings.ray_namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )


@app.command()
def up(
    replay: Annotated[list[Path] | None, typer.Option("--replay", help="file to replay (repeatable)")] = None,
    speed: Annotated[float, typer.Option(help="0 = as fast as possible; 60 = 60x real time")] = 0.0,
    state_dir: StateDir = None,
    start: Annotated[str | None, typer.Option("--from", help="replay from this time (ISO-8601)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="replay up to this time (ISO-8601)")] = None,
    limit: Annotated[int | None, typer.Option(help="replay at most this many news rows")] = None,
    pace_from: Annotated[
        str | None,
        typer.Option("--pace-from", help="rows before this time go out at once, later ones at --speed"),
    ] = None,
    sources: Annotated[
        Path | None, typer.Option("--sources", help="sources file (TOML); default: the built-in news feeds")
    ] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="run the live collectors")] = True,
) -> None:
    """Start Pulsar, Ray, the consumers, Serve and the sources; print the addresses."""
    if speed < 0:
        raise typer.BadParameter("--speed must be >= 0")
    for path in replay or []:
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {path}")
    source_list = _load_sources(sources) if live else []
    settings = _settings(state_dir)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    from cluster.local.ray_head import LOOPBACK_HOSTS

    if settings.bind_host not in LOOPBACK_HOSTS and settings.api_token is None:
        _say(
            f"warning: the API and dashboard listen on {settings.bind_host} without a token;"
            " set BTCPULSE_API_TOKEN (README, Security)"
        )
    os.environ.update(_child_env(settings))
    t0 = time.monotonic()

    from cluster.local.pulsar import PulsarStandalone
    from cluster.local.ray_head import RayHead

    if settings.local_pulsar:
        pulsar = PulsarStandalone(settings)
        if not pulsar.jars_resolved():
            _say(f"pulsar   resolving Pulsar {settings.pulsar_version} jars from Maven Central (once)…")
        pulsar.start()
    _say(f"pulsar   ready at {settings.pulsar_service_url}  [{time.monotonic() - t0:.0f}s]")
    if settings.ray_address is None:
        RayHead(settings).start(_child_env(settings))
    _connect_ray(settings)
    _say(f"ray      ready at {RayHead(settings).address}  [{time.monotonic() - t0:.0f}s]")

    from cluster.pipeline import start_pipeline

    handles = start_pipeline(settings)
    _say(f"actors   {', '.join(sorted(handles))}  [{time.monotonic() - t0:.0f}s]")
    if live:
        _start_collectors(settings, source_list, _load_price_sources(sources))
        _say(f"sources  {len(source_list)} news source(s): {', '.join(s.name for s in source_list)}")
    _start_serve(settings)
    _say(f"serve    ready  [{time.monotonic() - t0:.0f}s]")
    if replay:
        run_id = _start_replay(settings, replay, speed, _ts(start), _ts(end), limit, _ts(pace_from))
        _say(f"replay   {len(replay)} file(s) at speed {speed:g} (run {run_id}); progress: btcpulse status")
    _say("")
    _say(f"Dashboard      {settings.api_url}/dashboard")
    _say(f"API            {settings.api_url}/docs   (e.g. {settings.api_url}/api/search?q=bitcoin+etf)")
    _say(f"Ray dashboard  {settings.ray_dashboard_url}")
    _say(f"State          {settings.state_dir}   (stop with: btcpulse down)")


def _load_sources(path: Path | None) -> list[Any]:
    from cluster.sources import DEFAULT_SOURCES, load_sources

    if path is None:
        return list(DEFAULT_SOURCES)
    try:
        return load_sources(path)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--sources") from exc


def _load_price_sources(path: Path | None) -> Any:
    from cluster.price_sources import PriceSources, load_price_sources

    if path is None:
        return PriceSources()
    try:
        return load_price_sources(path)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--sources") from exc


def _start_collectors(settings: BtcpulseSettings, sources: list[Any], prices: Any) -> None:
    """(Re)start the collectors: a new sources file replaces the running set."""
    import ray

    from actors.collectors import (
        NEWS_COLLECTOR,
        PRICE_COLLECTOR,
        NewsCollector,
        PriceCollector,
        price_endpoints,
    )
    from actors.common import named_actors

    existing = set(named_actors(settings.ray_namespace))
    for name in (NEWS_COLLECTOR, PRICE_COLLECTOR):
        if name in existing:
            handle = ray.get_actor(name, namespace=settings.ray_namespace)
            try:
                ray.get(handle.stop.remote(), timeout=60)
            finally:
                ray.kill(handle, no_restart=True)
            _wait_gone(settings, name)
    started = []
    if sources:
        started.append(NewsCollector.options(name=NEWS_COLLECTOR).remote(settings, sources))  # type: ignore[attr-defined]
    if prices.enabled:
        streams, rest = price_endpoints(prices)
        started.append(
            PriceCollector.options(name=PRICE_COLLECTOR).remote(  # type: ignore[attr-defined]
                settings, streams, rest, prices.stale_after_s
            )
        )
    ray.get([h.stats.remote() for h in started], timeout=120)


def _wait_gone(settings: BtcpulseSettings, name: str, timeout_s: float = 30.0) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=settings.ray_namespace)
        except ValueError:
            return
        time.sleep(0.2)


def _start_serve(settings: BtcpulseSettings) -> None:
    from ray import serve

    from cluster.local.process import http_ok, wait_until
    from cluster.serve_ingress import direct_ingress_on, serve_options
    from serve.app import APP_NAME, build_application

    direct = direct_ingress_on(settings)
    if settings.serve_direct_ingress and not direct:
        _say(
            "serve    direct ingress is off: this Ray cluster was not started with it "
            "(docs/beyond-one-machine.md); Serve's proxy serves the API"
        )
    serve.start(**serve_options(settings, direct))
    serve.run(
        build_application(settings, direct_ingress=direct),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    wait_until(lambda: http_ok(f"{settings.api_url}/healthz"), timeout_s=300, what="serve /healthz")


def _start_replay(
    settings: BtcpulseSettings,
    paths: list[Path],
    speed: float,
    start: float | None,
    end: float | None,
    limit: int | None,
    pace_from: float | None,
) -> str:
    from actors.sources import ReplaySource

    run_id = datetime.now().strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    ReplaySource.options(name=f"replay-{run_id}").remote(  # type: ignore[attr-defined]
        settings, [str(p.resolve()) for p in paths], speed, run_id, start, end, limit, pace_from
    )
    return run_id


@app.command()
def replay(
    paths: Annotated[
        list[Path], typer.Argument(help="files: news CSV, r/Bitcoin CSV, JSONL, hourly price CSV")
    ],
    speed: Annotated[float, typer.Option(help="0 = as fast as possible; 60 = 60x real time")] = 0.0,
    state_dir: StateDir = None,
    start: Annotated[str | None, typer.Option("--from", help="replay from this time (ISO-8601)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="replay up to this time (ISO-8601)")] = None,
    limit: Annotated[int | None, typer.Option(help="replay at most this many news rows")] = None,
) -> None:
    """Replay files into Pulsar in the foreground, with a progress bar."""
    import threading

    from tqdm import tqdm

    from actors.sources import ReplayProgress, ReplayPublisher, load_rows

    settings = _settings(state_dir)
    rows, reports = load_rows(paths, start=_ts(start), end=_ts(end), limit=limit, settings=settings)
    for path, report in zip(paths, reports, strict=True):
        _say(f"{path}: {report.summary()}")
    progress = ReplayProgress(total=len(rows))
    run_id = datetime.now().strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    with tqdm(total=len(rows), unit="row", file=sys.stderr) as bar:
        ReplayPublisher(settings, run_id).run(
            rows, speed, progress, threading.Event(), on_row=lambda n: bar.update(n - bar.n)
        )
    _say(f"published {progress.news} news and {progress.prices} prices")


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the sources, consumers, Serve, Ray and Pulsar that `up` started."""
    settings = _settings(state_dir)
    from cluster.local.pulsar import PulsarStandalone
    from cluster.local.ray_head import RayHead

    head = RayHead(settings)
    if settings.ray_address is not None or head.running():
        try:
            _stop_actors(settings)
        except Exception as exc:  # a broken cluster still has to come down
            _say(f"ray      could not stop actors cleanly: {exc}")
    if settings.ray_address is None and head.stop():
        _say("ray      stopped")
    if settings.local_pulsar and PulsarStandalone(settings).stop():
        _say("pulsar   stopped")


def _stop_actors(settings: BtcpulseSettings) -> None:
    import ray
    from ray import serve

    from actors.common import named_actors
    from actors.pool import POOL

    _connect_ray(settings)
    serve.shutdown()
    names = named_actors(settings.ray_namespace)

    # Sources first, then the pool (so it starts no more), then analysis, then the stores:
    # nothing is left half-written.
    def rank(name: str) -> int:
        if name.startswith("replay"):
            return 0
        if name == POOL:
            return 1
        return 2 if name.startswith("analysis") else 3

    order = sorted(names, key=lambda n: (rank(n), n))
    for name in order:
        handle = ray.get_actor(name, namespace=settings.ray_namespace)
        try:
            ray.get(handle.stop.remote(), timeout=40)
        except Exception as exc:
            _say(f"actor    {name}: no clean stop ({type(exc).__name__})")
        ray.kill(handle, no_restart=True)
        _say(f"actor    {name} stopped")
    ray.shutdown()


@app.command()
def status(state_dir: StateDir = None) -> None:
    """Show each part of the stack."""
    settings = _settings(state_dir)
    from cluster.local.process import http_ok, rss_mb
    from cluster.local.pulsar import PulsarStandalone
    from cluster.local.ray_head import RayHead

    pulsar = PulsarStandalone(settings)
    if settings.local_pulsar:
        pid = pulsar.pid()
        state = "ready" if pid and pulsar.ready() else ("starting" if pid else "stopped")
        mem = f" (pid {pid}, {rss_mb(pid) or 0:.0f} MiB)" if pid else ""
        _say(f"pulsar     {state}  {settings.pulsar_service_url}{mem}")
    else:
        _say(f"pulsar     external {settings.pulsar_service_url}")
    head = RayHead(settings)
    ray_up = settings.ray_address is not None or head.running()
    _say(f"ray        {'running' if ray_up else 'stopped'}  dashboard {settings.ray_dashboard_url}")
    if ray_up:
        _actor_status(settings)
    api = "ready" if http_ok(f"{settings.api_url}/healthz") else "down"
    _say(f"serve      {api}  {settings.api_url}/dashboard  {settings.api_url}/docs")


def _actor_status(settings: BtcpulseSettings) -> None:
    import ray
    from ray.util.state import list_actors

    from actors.common import named_actors
    from cluster.local.process import rss_mb
    from cluster.local.ray_head import RayHead

    _connect_ray(settings)
    alive = list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)
    actor_pids = set()
    for actor in sorted(alive, key=lambda a: a.name or a.class_name):
        if actor.pid is None:
            continue
        actor_pids.add(actor.pid)
        _say(f"  memory     {actor.name or actor.class_name:<40} {rss_mb(actor.pid) or 0:7.0f} MiB")
    if settings.ray_address is None:
        core = [rss_mb(pid) or 0.0 for pid in RayHead(settings).own_pids() - actor_pids]
        _say(f"  memory     {'ray core (gcs, raylet, dashboard, idle workers)':<40} {sum(core):7.0f} MiB")
    names = named_actors(settings.ray_namespace)
    for name in names:
        handle = ray.get_actor(name, namespace=settings.ray_namespace)
        method: Any = handle.progress if name.startswith("replay") else handle.stats
        info: Any
        try:
            info = ray.get(method.remote(), timeout=10)
        except Exception as exc:
            info = f"not answering ({type(exc).__name__})"
        _say(f"  {name:<28} {info}")


@app.command()
def analyze(
    path: Annotated[Path, typer.Argument(help="a CSV (comma, semicolon or tab) or JSONL file", exists=True)],
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column", help="the column to analyse (default: title + summary/text, or text/news)"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write JSON lines here (default: standard output)")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="publication time (default: detected)")
    ] = None,
    sentiment_model: Annotated[
        str | None, typer.Option("--sentiment-model", help="'' shipped, 'lexicon', or a HF model")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096)] = 64,
    events: Annotated[
        Path | None,
        typer.Option("--events", help="also detect bursts; write the events here as JSON lines"),
    ] = None,
) -> None:
    """Run the analyses on a file, offline, one JSON line per input row, in order.

    No cluster is needed: the same models the consumers run (embeddings, sentiment,
    categories), an online topic model fitted over the file, and the story tracker.
    """
    from models.offline import AnalyzeError, analyze_file

    settings = BtcpulseSettings()
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    events_sink = events.open("w", encoding="utf-8") if events else None
    try:
        report = analyze_file(
            path,
            sink,
            text_column=text_column,
            time_column=time_column,
            sentiment_model=settings.sentiment_model if sentiment_model is None else sentiment_model,
            device=settings.device,
            backend=settings.embed_backend,
            batch_size=batch_size,
            progress=lambda done, total: typer.echo(f"\ranalysed {done}/{total}", nl=False, err=True),
            events_sink=events_sink,
            burst_params={
                "step_s": settings.burst_step_s,
                "baseline_windows": settings.burst_baseline_windows,
                "min_count": settings.burst_min_count,
            },
        )
    except AnalyzeError as exc:
        typer.echo(f"\nbtcpulse analyze: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if out:
            sink.close()
        if events_sink:
            events_sink.close()
    typer.echo(f"\n{report}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
