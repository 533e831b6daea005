"""cluster.settings: defaults, BTCPULSE_ environment overrides, the operator aliases
(PULSAR_URL, QDRANT_URL, QDRANT_API_KEY), secrets kept out of repr, and validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.settings import BtcpulseSettings, get_settings

ALIASES = ("PULSAR_URL", "PULSAR_ADMIN_URL", "QDRANT_URL", "QDRANT_API_KEY", "RAY_ADDRESS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without any btcpulse setting."""
    for name in list(os.environ):
        if name.upper().startswith("BTCPULSE_") or name.upper() in ALIASES:
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = BtcpulseSettings()
    assert s.state_dir == Path.home() / ".local" / "state" / "btcpulse"
    assert s.pulsar_url is None
    assert s.local_pulsar is True
    assert s.pulsar_service_url == "pulsar://127.0.0.1:6650"
    assert s.pulsar_http_url == "http://127.0.0.1:8080"
    assert s.api_url == "http://127.0.0.1:8000"
    assert s.ray_dashboard_url == "http://127.0.0.1:8265"
    assert s.qdrant_url is None
    assert s.qdrant_api_key is None
    assert s.topic_prefix == "persistent://public/default/btcpulse"
    assert (s.batch_max_size, s.embedding_dim, s.max_future_skew_s) == (64, 384, 300)


def test_prefixed_env_overrides_with_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BTCPULSE_API_PORT", "9000")
    monkeypatch.setenv("BTCPULSE_BIND_HOST", "0.0.0.0")
    monkeypatch.setenv("BTCPULSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BTCPULSE_BATCH_MAX_SIZE", "7")
    monkeypatch.setenv("BTCPULSE_RAY_NUM_CPUS", "2")
    monkeypatch.setenv("BTCPULSE_PULSAR_BROKER_PORT", "16650")
    monkeypatch.setenv("BTCPULSE_TOPIC_PREFIX", "persistent://t/n/p")
    s = BtcpulseSettings()
    assert s.api_port == 9000
    assert s.api_url == "http://0.0.0.0:9000"
    assert s.state_dir == tmp_path / "state"
    assert isinstance(s.state_dir, Path)
    assert s.batch_max_size == 7
    assert s.ray_num_cpus == 2
    assert s.pulsar_service_url == "pulsar://127.0.0.1:16650"
    assert s.topic_prefix == "persistent://t/n/p"


def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("btcpulse_api_port", "9001")
    assert BtcpulseSettings().api_port == 9001


def test_unprefixed_field_name_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9999")
    assert BtcpulseSettings().api_port == 8000


def test_pulsar_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSAR_URL", "pulsar://broker.example:6650")
    s = BtcpulseSettings()
    assert s.pulsar_url == "pulsar://broker.example:6650"
    assert s.pulsar_service_url == "pulsar://broker.example:6650"
    assert s.local_pulsar is False


def test_pulsar_url_prefixed_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCPULSE_PULSAR_URL", "pulsar://other:6650")
    monkeypatch.setenv("BTCPULSE_PULSAR_ADMIN_URL", "http://other:8080")
    s = BtcpulseSettings()
    assert s.pulsar_service_url == "pulsar://other:6650"
    assert s.pulsar_http_url == "http://other:8080"


def test_qdrant_url_alias_and_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://qdrant.example:6333")
    assert BtcpulseSettings().qdrant_url == "http://qdrant.example:6333"
    monkeypatch.delenv("QDRANT_URL")
    monkeypatch.setenv("BTCPULSE_QDRANT_URL", ":memory:")
    assert BtcpulseSettings().qdrant_url == ":memory:"


def test_init_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://from-env:6333")
    monkeypatch.setenv("BTCPULSE_API_PORT", "9000")
    s = BtcpulseSettings(qdrant_url=":memory:", api_port=9100)
    assert s.qdrant_url == ":memory:"
    assert s.api_port == 9100


def test_secret_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "s3cr3t-token-value")
    s = BtcpulseSettings()
    assert s.qdrant_api_key is not None
    assert s.qdrant_api_key.get_secret_value() == "s3cr3t-token-value"
    for text in (repr(s), str(s), repr(s.model_dump()), s.model_dump_json()):
        assert "s3cr3t-token-value" not in text


def test_prefixed_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCPULSE_QDRANT_API_KEY", "k2")
    key = BtcpulseSettings().qdrant_api_key
    assert key is not None
    assert key.get_secret_value() == "k2"


@pytest.mark.parametrize("field", ["BATCH_MAX_SIZE", "RECEIVER_QUEUE_SIZE", "ANALYSIS_ACTORS"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_positive_fields_validated(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(f"BTCPULSE_{field}", value)
    with pytest.raises(ValidationError, match="must be >= 1"):
        BtcpulseSettings()


def test_batch_max_size_one_is_valid_and_zero_is_not() -> None:
    assert BtcpulseSettings(batch_max_size=1).batch_max_size == 1
    with pytest.raises(ValidationError):
        BtcpulseSettings(batch_max_size=0)


def test_non_numeric_port_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCPULSE_API_PORT", "eighty")
    with pytest.raises(ValidationError):
        BtcpulseSettings()


def test_unknown_env_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCPULSE_NO_SUCH_SETTING", "1")
    assert BtcpulseSettings().api_port == 8000


def test_settings_are_frozen() -> None:
    s = BtcpulseSettings()
    with pytest.raises(ValidationError):
        s.api_port = 1  # type: ignore[misc]


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("BTCPULSE_API_PORT", "9200")
        first = get_settings()
        monkeypatch.setenv("BTCPULSE_API_PORT", "9300")
        assert get_settings() is first
        assert first.api_port == 9200
    finally:
        get_settings.cache_clear()
