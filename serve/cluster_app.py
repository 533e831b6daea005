"""The Serve applications for a Ray cluster that nobody ran ``btcpulse up`` on (the Ray cluster
launcher's ``ray up``, a KubeRay RayService): Serve deploys them from a config
(cluster/k8s/serve-config.yaml, the RayService's ``serveConfigV2``) and they start the rest.

    serve.cluster_app:build              the API and dashboard: serve.app's ingress as it is,
                                         route prefix "/"
    serve.cluster_app:build_supervisor   the pipeline supervisor: one replica, no CPU, no route;
                                         it keeps a driver process that calls
                                         cluster.pipeline.start_pipeline(settings) at once and
                                         every ``interval_s`` (idempotent: it finds the named,
                                         detached stage actors and creates the missing ones)

Both read the settings from the environment of the process that builds them
(``BtcpulseSettings()``): the pods' ConfigMap and Secret on KubeRay, btcpulse.env on a
launcher cluster.

Two applications, not one: a Serve application is the graph bound under its ingress, and
serve.app's ingress takes no bound arguments, so a supervisor deployment cannot hang under it.

Why the supervisor starts a driver of its own instead of calling start_pipeline in the replica:
named actors land in the namespace of the job that creates them, and a replica belongs to the job
that started Serve's controller. Under ``serve deploy`` and KubeRay that is the Ray dashboard, whose
namespace is not ``settings.ray_namespace``, where every reader (serve.read, the CLI, the pool)
looks them up. The driver connects with ``ray.init(namespace=settings.ray_namespace)``, as
``btcpulse up`` does, so the actors it creates, and the analysis actors the pool then creates,
are where they are looked for. It runs as long as the replica does. If it exits, the supervisor
starts another, and a driver whose supervisor is gone exits too.

Nothing here imports the actors: the driver process does, so building these applications needs
neither Ray running nor the models.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from cluster.settings import BtcpulseSettings

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"
DEFAULT_PIPELINE = "cluster.pipeline:start_pipeline"
# The folder that holds the project's packages, so `-m serve.cluster_app` imports this module
# in the driver whatever its working directory.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
# Set only for drivers that Ray's job manager starts; a driver of ours must not inherit one.
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class SupervisorArgs(BaseModel):
    """``args`` of the supervisor application in a Serve config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Seconds between two start_pipeline calls (each finds what exists and starts what is missing).
    interval_s: float = Field(default=30.0, gt=0)
    # ``module:function`` called with the settings. The stage actors are created by the default.
    pipeline: str = Field(default=DEFAULT_PIPELINE, pattern=r"^[\w.]+:\w+$")


class IngressArgs(BaseModel):
    """``args`` of the API application. There are none: every setting comes from the environment."""

    model_config = ConfigDict(extra="forbid")


def build(args: dict[str, Any]) -> serve.Application:
    """The API and dashboard: the ingress of serve.app, with the settings of this environment."""
    IngressArgs.model_validate(args or {})
    from serve.app import build_application

    app: serve.Application = build_application(BtcpulseSettings())
    return app


def build_supervisor(args: dict[str, Any]) -> serve.Application:
    """The pipeline supervisor, with the settings of this environment."""
    opts = SupervisorArgs.model_validate(args or {})
    app: serve.Application = PipelineSupervisor.bind(BtcpulseSettings(), opts)  # type: ignore[attr-defined]
    return app


@serve.deployment(name=SUPERVISOR, num_replicas=1, ray_actor_options={"num_cpus": 0})
class PipelineSupervisor:
    """Keeps one pipeline driver process running; its health is that it does."""

    def __init__(self, settings: BtcpulseSettings, opts: SupervisorArgs) -> None:
        import ray

        self._driver = DriverProcess(
            settings, opts, gcs_address=ray.get_runtime_context().gcs_address, parent_pid=os.getpid()
        )
        self._driver.start()

    def check_health(self) -> None:
        """Serve restarts a replica whose check raises: here, one whose watcher has died."""
        if not self._driver.watching():
            raise RuntimeError("the pipeline driver's watcher has stopped")

    def status(self) -> dict[str, Any]:
        """The driver's last report, its process id and how often it has been started."""
        return self._driver.status()

    def __del__(self) -> None:
        driver = getattr(self, "_driver", None)  # None: __init__ failed before it started one
        if driver is not None:
            driver.stop()


