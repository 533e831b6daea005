"""Apache Pulsar standalone, run from jars that Maven resolves from Maven Central.

resolve  -> mvn dependency:copy-dependencies on cluster/pulsar/pom.xml, once per version,
            into <cache_dir>/pulsar-<version>/lib (outside the clone, shared by clones)
configure-> <state_dir>/pulsar/standalone.conf: loopback only (broker, web service and the
            bookie), data under the state dir,
            functions worker and stream storage off, quorums of 1, broker deduplication on
start    -> java -cp lib/* org.apache.pulsar.PulsarStandaloneStarter, as a daemon
ready    -> the admin API lists the cluster and the public/default namespace
stop     -> SIGTERM (the broker closes its ledgers), SIGKILL after a grace period
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from cluster.local.process import port_open, read_pid, spawn, stop_pid, wait_until
from cluster.settings import BtcpulseSettings

POM = Path(__file__).resolve().parent.parent / "pulsar" / "pom.xml"

# What Pulsar's own launcher opens for Netty, BookKeeper and the load manager on Java 17.
_JVM_OPENS = [
    "java.base/java.io",
    "java.base/java.lang",
    "java.base/java.nio",
    "java.base/java.util",
    "java.base/java.util.zip",
    "java.base/sun.net",
    "java.base/jdk.internal.platform",
    "java.management/sun.management",
    "jdk.management/com.sun.management.internal",
]

_LOG4J = """Configuration:
  status: warn
  Appenders:
    Console:
      name: Console
      target: SYSTEM_OUT
      PatternLayout:
        Pattern: "%d{ISO8601} %-5level [%t] %c{1} - %msg%n"
  Loggers:
    Root:
      level: info
      AppenderRef:
        - ref: Console
    Logger:
      - name: org.apache.bookkeeper
        level: warn
      - name: org.apache.pulsar.broker.service
        level: warn
"""


def _loopback_interface() -> str | None:
    """The loopback network interface's name (``lo`` on Linux), from /sys/class/net."""
    iff_loopback = 0x8
    net = Path("/sys/class/net")
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        return None
    for name in names:
        try:
            if int((net / name / "flags").read_text(), 16) & iff_loopback:
                return name
        except (OSError, ValueError):
            continue
    return None


