"""One typed settings object for every part of btcpulse.

Every field can be set from the environment with the ``BTCPULSE_`` prefix
(``BTCPULSE_API_PORT=9000``); the few names that operators already know are read
without the prefix too (``PULSAR_URL``, ``QDRANT_URL``, ``QDRANT_API_KEY``).
Secrets are ``SecretStr`` so they never appear in a repr or a log line.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "btcpulse"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "btcpulse"


class BtcpulseSettings(BaseSettings):
    """Settings of the whole system; the same object is handed to actors and deployments."""

    # hide_input_in_errors: a rejected value (a too-short token, a key) is never echoed.
    model_config = SettingsConfigDict(
        env_prefix="BTCPULSE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Where the local stack keeps its data, logs and pid files.
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Heavy downloads shared by every clone (Pulsar jars).
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    # --- Pulsar ---------------------------------------------------------------------------
    # Set PULSAR_URL to use an external cluster; the CLI then starts no local broker.
    pulsar_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PULSAR_URL", "BTCPULSE_PULSAR_URL")
    )
    pulsar_admin_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PULSAR_ADMIN_URL", "BTCPULSE_PULSAR_ADMIN_URL")
    )
    pulsar_version: str = "4.2.4"
    pulsar_broker_port: int = 6650
    pulsar_web_port: int = 8080
    pulsar_bookie_port: int = 3181
    pulsar_heap: str = "768m"
    pulsar_direct_memory: str = "512m"
    topic_prefix: str = "persistent://public/default/btcpulse"
    # news.raw is a partitioned topic read through a Key_Shared subscription (key: the article
    # id), so analysis actors share it and one article never runs on two of them at once.
    # Partitions can be added later, never removed; a topic that already exists keeps its own.
    news_partitions: int = 4

    # --- Ray / Serve ----------------------------------------------------------------------
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("RAY_ADDRESS", "BTCPULSE_RAY_ADDRESS")
    )
    ray_port: int = 6379
    ray_dashboard_port: int = 8265
    ray_num_cpus: int | None = None
    ray_namespace: str = "btcpulse"
    bind_host: str = "127.0.0.1"
    api_port: int = 8000
    # Where Serve runs HTTP proxies: "HeadOnly" (one address: the head's) or "EveryNode" (a
    # proxy per node, behind your load balancer; nodes must not share a machine: one port).
    serve_proxy_location: str = "HeadOnly"
    # Ray Serve's direct ingress: the API's replica answers on api_port itself, with no hop
    # through Serve's proxy (cluster.serve_ingress); the proxy then listens on
    # serve_proxy_port (unset: api_port + 50). Needs its switches on `ray start` (the local
    # head gets them); on a cluster started without them the proxy serves api_port.
    serve_direct_ingress: bool = True
    serve_proxy_port: int | None = None
    # Serve's access log: one line per request in the replica's log, written on its request
    # path (~5 % of its Python time under search load). Off, Serve still counts requests and
    # their latencies in its own metrics (Ray's metrics export), and errors are still logged.
    serve_access_log: bool = False
    # The stages that keep state on local disk (the aggregates' SQLite, the embedded Qdrant
    # shard, the topic model's snapshots) and the pool run on the head node, so a restart
    # finds their files; with QDRANT_URL set the vector-store actor may run anywhere.
    stateful_on_head: bool = True
    # Unset: no authentication (the local default, on loopback). Set: every route but /healthz
    # (the dashboard and its websocket too) needs it: `Authorization: Bearer <token>`, or
    # `?token=<token>` once in a browser, which then keeps an HttpOnly cookie.
    api_token: SecretStr | None = None
    # Origins allowed to read the API from a browser page of theirs (JSON list); [] sends no
    # CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # A request body over this is refused with 413 (the API reads none); a query string over
    # max_query_bytes with 414 (the longest legal one, q's 500 characters percent-encoded as
    # 4-byte UTF-8, is 6,000 bytes).
    max_request_bytes: int = 64 * 1024
    max_query_bytes: int = 8192

    # --- Qdrant ---------------------------------------------------------------------------
    # Unset: embedded qdrant-edge under state_dir. A URL: a Qdrant server through qdrant-client;
    # ":memory:" uses qdrant-client's in-process mode (tests of the client path).
    qdrant_url: str | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_URL", "BTCPULSE_QDRANT_URL")
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_API_KEY", "BTCPULSE_QDRANT_API_KEY")
    )
    qdrant_collection: str = "news"
    # A Qdrant server or cluster (QDRANT_URL): how the collection is created the first time.
    qdrant_shards: int = 1
    qdrant_replication_factor: int = 1
    qdrant_write_consistency_factor: int = 1
    # HNSW graph parameters (both stores) and whether vectors live on disk (server only).
    qdrant_hnsw_m: int = 16
    qdrant_hnsw_ef_construct: int = 100
    qdrant_on_disk: bool = False

    # --- Models and batching --------------------------------------------------------------
    # A sentence-transformers name or a local path; empty means the packaged all-MiniLM-L6-v2.
    embedding_model: str = ""
    embedding_dim: int = 384
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    batch_max_size: int = 64  # messages per consumer batch
    # Texts per forward pass; 16 measured best on headline + summary on 2 CPU cores (bench/NOTES.md).
    embed_batch_size: int = 16
    # How long a batch waits for more messages after its first (actors.common.consume_batches).
    batch_max_wait_ms: int = 20
    # Padded tokens per forward pass (items x longest item); bounds a batch of long texts.
    batch_max_tokens: int = 8192
    # Embedding backend: "torch", "onnx" (ONNX Runtime fp32), "onnx-int8" (CPU, quantized) or
    # "auto": onnx-int8 on the CPU, torch on CUDA (models.device.resolve_backend).
    embed_backend: str = "auto"
    # The Serve replica's query embedder (torch, onnx or onnx-int8); unset: as the stored texts
    # were embedded, except onnx (fp32: the torch model's vectors, to 1e-4 cosine, in half the
    # time per query) for torch on a CPU-only replica (serve.read.query_backend).
    query_backend: str | None = None
    receiver_queue_size: int = 256
    max_redeliveries: int = 5
    # The analysis pool: at least analysis_actors actors, at most analysis_max_actors (unset:
    # the same, a fixed pool); between them the size follows news.raw's backlog, one actor per
    # pool_backlog_per_actor waiting messages, checked every pool_interval_s. An actor leaves
    # only after the backlog has stayed low for pool_scale_down_after_s.
    analysis_actors: int = 1
    analysis_max_actors: int | None = None
    pool_backlog_per_actor: int = 500
    pool_interval_s: float = 10.0
    pool_scale_down_after_s: float = 60.0
    # What one analysis actor asks of the cluster: CPUs, GPUs (e.g. 1 for GPU worker nodes) and
    # custom resources (JSON, e.g. {"analysis_node": 1} to keep them off the head node).
    analysis_num_cpus: float = 1.0
    # CPU threads for one analysis actor's models (torch, ONNX Runtime); unset: the node's CPUs
    # shared by the pool's largest size (actors.analysis.model_threads).
    analysis_threads: int | None = Field(default=None, ge=1)
    analysis_num_gpus: float = 0.0
    analysis_resources: dict[str, float] = Field(default_factory=dict)
    # Lets the consumer actors take inject_fault() calls (crash between the store write and
    # the acknowledgement, a poison marker the models fail on): the fault suite's hooks. Off
    # in production; a call while it is off is refused.
    fault_injection: bool = False

    # --- Analyses -----------------------------------------------------------------------------
    # "" = the sentiment model the project ships (models/artifacts); "lexicon" = VADER + crypto
    # lexicon; otherwise a Hugging Face sequence-classification model id or local path.
    sentiment_model: str = ""
    # The shipped sentiment model's encoder: torch, onnx, onnx-int8 or auto; unset: as embed_backend.
    sentiment_backend: str | None = None
    category_threshold: float | None = None  # None: the categorizer's calibrated default
    story_threshold: float | None = None  # cosine; None: the tracker's calibrated default
    story_window_s: int = 48 * 3600
    # The topic model folds new documents in every this many articles (after a first fit).
    topic_refit_every: int = 500
    # Bursts: windows must hold tens of articles for a robust z-score to mean something; on a
    # few hundred articles a day that is a day (hourly windows held ~2 on the 2022 news).
    burst_step_s: int = 86400
    burst_baseline_windows: int = 28
    burst_min_count: int = 6
    # POST each event (JSON, as on the events topic) here; unset: no webhook.
    event_webhook_url: str | None = None

    # The price series the aggregates keep; other pairs on the prices topic (a USDT fallback,
    # other quotes) are acknowledged and counted, never mixed into it.
    price_symbol: str = "BTC-USD"

    # --- Input limits (text from the internet is untrusted) --------------------------------
    max_title_chars: int = 500
    max_summary_chars: int = 2000
    max_future_skew_s: int = 300

    @field_validator(
        "batch_max_size",
        "embed_batch_size",
        "batch_max_tokens",
        "receiver_queue_size",
        "analysis_actors",
        "news_partitions",
        "pool_backlog_per_actor",
        "qdrant_shards",
        "qdrant_replication_factor",
        "qdrant_write_consistency_factor",
        "qdrant_hnsw_m",
        "qdrant_hnsw_ef_construct",
        "story_window_s",
        "topic_refit_every",
        "burst_step_s",
        "burst_baseline_windows",
        "burst_min_count",
        "max_request_bytes",
        "max_query_bytes",
    )
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("api_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == "":
            return None  # an empty variable means no token, not an empty one
        if len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin == "*" or not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ValueError(f"an origin is scheme://host[:port], no '*' or path: {origin!r}")
        return v

    @field_validator("embed_backend", "sentiment_backend", "query_backend")
    @classmethod
    def _backend(cls, v: str | None) -> str | None:
        if v is not None and v not in ("auto", "torch", "onnx", "onnx-int8"):
            raise ValueError("must be one of auto, torch, onnx, onnx-int8")
        return v

    @field_validator("serve_proxy_location")
    @classmethod
    def _proxy(cls, v: str) -> str:
        if v not in ("HeadOnly", "EveryNode", "Disabled"):
            raise ValueError("must be HeadOnly, EveryNode or Disabled")
        return v

    @field_validator("analysis_max_actors")
    @classmethod
    def _max_actors(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @property
    def pool_max(self) -> int:
        """The analysis pool's largest size (never below its smallest)."""
        return max(self.analysis_actors, self.analysis_max_actors or self.analysis_actors)

    @property
    def pulsar_service_url(self) -> str:
        return self.pulsar_url or f"pulsar://127.0.0.1:{self.pulsar_broker_port}"

    @property
    def pulsar_http_url(self) -> str:
        return self.pulsar_admin_url or f"http://127.0.0.1:{self.pulsar_web_port}"

    @property
    def local_pulsar(self) -> bool:
        return self.pulsar_url is None

    @property
    def ray_dashboard_url(self) -> str:
        return f"http://{self.bind_host}:{self.ray_dashboard_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.bind_host}:{self.api_port}"

    @property
    def proxy_port(self) -> int:
        """Where Serve's proxy listens when the replica serves ``api_port`` itself."""
        return self.serve_proxy_port or self.api_port + 50


@lru_cache(maxsize=1)
def get_settings() -> BtcpulseSettings:
    """The process-wide settings, read once from the environment."""
    return BtcpulseSettings()
