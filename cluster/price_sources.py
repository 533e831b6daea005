"""The ``[prices]`` part of the sources file: where the BTC price stream comes from.

    [prices]
    enabled = true            # false: no price collector
    stale_after_s = 15        # no message for this long: reconnect / fall back / REST

    [[prices.stream]]         # in order: the first is primary, the others fallbacks
    exchange = "coinbase"     # coinbase | kraken | binance | bitstamp | gemini (picks the parser)
    url = "wss://ws-feed.exchange.coinbase.com"
    subscribe = ['{"type": "subscribe", ...}']   # optional for coinbase/kraken/binance
    symbols = ["BTC-USD"]     # optional; [] keeps every symbol

    [[prices.rest]]           # polled only while every stream is stale or down
    exchange = "coinbase"     # coinbase | kraken
    url = "https://api.exchange.coinbase.com/products/BTC-USD/ticker"

No ``[prices]`` table: the built-in endpoints (Coinbase, then Kraken, then Binance; REST from
Coinbase, then Kraken). As for news sources, a host on a private or loopback address is refused
unless ``allow_private = true`` is set in ``[prices]``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cluster.sources import check_literal_host

STREAM_EXCHANGES = frozenset({"coinbase", "kraken", "binance", "bitstamp", "gemini"})
REST_EXCHANGES = frozenset({"coinbase", "kraken"})
_PRICES_KEYS = {"enabled", "stale_after_s", "allow_private", "stream", "rest"}
_STREAM_KEYS = {"exchange", "url", "subscribe", "symbols", "name"}
_REST_KEYS = {"exchange", "url", "symbol"}


@dataclass(frozen=True, slots=True)
class StreamSpec:
    exchange: str
    url: str
    subscribe: tuple[str, ...] | None = None  # None: the exchange's default subscription
    symbols: tuple[str, ...] | None = ("BTC-USD",)  # None: every symbol
    name: str = ""


@dataclass(frozen=True, slots=True)
class RestSpec:
    exchange: str
    url: str
    symbol: str = "BTC-USD"


@dataclass(frozen=True, slots=True)
class PriceSources:
    enabled: bool = True
    stale_after_s: float = 15.0
    streams: tuple[StreamSpec, ...] | None = None  # None: built-in endpoints
    rest: tuple[RestSpec, ...] | None = None


def _url(value: Any, schemes: tuple[str, ...], where: str, allow_private: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{where}: url must be an absolute {'/'.join(schemes)} URL, got {value[:100]!r}")
    if not allow_private:
        try:
            check_literal_host(parts.hostname)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc} (set allow_private = true in [prices] to allow it)") from exc
    return value


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}")


def price_sources_from_mapping(data: dict[str, Any], origin: str = "<sources>") -> PriceSources:
    """The ``[prices]`` table of a parsed sources file (absent: the defaults)."""
    table = data.get("prices")
    if table is None:
        return PriceSources()
    where = f"{origin}: [prices]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    _unknown(table, _PRICES_KEYS, where)
    enabled, allow_private = table.get("enabled", True), table.get("allow_private", False)
    if not isinstance(enabled, bool) or not isinstance(allow_private, bool):
        raise ValueError(f"{where}: enabled and allow_private must be true or false")
    stale = table.get("stale_after_s", 15.0)
    if isinstance(stale, bool) or not isinstance(stale, int | float) or not 1 <= stale <= 600:
        raise ValueError(f"{where}: stale_after_s must be a number of seconds from 1 to 600")
    streams: list[StreamSpec] | None = None
    if "stream" in table:
        streams = []
        for i, entry in enumerate(table["stream"], 1):
            at = f"{where} stream #{i}"
            _unknown(entry, _STREAM_KEYS, at)
            if entry.get("exchange") not in STREAM_EXCHANGES:
                raise ValueError(f"{at}: exchange must be one of {', '.join(sorted(STREAM_EXCHANGES))}")
            subscribe = entry.get("subscribe")
            symbols = entry.get("symbols", ["BTC-USD"])
            if subscribe is not None and not (
                isinstance(subscribe, list) and all(isinstance(x, str) for x in subscribe)
            ):
                raise ValueError(f"{at}: subscribe must be a list of JSON strings")
            if not (isinstance(symbols, list) and all(isinstance(x, str) for x in symbols)):
                raise ValueError(f"{at}: symbols must be a list of strings")
            streams.append(
                StreamSpec(
                    exchange=entry["exchange"],
                    url=_url(entry.get("url"), ("ws", "wss"), at, allow_private),
                    subscribe=tuple(subscribe) if subscribe is not None else None,
                    symbols=tuple(symbols) or None,
                    name=str(entry.get("name", "")),
                )
            )
    rest: list[RestSpec] | None = None
    if "rest" in table:
        rest = []
        for i, entry in enumerate(table["rest"], 1):
            at = f"{where} rest #{i}"
            _unknown(entry, _REST_KEYS, at)
            if entry.get("exchange") not in REST_EXCHANGES:
                raise ValueError(f"{at}: exchange must be one of {', '.join(sorted(REST_EXCHANGES))}")
            rest.append(
                RestSpec(
                    exchange=entry["exchange"],
                    url=_url(entry.get("url"), ("http", "https"), at, allow_private),
                    symbol=str(entry.get("symbol", "BTC-USD")),
                )
            )
    return PriceSources(
        enabled=enabled,
        stale_after_s=float(stale),
        streams=tuple(streams) if streams is not None else None,
        rest=tuple(rest) if rest is not None else None,
    )


def load_price_sources(path: str | Path) -> PriceSources:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{p.name}: not a valid TOML file: {exc}") from exc
    return price_sources_from_mapping(data, p.name)