@dataclass(frozen=True)
class PulsarStandalone:
    settings: BtcpulseSettings

    @property
    def home(self) -> Path:
        return self.settings.state_dir / "pulsar"

    @property
    def lib_dir(self) -> Path:
        return self.settings.cache_dir / f"pulsar-{self.settings.pulsar_version}" / "lib"

    @property
    def pid_file(self) -> Path:
        return self.home / "pulsar.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "pulsar.log"

    # -- install -------------------------------------------------------------------------
    @property
    def _marker(self) -> Path:
        return self.lib_dir.parent / "resolved.ok"

    def jars_resolved(self) -> bool:
        return self._marker.exists()

    def resolve_jars(self) -> Path:
        """Resolve the broker and its dependencies from Maven Central (once per version)."""
        marker = self._marker
        if marker.exists():
            return self.lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "Maven ('mvn') is needed once to fetch the Pulsar jars; install it (apt-get install maven)"
            )
        tmp = self.lib_dir.parent / "lib.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                mvn, "-q", "-B", "-f", str(POM),
                f"-Dpulsar.version={self.settings.pulsar_version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )  # fmt: skip
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        tmp.rename(self.lib_dir)
        marker.write_text(self.settings.pulsar_version)
        return self.lib_dir

    # -- config --------------------------------------------------------------------------
    def write_config(self) -> Path:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        conf = {
            "clusterName": "standalone",
            "bindAddress": s.bind_host,
            "advertisedAddress": "127.0.0.1" if s.bind_host in ("127.0.0.1", "0.0.0.0") else s.bind_host,  # noqa: S104
            "brokerServicePort": s.pulsar_broker_port,
            "webServicePort": s.pulsar_web_port,
            "managedLedgerDefaultEnsembleSize": 1,
            "managedLedgerDefaultWriteQuorum": 1,
            "managedLedgerDefaultAckQuorum": 1,
            "brokerDeduplicationEnabled": "true",
            "allowAutoTopicCreation": "true",
            "allowAutoTopicCreationType": "non-partitioned",
            "functionsWorkerEnabled": "false",
            "systemTopicEnabled": "true",
            "topicLevelPoliciesEnabled": "true",
            "isAllowAutoUpdateSchemaEnabled": "true",
            "brokerShutdownTimeoutMs": 5000,
            "numIOThreads": 2,
            "numHttpServerThreads": 4,
            "webSocketServiceEnabled": "false",
            "exposeTopicLevelMetricsInPrometheus": "false",
            # Keep acknowledged data a day so a replay can be inspected; cap the backlog at 2 GB.
            "defaultRetentionTimeInMinutes": 1440,
            "defaultRetentionSizeInMB": 2048,
        }
        # The standalone's bookie reads its BookKeeper settings from this same file. Without
        # these it listens on every interface, on a random port (BKCluster only takes
        # --bookkeeper-port when ephemeral ports are allowed).
        conf["allowEphemeralPorts"] = "true"
        loopback = _loopback_interface() if s.bind_host in ("127.0.0.1", "localhost") else None
        if loopback is not None:
            conf.update({"listeningInterface": loopback, "allowLoopback": "true"})
        path = self.home / "standalone.conf"
        path.write_text("".join(f"{k}={v}\n" for k, v in conf.items()))
        (self.home / "log4j2.yaml").write_text(_LOG4J)
        return path

    def command(self) -> list[str]:
        s = self.settings
        opens = [f"--add-opens={m}=ALL-UNNAMED" for m in _JVM_OPENS]
        return [
            shutil.which("java") or "java",
            f"-Xms{s.pulsar_heap}", f"-Xmx{s.pulsar_heap}",
            f"-XX:MaxDirectMemorySize={s.pulsar_direct_memory}",
            "-XX:+UseG1GC", "-Dio.netty.tryReflectionSetAccessible=true",
            "-Dpulsar.allocator.exit_on_oom=true", "-Dzookeeper.admin.enableServer=false",
            f"-Dlog4j.configurationFile={self.home / 'log4j2.yaml'}",
            *opens,
            "-cp", f"{self.lib_dir}/*",
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config", str(self.home / "standalone.conf"),
            "--metadata-dir", str(self.home / "data" / "metadata"),
            "--bookkeeper-dir", str(self.home / "data" / "bookkeeper"),
            "--bookkeeper-port", str(s.pulsar_bookie_port),
            "--no-functions-worker", "--no-stream-storage",
            "--advertised-address", "127.0.0.1",
        ]  # fmt: skip

    # -- run -----------------------------------------------------------------------------
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def ready(self) -> bool:
        base = self.settings.pulsar_http_url
        try:
            clusters = httpx.get(f"{base}/admin/v2/clusters", timeout=2).json()
            namespaces = httpx.get(f"{base}/admin/v2/namespaces/public", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(clusters) and "public/default" in namespaces

    def start(self, *, timeout_s: float = 180.0) -> int:
        """Start the broker unless it already runs; return its pid once it is ready."""
        existing = self.pid()
        if existing is not None:
            wait_until(self.ready, timeout_s=timeout_s, what="pulsar")
            return existing
        busy = [p for p in self._ports() if port_open(self.settings.bind_host, p)]
        if busy:
            # Another broker (or anything else) there would answer our readiness checks.
            raise RuntimeError(
                f"pulsar: port(s) {busy} already in use on {self.settings.bind_host}; stop that first"
            )
        self.resolve_jars()
        self.write_config()
        pid = spawn(self.command(), log_file=self.log_file, pid_file=self.pid_file)
        try:
            wait_until(
                self.ready,
                timeout_s=timeout_s,
                what="pulsar",
                alive=lambda: read_pid(self.pid_file) is not None,
            )
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            stop_pid(pid)
            raise RuntimeError(f"{exc}\n--- {self.log_file} (tail) ---\n{tail}") from exc
        return pid

    def _ports(self) -> list[int]:
        s = self.settings
        return [s.pulsar_broker_port, s.pulsar_web_port, s.pulsar_bookie_port]

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        stop_pid(pid, timeout_s=30)
        self.pid_file.unlink(missing_ok=True)
        return True