class DriverProcess:
    """One ``python -m serve.cluster_app`` child at a time. It is given the settings on its stdin
    (pickled: secrets stay out of its command line and environment) and reports each round as a
    JSON line on its stdout. A child that exits is started again after a back-off (1 s, doubling,
    60 s at most)."""

    def __init__(
        self,
        settings: BtcpulseSettings,
        opts: SupervisorArgs,
        *,
        gcs_address: str,
        parent_pid: int,
        command: list[str] | None = None,
    ) -> None:
        self._payload = pickle.dumps(
            {
                "settings": settings,
                "opts": opts.model_dump(),
                "address": gcs_address,
                "parent_pid": parent_pid,
            }
        )
        self._command = command or [sys.executable, "-m", "serve.cluster_app"]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._last: dict[str, Any] = {}
        self._starts = 0
        self._exits: list[int] = []
        self._thread = threading.Thread(target=self._watch, name="pipeline-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watching(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": self._proc.pid if self._proc and self._proc.poll() is None else None,
                "starts": self._starts,
                "exit_codes": list(self._exits[-5:]),
                "last": dict(self._last),
            }

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != _JOB_CONFIG_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(self._payload)
        proc.stdin.close()
        return proc

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn()
            except OSError:
                log.exception("could not start the pipeline driver")
                self._stop.wait(backoff)
                backoff = min(60.0, backoff * 2)
                continue
            with self._lock:
                self._proc = proc
                self._starts += 1
            assert proc.stdout is not None
            for line in proc.stdout:
                self._record(line)
            code = proc.wait()
            with self._lock:
                self._exits.append(code)
            if self._stop.is_set():
                return
            log.warning("the pipeline driver exited with %s; starting another in %.0f s", code, backoff)
            # A driver that ran for a while was healthy: start the next one soon.
            backoff = 1.0 if time.monotonic() - started > 300 else backoff
            self._stop.wait(backoff)
            backoff = min(60.0, backoff * 2)

    def _record(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        with self._lock:
            before, self._last = self._last, report
        if not report.get("ok"):
            log.warning("pipeline not (all) started yet: %s", report.get("error"))
        elif not before.get("ok") or before.get("stages") != report.get("stages"):
            log.info("pipeline running: %s", ", ".join(report.get("stages", [])))


def load_pipeline(path: str) -> Callable[[BtcpulseSettings], Any]:
    """``module:function`` -> the function."""
    module, _, name = path.partition(":")
    fn: Callable[[BtcpulseSettings], Any] = getattr(importlib.import_module(module), name)
    return fn


def supervise(
    start: Callable[[BtcpulseSettings], Any],
    settings: BtcpulseSettings,
    interval_s: float,
    *,
    should_stop: Callable[[], bool],
    report: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None] = time.sleep,
    tick_s: float = 1.0,
) -> None:
    """Call ``start(settings)`` now and every ``interval_s`` until ``should_stop()``; each round's
    outcome goes to ``report``. A round that raises is reported and tried again next time."""
    while not should_stop():
        t0 = time.monotonic()
        try:
            found = start(settings)
        except Exception as exc:  # a broker not up yet, a node still joining: the next round retries
            report({"ok": False, "at": time.time(), "error": f"{type(exc).__name__}: {exc}"[:500]})
        else:
            stages = sorted(found) if isinstance(found, dict) else []
            report(
                {"ok": True, "at": time.time(), "stages": stages, "took_s": round(time.monotonic() - t0, 1)}
            )
        waited = 0.0
        while waited < interval_s and not should_stop():
            step = min(tick_s, interval_s - waited)
            sleep(step)
            waited += step


def _driver_main(stdin: IO[bytes], stdout: IO[str]) -> int:
    """The driver process: connect to the cluster in btcpulse's namespace, then supervise."""
    # The payload comes from the supervisor replica that started this process, over a pipe.
    payload = pickle.load(stdin)  # noqa: S301
    settings: BtcpulseSettings = payload["settings"]
    opts = SupervisorArgs.model_validate(payload["opts"])
    parent_pid: int = payload["parent_pid"]

    import ray

    ray.init(
        address=payload["address"],
        namespace=settings.ray_namespace,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )

    def report(entry: dict[str, Any]) -> None:
        stdout.write(json.dumps(entry) + "\n")
        stdout.flush()

    supervise(
        load_pipeline(opts.pipeline),
        settings,
        opts.interval_s,
        # The replica is gone (this process was handed to init): stop with it.
        should_stop=lambda: os.getppid() != parent_pid,
        report=report,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(_driver_main(sys.stdin.buffer, sys.stdout))
