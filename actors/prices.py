"""Live BTC prices from exchanges: parsers, a resilient stream client and 1-second bars.

No Ray and no Pulsar here: a source actor drives these pieces and publishes what they return.

Stages
------
1. **Parse** (:func:`parse_coinbase`, :func:`parse_kraken`, :func:`parse_binance`,
   :func:`parse_bitstamp`, :func:`parse_gemini`; REST answers: :func:`parse_rest`). Pure
   functions from one received JSON text to a :class:`ParseResult`: zero or more
   :class:`~cluster.records.PriceTick` (``interval_s`` 0, open = high = low = close) for *every*
   symbol in the message, or "ignored" (heartbeats, acks, order-book/depth/kline updates), or
   an error (bad JSON, an unexpected shape, an implausible value). They never raise.
2. **Select** (:class:`TickParser`): one per connection. Keeps the Kraken channel map, counts
   messages/ticks/ignored/errors, and keeps only the configured symbols.
3. **Stream** (:class:`PriceStream`): an ``async with`` / ``async for`` client on
   ``websockets``. It connects to the first endpoint of an ordered list (Coinbase, then Kraken,
   then Binance by default), sends the subscribe messages, and yields ticks. No message for
   ``stale_after_s`` means the connection is stale: it is closed and a new one is made, with
   exponential backoff and jitter; after ``attempts_per_endpoint`` failures in a row the next
   endpoint is tried. While no stream has delivered anything for ``stale_after_s``, a REST
   poller (``httpx``) takes over and yields the exchange's last trade/price; it stops as soon
   as a stream delivers again. Ticks are de-duplicated by id (a reconnect's ``last_match``, the
   REST answer and the stream's copy of one trade share an id). :meth:`PriceStream.health`
   reports the mode (``stream`` / ``rest`` / ``down``) and the counters.
4. **Bar** (:class:`SecondBars`, :func:`iter_bars`): ticks to 1-second OHLCV bars per
   (source, symbol), each emitted once its second has closed.

Ticks or bars on the ``prices`` topic
-------------------------------------
The producer publishes **1-second bars** (``interval_s`` 1). Coinbase BTC-USD alone can exceed
50 matches a second in a burst (Binance BTCUSDT several hundred); every consumer of ``prices``
(the aggregator's windows, the stores, the dashboard) works at one second or coarser, and the
aggregates store keeps one row per record. A bar bounds the topic at one message a second per
(exchange, symbol) however hot the market, and loses nothing those consumers use: open, high,
low, close and volume of the second are exact (every trade is folded in, open/close by
exchange time), and a window's OHLC built from 1-s bars equals the one built from the trades.
Bar ids are deterministic (source, symbol, second), so a replayed bar lands on the same id.

Ticks are the unit *inside* the producer: the parsers emit them (with the exchange's trade id
as ``seq``, so one trade always has one id), de-duplication works on them, the bars are built
from them, and they are what a future trade-level consumer would publish to a topic of its own
without touching the parsers. Publishing them on ``prices`` would multiply the topic's rate by
the trade rate for no reader that needs it. Cost of bars: up to one second of latency (plus
``grace_s`` when a second has no later trade to close it).

Symbols
-------
Canonical form ``BASE-QUOTE``, upper case, with Kraken's ``XBT`` read as ``BTC``: ``BTC-USD``,
``XBT/USD``, ``XXBTZUSD`` and ``btcusd`` are all ``BTC-USD``. A stablecoin quote is its own
symbol: ``btcusdt`` is ``BTC-USDT``, never merged into ``BTC-USD`` (USDT trades at a spread
to USD, and mixing the two would make OHLC jump between quotes). The default filter is
``BTC-USD``; the Binance fallback (binance.com lists no BTC/USD pair) publishes ``BTC-USDT``,
and a consumer tells them apart by ``symbol``.

Times come from the exchange when the message has one (Coinbase ``time``, Kraken trade time,
Binance ``T``, Bitstamp ``microtimestamp``, Gemini ``timestamp``); only Kraken ticker messages
and REST tickers without a time use the receive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from cluster.records import PriceTick, to_ts

log = logging.getLogger(__name__)

DEFAULT_SYMBOL = "BTC-USD"

# ---------------------------------------------------------------------------- symbols

_QUOTE_CODES = (
    "USDT", "USDC", "BUSD", "TUSD", "FDUSD", "GUSD", "DAI", "PAX", "USD", "EUR", "GBP", "CHF", "JPY",
    "CAD", "AUD", "TRY", "BRL", "SGD", "KRW", "BTC", "XBT", "ETH", "BNB", "LTC",
)  # fmt: skip
# Longest first, so BTCUSDT is BTC-USDT and not BTCUSD-T.
_QUOTES = tuple(sorted(_QUOTE_CODES, key=len, reverse=True))
_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
# Kraken's legacy REST names: X + 3-letter crypto, then X/Z + 3-letter quote (XXBTZUSD).
_KRAKEN_LEGACY = re.compile(r"^X([A-Z]{3})[XZ]([A-Z]{3})$")


def normalize_symbol(raw: str) -> str:
    """The canonical ``BASE-QUOTE`` form of an exchange's pair name.

    Accepts ``BTC-USD``, ``XBT/USD``, ``btc_usd``, ``BTCUSD``/``btcusdt`` (split at a known
    quote currency), Kraken's ``XXBTZUSD``; ``XBT`` becomes ``BTC``. A concatenated name with no
    known quote is returned upper-cased as it is (it still selects and ids consistently).
    """
    text = raw.strip().upper()
    for sep in ("-", "/", "_"):
        if sep in text:
            base, _, quote = text.partition(sep)
            return f"{_ALIASES.get(base, base)}-{_ALIASES.get(quote, quote)}"
    legacy = _KRAKEN_LEGACY.match(text)
    if legacy:
        base, quote = legacy.groups()
        return f"{_ALIASES.get(base, base)}-{_ALIASES.get(quote, quote)}"
    for quote in _QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            base = text[: -len(quote)]
            return f"{_ALIASES.get(base, base)}-{_ALIASES.get(quote, quote)}"
    return text


# ---------------------------------------------------------------------------- parsing

Exchange = Literal["coinbase", "kraken", "binance", "bitstamp", "gemini"]
EXCHANGES: tuple[Exchange, ...] = ("coinbase", "kraken", "binance", "bitstamp", "gemini")

# Exchange times outside this range are a unit mix-up (ms read as s), not a real trade.
_EARLIEST = 1_230_768_000.0  # 2009-01-01
_LATEST = 4_102_444_800.0  # 2100-01-01
_ISO_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one received message gave.

    Exactly one of: ticks (possibly none, e.g. an empty trade list), ``ignored`` (a message
    that carries no price by design), or ``error`` (the reason; ``ticks`` is then empty).
    """

    ticks: tuple[PriceTick, ...] = ()
    ignored: bool = False
    error: str | None = None


_IGNORED = ParseResult(ignored=True)


class _Unexpected(ValueError):
    """A message that is JSON but not in a shape the parser knows."""


def _run(
    fn: Callable[..., ParseResult], text: str | bytes, received_at: float | None, **kw: Any
) -> ParseResult:
    """Decode the JSON, default the receive time, run a parser body, and turn every failure
    into an error result: the public parsers never raise."""
    try:
        msg = json.loads(text)
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        return ParseResult(error=f"bad JSON: {str(exc)[:160]}")
    try:
        return fn(msg, time.time() if received_at is None else received_at, **kw)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        return ParseResult(error=f"{type(exc).__name__}: {str(exc)[:160]}")


def _num(value: Any) -> float:
    """A JSON number or numeric string as a finite float (``bool`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Unexpected(f"not a number: {value!r:.40}")
    out = float(value)
    if not math.isfinite(out):
        raise _Unexpected(f"not finite: {value!r:.40}")
    return out


def _epoch(seconds: float) -> datetime:
    if not _EARLIEST <= seconds <= _LATEST:
        raise _Unexpected(f"time out of range: {seconds}")
    return datetime.fromtimestamp(seconds, UTC)


def _iso(text: Any) -> datetime:
    """An exchange's ISO-8601 time; fractions beyond microseconds (nanoseconds) are cut."""
    if not isinstance(text, str):
        raise _Unexpected(f"time is not a string: {text!r:.40}")
    cleaned = _ISO_FRACTION.sub(r"\1", text.strip().replace("Z", "+00:00"))
    dt = datetime.fromisoformat(cleaned)
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    _epoch(dt.timestamp())  # range check
    return dt


def _tick(exchange: str, symbol: str, when: datetime, price: Any, volume: Any, seq: Any) -> PriceTick:
    """One trade or price observation; ``seq`` (the exchange's trade id) makes the id unique."""
    p = _num(price)
    v = _num(volume) if volume is not None else 0.0
    if v < 0:
        raise _Unexpected(f"negative volume {v}")
    return PriceTick.create(
        source=exchange,
        symbol=normalize_symbol(symbol),
        ts=when,
        open=p,
        high=p,
        low=p,
        close=p,
        volume=v,
        seq=str(seq),
    )


def _as_dict(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise _Unexpected(f"expected an object, got {type(msg).__name__}")
    return msg


# Coinbase Exchange (ws-feed.exchange.coinbase.com, formerly ws-feed.pro.coinbase.com).
_COINBASE_IGNORED = frozenset(
    {"subscriptions", "heartbeat", "l2update", "snapshot", "status", "received", "open", "done",
     "change", "activate", "l3_update", "full_snapshot"}
)  # fmt: skip


def _coinbase(msg: Any, received_at: float) -> ParseResult:
    m = _as_dict(msg)
    kind = m.get("type")
    if kind in ("match", "last_match"):
        when = _iso(m["time"])
        return ParseResult((_tick("coinbase", m["product_id"], when, m["price"], m["size"], m["trade_id"]),))
    if kind in ("ticker", "ticker_batch"):
        # A ticker is sent per trade and names it (trade_id, last_size): it gives the very
        # same tick (same id) as that trade's match message.
        when = _iso(m["time"]) if m.get("time") else _epoch(received_at)
        seq = m.get("trade_id", "ticker")
        return ParseResult((_tick("coinbase", m["product_id"], when, m["price"], m.get("last_size"), seq),))
    if kind in _COINBASE_IGNORED:
        return _IGNORED
    if kind == "error":
        return ParseResult(
            error=f"exchange error: {str(m.get('message'))[:120]} {str(m.get('reason'))[:120]}"
        )
    raise _Unexpected(f"unknown coinbase message type {kind!r:.40}")


def parse_coinbase(text: str | bytes, *, received_at: float | None = None) -> ParseResult:
    """Coinbase Exchange feed: ``match``/``last_match`` (one trade each, ``trade_id`` as seq,
    ``size`` as volume) and ``ticker`` (the trade it reports: the same tick as its match).
    Subscription acks, heartbeats, level2/full-channel messages are ignored; ``error`` and
    unknown types are errors."""
    return _run(_coinbase, text, received_at)


# Kraken WebSocket v1 (ws.kraken.com): events are objects, channel data are arrays
# [channelID, payload, channelName, pair] (book messages may carry two payloads).
_KRAKEN_EVENTS_IGNORED = frozenset({"heartbeat", "systemStatus", "pong", "subscriptionStatus"})
_KRAKEN_CHANNELS_IGNORED = ("book", "spread", "ohlc", "ownTrades", "openOrders")


def _kraken(msg: Any, received_at: float, channels: dict[int, tuple[str, str]] | None = None) -> ParseResult:
    if isinstance(msg, dict):
        event = msg.get("event")
        if event == "subscriptionStatus":
            status = msg.get("status")
            if status == "error":
                return ParseResult(error=f"exchange error: {str(msg.get('errorMessage'))[:160]}")
            cid = msg.get("channelID")
            if channels is not None and isinstance(cid, int):
                if status == "subscribed":
                    channels[cid] = (str(msg.get("channelName", "")), str(msg.get("pair", "")))
                elif status == "unsubscribed":
                    channels.pop(cid, None)
            return _IGNORED
        if event in _KRAKEN_EVENTS_IGNORED:
            return _IGNORED
        if event == "error":
            return ParseResult(error=f"exchange error: {str(msg.get('errorMessage'))[:160]}")
        raise _Unexpected(f"unknown kraken event {event!r:.40}")
    if not isinstance(msg, list) or len(msg) < 2:
        raise _Unexpected("kraken message is neither an event nor a channel array")
    if len(msg) >= 4 and isinstance(msg[-1], str) and isinstance(msg[-2], str):
        name, pair = msg[-2], msg[-1]
    else:  # the short form [channelID, payload]: name and pair come from the subscription ack
        known = (channels or {}).get(msg[0])
        if known is None:
            raise _Unexpected(f"kraken channel {msg[0]!r:.20} has no subscription")
        name, pair = known
    if name.startswith(_KRAKEN_CHANNELS_IGNORED):
        return _IGNORED
    payload = msg[1]
    if name == "trade":
        if not isinstance(payload, list):
            raise _Unexpected("kraken trade payload is not a list")
        ticks = []
        for i, entry in enumerate(payload):
            if not isinstance(entry, list):
                raise _Unexpected("kraken trade entry is not a list")
            price, volume, when = entry[0], entry[1], entry[2]
            # v1 trades carry no id; position, price and volume at the exchange's microsecond
            # time identify one (the same message replayed gives the same ids).
            seq = entry[6] if len(entry) > 6 and entry[6] not in ("", None) else f"{i}:{price}:{volume}"
            ticks.append(_tick("kraken", pair, _epoch(_num(when)), price, volume, seq))
        return ParseResult(tuple(ticks))
    if name == "ticker":
        # The ticker has no time and names no trade: a price observation at receive time,
        # last trade price ("c"), volume 0 (volume comes from trades only).
        last = _as_dict(payload)["c"]
        return ParseResult((_tick("kraken", pair, _epoch(received_at), last[0], None, "ticker"),))
    raise _Unexpected(f"unknown kraken channel {name!r:.40}")


def parse_kraken(
    text: str | bytes, *, received_at: float | None = None, channels: dict[int, tuple[str, str]] | None = None
) -> ParseResult:
    """Kraken WebSocket v1: array ``trade`` messages (every trade in it; exchange time) and
    ``ticker`` messages (last price ``c`` at ``received_at``, volume 0). ``channels`` (channel
    id -> (name, pair)) is filled from ``subscriptionStatus`` acks and used for arrays that do not
    name their pair. Heartbeats, status events, book/spread/ohlc are ignored."""
    return _run(_kraken, text, received_at, channels=channels)


# Binance combined streams ({"stream": ..., "data": {...}}) or raw streams (the data alone).
_BINANCE_IGNORED = frozenset(
    {"depthUpdate", "kline", "24hrTicker", "24hrMiniTicker", "bookTicker", "avgPrice"}
)


def _binance(msg: Any, received_at: float) -> ParseResult:
    m = _as_dict(msg)
    if "result" in m and "id" in m:  # SUBSCRIBE/UNSUBSCRIBE acknowledgement
        return _IGNORED
    if "code" in m and "msg" in m:
        return ParseResult(error=f"exchange error {m['code']}: {str(m['msg'])[:160]}")
    data = _as_dict(m["data"]) if "stream" in m else m
    event = data.get("e")
    if event == "aggTrade":
        when = _epoch(_num(data["T"]) / 1000)
        return ParseResult((_tick("binance", data["s"], when, data["p"], data["q"], f"a{data['a']}"),))
    if event == "trade":
        when = _epoch(_num(data["T"]) / 1000)
        return ParseResult((_tick("binance", data["s"], when, data["p"], data["q"], f"t{data['t']}"),))
    if event in _BINANCE_IGNORED:
        return _IGNORED
    if event is None and (
        {"u", "s", "b", "a"} <= data.keys()  # bookTicker (spot has no "e")
        or {"lastUpdateId", "bids", "asks"} <= data.keys()  # partial depth snapshot
    ):
        return _IGNORED
    raise _Unexpected(f"unknown binance event {event!r:.40}")


def parse_binance(text: str | bytes, *, received_at: float | None = None) -> ParseResult:
    """Binance (combined or raw streams): ``aggTrade`` (seq ``a<id>``) and ``trade``
    (seq ``t<id>``), time ``T``. bookTicker, depth, kline and 24h tickers are ignored;
    ``{"code", "msg"}`` is an error. ``BTCUSDT`` is ``BTC-USDT``."""
    return _run(_binance, text, received_at)


_BITSTAMP_IGNORED = frozenset(
    {"bts:subscription_succeeded", "bts:unsubscription_succeeded", "bts:heartbeat",
     "bts:request_reconnect", "data", "order_created", "order_changed", "order_deleted"}
)  # fmt: skip


def _bitstamp(msg: Any, received_at: float) -> ParseResult:
    m = _as_dict(msg)
    event = m.get("event")
    if event == "trade":
        channel = str(m["channel"])
        if not channel.startswith("live_trades_"):
            raise _Unexpected(f"trade on channel {channel!r:.40}")
        d = _as_dict(m["data"])
        if d.get("microtimestamp"):
            when = _epoch(_num(d["microtimestamp"]) / 1e6)
        else:
            when = _epoch(_num(d["timestamp"]))
        price = d.get("price_str", d.get("price"))
        amount = d.get("amount_str", d.get("amount"))
        return ParseResult(
            (_tick("bitstamp", channel.removeprefix("live_trades_"), when, price, amount, d["id"]),)
        )
    if event in _BITSTAMP_IGNORED:
        return _IGNORED
    if event == "bts:error":
        return ParseResult(error=f"exchange error: {str(m.get('data'))[:160]}")
    raise _Unexpected(f"unknown bitstamp event {event!r:.40}")


def parse_bitstamp(text: str | bytes, *, received_at: float | None = None) -> ParseResult:
    """Bitstamp v2: ``trade`` events on ``live_trades_<pair>`` (trade ``id`` as seq, time
    ``microtimestamp``). Order-book ``data`` events, subscription acks and heartbeats are
    ignored."""
    return _run(_bitstamp, text, received_at)


def _gemini(msg: Any, received_at: float) -> ParseResult:
    m = _as_dict(msg)
    kind = m.get("type")
    if kind == "trade":
        when = _epoch(_num(m["timestamp"]) / 1000)
        return ParseResult((_tick("gemini", m["symbol"], when, m["price"], m["quantity"], m["event_id"]),))
    # The first l2_updates of a symbol carries its last 50 trades ("trades"): history from
    # before the connection, newest first. They are not replayed as ticks: they would land in
    # seconds whose bars have closed, and the live feed is what the stream promises.
    if kind in ("l2_updates", "heartbeat", "auction_result", "auction_indicative", "subscriptions") or (
        isinstance(kind, str) and kind.startswith("candles_")
    ):
        return _IGNORED
    if kind == "error" or m.get("result") == "error":
        return ParseResult(error=f"exchange error: {str(m.get('reason') or m.get('message'))[:160]}")
    raise _Unexpected(f"unknown gemini message type {kind!r:.40}")


def parse_gemini(text: str | bytes, *, received_at: float | None = None) -> ParseResult:
    """Gemini market data v2: ``trade`` messages (``event_id`` as seq, ``timestamp`` in ms).
    ``l2_updates`` (including the trade history in a symbol's first update), heartbeats and
    candles are ignored."""
    return _run(_gemini, text, received_at)


PARSERS: dict[str, Callable[..., ParseResult]] = {
    "coinbase": parse_coinbase,
    "kraken": parse_kraken,
    "binance": parse_binance,
    "bitstamp": parse_bitstamp,
    "gemini": parse_gemini,
}


def _coinbase_rest(msg: Any, received_at: float, symbol: str) -> ParseResult:
    m = _as_dict(msg)
    if "price" not in m and "message" in m:
        return ParseResult(error=f"exchange error: {str(m['message'])[:160]}")
    when = _iso(m["time"]) if m.get("time") else _epoch(received_at)
    # Same source and trade id as the stream's match: one trade, one id, however it arrived.
    return ParseResult(
        (_tick("coinbase", symbol, when, m["price"], m.get("size"), m.get("trade_id", "rest")),)
    )


def _kraken_rest(msg: Any, received_at: float, symbol: str) -> ParseResult:
    m = _as_dict(msg)
    if m.get("error"):
        return ParseResult(error=f"exchange error: {str(m['error'])[:160]}")
    result = _as_dict(m["result"])
    if len(result) != 1:
        raise _Unexpected(f"kraken ticker for {len(result)} pairs; ask for one")
    (entry,) = result.values()
    last = _as_dict(entry)["c"]
    return ParseResult((_tick("kraken", symbol, _epoch(received_at), last[0], None, "rest"),))


_REST_PARSERS: dict[str, Callable[..., ParseResult]] = {"coinbase": _coinbase_rest, "kraken": _kraken_rest}


def parse_rest(
    exchange: str, text: str | bytes, *, symbol: str, received_at: float | None = None
) -> ParseResult:
    """A REST ticker answer: Coinbase ``GET /products/<id>/ticker`` (``trade_id``, ``price``,
    ``size``, ``time``: the same tick as the stream's match of that trade) or Kraken
    ``GET /0/public/Ticker?pair=XBTUSD`` (last price ``c`` at ``received_at``, volume 0).
    ``symbol`` is the pair that was asked for. Never raises."""
    parser = _REST_PARSERS.get(exchange)
    if parser is None:
        return ParseResult(error=f"no REST parser for {exchange!r}")
    return _run(parser, text, received_at, symbol=symbol)


@dataclass(slots=True)
class ParseStats:
    """Counters of one :class:`TickParser` (or a sum of several)."""

    messages: int = 0
    ticks: int = 0  # selected ticks returned
    filtered: int = 0  # parsed ticks of other symbols
    ignored: int = 0
    errors: int = 0
    last_error: str | None = None


class TickParser:
    """Parses one connection's messages and keeps the selected symbols.

    ``symbols`` in any alias form (``XBT/USD``, ``btcusdt``); ``None`` keeps every symbol.
    :meth:`feed` never raises; what it saw is in :attr:`stats`.
    """

    def __init__(self, exchange: str, symbols: Iterable[str] | None = (DEFAULT_SYMBOL,)) -> None:
        if exchange not in PARSERS:
            raise ValueError(f"unknown exchange {exchange!r}; one of {sorted(PARSERS)}")
        self.exchange = exchange
        self.symbols = None if symbols is None else frozenset(normalize_symbol(s) for s in symbols)
        self.stats = ParseStats()
        self._channels: dict[int, tuple[str, str]] = {}
        self._parse = PARSERS[exchange]

    def parse(self, text: str | bytes, received_at: float | None = None) -> ParseResult:
        """The unfiltered result of one message, counted."""
        if self.exchange == "kraken":
            result = parse_kraken(text, received_at=received_at, channels=self._channels)
        else:
            result = self._parse(text, received_at=received_at)
        self.stats.messages += 1
        if result.error is not None:
            self.stats.errors += 1
            self.stats.last_error = result.error
        elif result.ignored:
            self.stats.ignored += 1
        return result

    def feed(self, text: str | bytes, received_at: float | None = None) -> list[PriceTick]:
        """The selected ticks of one message, in message order."""
        ticks = self.parse(text, received_at).ticks
        kept = [t for t in ticks if self.symbols is None or t.symbol in self.symbols]
        self.stats.ticks += len(kept)
        self.stats.filtered += len(ticks) - len(kept)
        return kept


# ---------------------------------------------------------------------------- recordings


@dataclass(frozen=True, slots=True)
class RecordedLine:
    """One line of a cryptofeed recording: ``open`` (connection opened), ``sent`` (by the
    client) or ``received`` (from the exchange, raw JSON in ``text``)."""

    kind: Literal["open", "sent", "received"]
    ts: float
    text: str
    url: str = ""


def read_recording(path: Path) -> Iterator[RecordedLine]:
    """The lines of a cryptofeed ``*.ws.*`` recording, blank lines skipped.

    Formats: ``<url> <-> <ts>``, ``<url> <- <ts>: <json>``, ``<ts>: <json>``. A line in none of
    them raises ``ValueError`` naming its number (a recording is trusted test input).
    """
    with path.open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            head, sep, rest = line.partition(": ")
            try:
                if " <-> " in head and not sep:
                    url, _, ts = line.rpartition(" <-> ")
                    yield RecordedLine("open", float(ts), "", url)
                elif " <- " in head:
                    url, _, ts = head.rpartition(" <- ")
                    yield RecordedLine("sent", float(ts), rest, url)
                elif sep:
                    yield RecordedLine("received", float(head), rest)
                else:
                    raise ValueError("no separator")
            except ValueError as exc:
                raise ValueError(f"{path.name}:{n}: not a recording line ({exc})") from exc


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class StreamEndpoint:
    """One exchange WebSocket: where, what to send after connecting, which symbols to keep.

    ``exchange`` picks the parser and is the ticks' ``source``; ``name`` labels it in health
    (default: the exchange). ``symbols`` ``None`` keeps every symbol.
    """

    exchange: str
    url: str
    subscribe: tuple[str, ...] = ()
    symbols: frozenset[str] | None = frozenset({DEFAULT_SYMBOL})
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.exchange


@dataclass(frozen=True)
class RestEndpoint:
    """A REST ticker URL polled while every stream is stale or down; ``symbol`` is the pair it
    answers for (the answer does not say it in a usable form)."""

    exchange: str
    url: str
    symbol: str = DEFAULT_SYMBOL


def default_endpoints() -> list[StreamEndpoint]:
    """Coinbase (primary; ``matches`` plus ``heartbeat`` so a quiet market is not stale),
    Kraken v1 ``trade`` on XBT/USD, Binance ``btcusdt@aggTrade`` (published as BTC-USDT)."""
    coinbase = json.dumps(
        {"type": "subscribe", "product_ids": [DEFAULT_SYMBOL], "channels": ["matches", "heartbeat"]}
    )
    kraken = json.dumps({"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "trade"}})
    return [
        StreamEndpoint("coinbase", "wss://ws-feed.exchange.coinbase.com", (coinbase,)),
        StreamEndpoint("kraken", "wss://ws.kraken.com", (kraken,)),
        StreamEndpoint(
            "binance",
            "wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade",
            (),
            frozenset({"BTC-USDT"}),
        ),
    ]


def default_rest() -> list[RestEndpoint]:
    """Coinbase's product ticker first (it names the trade), Kraken's ticker second."""
    return [
        RestEndpoint("coinbase", "https://api.exchange.coinbase.com/products/BTC-USD/ticker"),
        RestEndpoint("kraken", "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"),
    ]


# ---------------------------------------------------------------------------- stream client


def backoff_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first after a good session):
    ``d = min(max_s, base_s * 2**attempt)``, then a uniform draw in ``[d/2, d]`` so that many
    clients dropped together do not reconnect together."""
    d = min(max_s, base_s * 2 ** min(attempt, 30))
    return d / 2 + rng.uniform(0.0, d / 2)


Mode = Literal["stream", "rest", "down"]


@dataclass(frozen=True)
class StreamHealth:
    """A snapshot of :class:`PriceStream`.

    ``mode``: ``stream`` while a WebSocket delivers (a message within ``stale_after_s``),
    ``rest`` while the REST poller is the source, ``down`` when neither works. ``ticks``
    counts ticks handed out (stream and REST, after filter and de-duplication);
    ``messages``/``ignored``/``errors``/``filtered`` are stream messages; times are Unix
    seconds by the local clock.
    """

    mode: Mode
    connected: str | None
    messages: int
    ticks: int
    ignored: int
    errors: int
    filtered: int
    duplicates: int
    reconnects: int
    stale: int
    rest_polls: int
    rest_ticks: int
    rest_errors: int
    last_tick_at: float | None
    last_message_at: float | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _End(Enum):
    FAILED = "failed"  # no connection (refused, handshake, timeout)
    CLOSED = "closed"  # the connection ended
    STALE = "stale"  # no message for stale_after_s
    ROTATE = "rotate"  # a fallback served long enough: try the primary again


@dataclass
class _Counters:
    mode: Mode = "down"
    connected: str | None = None
    reconnects: int = 0
    stale: int = 0
    ticks: int = 0
    duplicates: int = 0
    rest_polls: int = 0
    rest_ticks: int = 0
    rest_errors: int = 0
    last_tick_at: float | None = None
    last_message_at: float | None = None
    last_error: str | None = None
    parsed: ParseStats = field(default_factory=ParseStats)


class PriceStream:
    """Ticks from the first working exchange stream, REST while none works.

    Use::

        async with PriceStream() as stream:
            async for tick in stream:
                ...
            stream.health()

    Contract: ticks of one connection come in message order; a tick id is handed out at most
    once within the last ``dedupe_window`` ids (reconnect repeats, REST repeats and a trade's
    ticker+match pair collapse); nothing received on a connection is dropped but by the symbol
    filter. What an exchange sent while no connection was open is not recovered (no exchange
    replays a public trade feed); REST fills such a gap with the latest price once it lasts
    ``stale_after_s``. A failure in the client's own code ends the iteration with that
    exception; network failures never do.

    Endpoint policy: a connection that delivered and then closed is retried on the same
    endpoint at once (small jittered delay); a failed, empty or stale one counts against its
    endpoint, and after ``attempts_per_endpoint`` such failures in a row the next endpoint is
    tried (after the last, the primary again), with backoff growing while nothing delivers.
    On a fallback, the session is ended after ``return_to_primary_s`` to go back to the
    primary (``None``: stay on the fallback until it fails).
    """

    def __init__(
        self,
        endpoints: Sequence[StreamEndpoint] | None = None,
        *,
        rest: Sequence[RestEndpoint] | None = None,
        stale_after_s: float = 15.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        attempts_per_endpoint: int = 2,
        return_to_primary_s: float | None = 300.0,
        rest_interval_s: float = 2.0,
        rest_timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
        rng: random.Random | None = None,
        queue_size: int = 10_000,
        dedupe_window: int = 10_000,
    ) -> None:
        self.endpoints = list(default_endpoints() if endpoints is None else endpoints)
        self.rest = list(default_rest() if rest is None else rest)
        if not self.endpoints and not self.rest:
            raise ValueError("a PriceStream needs a stream or a REST endpoint")
        if stale_after_s <= 0 or attempts_per_endpoint < 1:
            raise ValueError("stale_after_s must be > 0 and attempts_per_endpoint >= 1")
        self.stale_after_s = stale_after_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.attempts_per_endpoint = attempts_per_endpoint
        self.return_to_primary_s = return_to_primary_s
        self.rest_interval_s = rest_interval_s
        self.rest_timeout_s = rest_timeout_s
        self.open_timeout_s = open_timeout_s
        # Jitter only: not security relevant, and a seeded one makes tests reproducible.
        self._rng = rng or random.Random()  # noqa: S311
        self._queue: asyncio.Queue[PriceTick] = asyncio.Queue(queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        self._c = _Counters()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_stream_msg = -math.inf  # loop time of the last stream message
        self._session_parser: TickParser | None = None
        self._started = False

    # -- lifecycle

    async def __aenter__(self) -> PriceStream:
        if self._started:
            raise RuntimeError("a PriceStream runs once")
        self._started = True
        loop = asyncio.get_running_loop()
        # REST waits stale_after_s from start for a stream to deliver; with no stream, at once.
        self._last_stream_msg = loop.time() if self.endpoints else -math.inf
        if self.endpoints:
            self._tasks.append(asyncio.create_task(self._stream_loop(), name="prices-stream"))
        if self.rest:
            self._tasks.append(asyncio.create_task(self._rest_loop(), name="prices-rest"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        pending = set(self._tasks)
        # Cancel again if a library swallowed the first cancellation; never hang the caller.
        for _ in range(5):
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=2.0)
            if not pending:
                break
        else:
            log.error("prices: %d background task(s) ignored cancellation", len(pending))
        self._c.mode, self._c.connected = "down", None

    def __aiter__(self) -> PriceStream:
        return self

    async def __anext__(self) -> PriceTick:
        if not self._tasks:
            raise RuntimeError("iterate inside `async with PriceStream(...)`")
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        try:
            done, _ = await asyncio.wait([getter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.result()  # re-raises the background task's failure here
        raise StopAsyncIteration

    # -- health

    def health(self) -> StreamHealth:
        c, p = self._c, self._c.parsed
        live = self._session_parser.stats if self._session_parser else ParseStats()
        return StreamHealth(
            mode=c.mode,
            connected=c.connected,
            messages=p.messages + live.messages,
            ticks=c.ticks,
            ignored=p.ignored + live.ignored,
            errors=p.errors + live.errors,
            filtered=p.filtered + live.filtered,
            duplicates=c.duplicates,
            reconnects=c.reconnects,
            stale=c.stale,
            rest_polls=c.rest_polls,
            rest_ticks=c.rest_ticks,
            rest_errors=c.rest_errors,
            last_tick_at=c.last_tick_at,
            last_message_at=c.last_message_at,
            last_error=live.last_error or p.last_error or c.last_error,
        )

    # -- internals

    def _stream_fresh(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_stream_msg < self.stale_after_s

    async def _emit(self, tick: PriceTick) -> bool:
        """Hand a tick out unless its id was seen recently; True when handed out."""
        if tick.id in self._seen:
            self._seen.move_to_end(tick.id)
            self._c.duplicates += 1
            return False
        self._seen[tick.id] = None
        if len(self._seen) > self._dedupe_window:
            self._seen.popitem(last=False)
        await self._queue.put(tick)
        self._c.ticks += 1
        self._c.last_tick_at = time.time()
        return True

    async def _stream_loop(self) -> None:
        index, failures, attempt = 0, 0, 0
        first = True
        while True:
            if not first:
                self._c.reconnects += 1
            first = False
            endpoint = self.endpoints[index]
            end, delivered = await self._session(endpoint, index)
            if end is _End.ROTATE:
                index, failures, attempt = 0, 0, 0
            elif delivered and end is _End.CLOSED:
                # A drop after data is routine (exchanges rotate connections): same endpoint.
                failures, attempt = 0, 0
            else:
                failures += 1
                attempt = 0 if delivered else attempt + 1
                if failures >= self.attempts_per_endpoint:
                    index, failures = (index + 1) % len(self.endpoints), 0
            delay = backoff_delay(
                attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s, rng=self._rng
            )
            log.info(
                "prices: %s %s after %d messages; next %s in %.2fs",
                endpoint.label,
                end.value,
                delivered,
                self.endpoints[index].label,
                delay,
            )
            await asyncio.sleep(delay)

    async def _session(self, endpoint: StreamEndpoint, index: int) -> tuple[_End, int]:
        """One connection, until it fails, closes, goes stale or rotates; returns how it ended
        and how many messages it delivered."""
        loop = asyncio.get_running_loop()
        parser = TickParser(endpoint.exchange, endpoint.symbols)
        self._session_parser = parser
        delivered = 0
        end = _End.FAILED
        try:
            async with connect(
                endpoint.url,
                open_timeout=self.open_timeout_s,
                close_timeout=1.0,
                max_size=2**22,  # order-book snapshots are large; 4 MiB bounds memory
                user_agent_header="btcpulse",
            ) as ws:
                self._c.connected = endpoint.label
                end = _End.CLOSED
                for message in endpoint.subscribe:
                    await ws.send(message)
                started = loop.time()
                while True:
                    try:
                        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                        # cancellation that lands as recv() completes, and the loop would
                        # never stop.
                        async with asyncio.timeout(self.stale_after_s):
                            text = await ws.recv()
                    except TimeoutError:
                        self._c.stale += 1
                        log.warning(
                            "prices: %s stale (no message for %.1fs)", endpoint.label, self.stale_after_s
                        )
                        return _End.STALE, delivered
                    delivered += 1
                    self._last_stream_msg = loop.time()
                    self._c.last_message_at = time.time()
                    self._c.mode = "stream"
                    for tick in parser.feed(text, received_at=time.time()):
                        await self._emit(tick)
                    if (
                        index > 0
                        and self.return_to_primary_s is not None
                        and loop.time() - started >= self.return_to_primary_s
                    ):
                        return _End.ROTATE, delivered
        except (OSError, TimeoutError, WebSocketException) as exc:
            # ConnectionClosed is a WebSocketException; refused/reset are OSErrors.
            self._c.last_error = f"{endpoint.label}: {type(exc).__name__}: {str(exc)[:160]}"
            return end, delivered
        finally:
            self._session_parser = None
            self._add_stats(parser.stats)
            self._c.connected = None
            if self._c.mode == "stream":
                self._c.mode = "down"  # until REST answers or the next connection delivers

    def _add_stats(self, s: ParseStats) -> None:
        p = self._c.parsed
        p.messages += s.messages
        p.ticks += s.ticks
        p.filtered += s.filtered
        p.ignored += s.ignored
        p.errors += s.errors
        p.last_error = s.last_error or p.last_error

    async def _rest_loop(self) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(
            timeout=self.rest_timeout_s, headers={"User-Agent": "btcpulse"}, follow_redirects=False
        ) as client:
            while True:
                quiet = loop.time() - self._last_stream_msg
                if quiet < self.stale_after_s:
                    await asyncio.sleep(self.stale_after_s - quiet)
                    continue
                await self._poll_once(client)
                await asyncio.sleep(self.rest_interval_s)

    async def _poll_once(self, client: httpx.AsyncClient) -> None:
        """One REST round: the first endpoint that answers with a tick wins."""
        self._c.rest_polls += 1
        for endpoint in self.rest:
            try:
                response = await client.get(endpoint.url)
                response.raise_for_status()
                body = response.content
            except httpx.HTTPError as exc:
                self._c.rest_errors += 1
                self._c.last_error = f"REST {endpoint.exchange}: {type(exc).__name__}: {str(exc)[:160]}"
                continue
            result = parse_rest(endpoint.exchange, body, symbol=endpoint.symbol, received_at=time.time())
            if result.error is not None or not result.ticks:
                self._c.rest_errors += 1
                self._c.last_error = f"REST {endpoint.exchange}: {result.error}"
                continue
            if self._stream_fresh():
                return  # a stream came back while this request was in flight: it wins
            self._c.mode = "rest"
            for tick in result.ticks:
                if await self._emit(tick):
                    self._c.rest_ticks += 1
            return
        if not self._stream_fresh():
            self._c.mode = "down"


# ---------------------------------------------------------------------------- bars


@dataclass(slots=True)
class _OpenBar:
    second: int
    open_ts: float
    open: float
    high: float
    low: float
    close_ts: float
    close: float
    volumes: list[float]
    ids: set[str]


@dataclass(slots=True)
class BarStats:
    ticks: int = 0  # ticks folded into bars
    bars: int = 0  # bars emitted
    late: int = 0  # ticks for a second already emitted (dropped)
    duplicates: int = 0  # a tick id already in its bar (dropped)


class SecondBars:
    """Ticks to 1-second OHLCV bars, one series per (source, symbol).

    A bar covers ``[s, s + 1)`` of exchange time; open/close are the earliest/latest tick by
    exchange time (arrival order breaks ties), high/low the extremes, volume the sum. A bar is
    emitted once, when its second has closed: by :meth:`add` as soon as a tick of a later
    second of the same series arrives, or by :meth:`flush` once the local clock is
    ``grace_s`` past the second's end (a quiet market still gets its bar). A tick for a second
    already emitted is late: dropped and counted (a bar never changes after it is published).
    Bar ids are deterministic: (source, symbol, second, "1s").
    """

    interval_s = 1

    def __init__(self, *, grace_s: float = 1.0) -> None:
        self.grace_s = grace_s
        self.stats = BarStats()
        self._open: dict[tuple[str, str], _OpenBar] = {}
        self._emitted_up_to: dict[tuple[str, str], int] = {}

    def add(self, tick: PriceTick) -> list[PriceTick]:
        """Fold one tick in; returns the bar it closed (zero or one). ``ValueError`` for a bar."""
        if tick.interval_s != 0:
            raise ValueError("SecondBars takes ticks (interval_s 0), not bars")
        key = (tick.source, tick.symbol)
        ts = to_ts(tick.ts)
        second = math.floor(ts)
        if second <= self._emitted_up_to.get(key, -1):
            self.stats.late += 1
            return []
        out: list[PriceTick] = []
        bar = self._open.get(key)
        if bar is not None and second > bar.second:
            out.append(self._emit(key, bar))
            bar = None
        if bar is None:
            self._open[key] = _OpenBar(
                second, ts, tick.close, tick.close, tick.close, ts, tick.close, [tick.volume], {tick.id}
            )
        elif tick.id in bar.ids:
            self.stats.duplicates += 1
            return out
        else:
            bar.ids.add(tick.id)
            bar.high = max(bar.high, tick.close)
            bar.low = min(bar.low, tick.close)
            bar.volumes.append(tick.volume)
            if ts < bar.open_ts:
                bar.open_ts, bar.open = ts, tick.close
            if ts >= bar.close_ts:
                bar.close_ts, bar.close = ts, tick.close
        self.stats.ticks += 1
        return out

    def flush(self, now: float | None = None) -> list[PriceTick]:
        """Bars whose second ended at least ``grace_s`` before ``now`` (Unix seconds, default
        the local clock), oldest first."""
        now = time.time() if now is None else now
        due = [(bar.second, key) for key, bar in self._open.items() if bar.second + 1 + self.grace_s <= now]
        return [self._emit(key, self._open[key]) for _, key in sorted(due)]

    def drain(self) -> list[PriceTick]:
        """Every open bar, whether its second is over or not (at shutdown), oldest first."""
        due = sorted((bar.second, key) for key, bar in self._open.items())
        return [self._emit(key, self._open[key]) for _, key in due]

    def _emit(self, key: tuple[str, str], bar: _OpenBar) -> PriceTick:
        del self._open[key]
        self._emitted_up_to[key] = bar.second
        self.stats.bars += 1
        return PriceTick.create(
            source=key[0],
            symbol=key[1],
            ts=datetime.fromtimestamp(bar.second, UTC),
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=math.fsum(bar.volumes),
            interval_s=self.interval_s,
            seq="1s",
        )


async def iter_bars(
    ticks: AsyncIterator[PriceTick],
    bars: SecondBars | None = None,
    *,
    flush_every_s: float = 0.25,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[PriceTick]:
    """The bars of an async tick source (e.g. a :class:`PriceStream`), each as its second
    closes; checks the clock every ``flush_every_s`` so quiet seconds close too. When the
    source ends, the open bars are drained."""
    bars = bars or SecondBars()
    # One pending __anext__ kept across timeouts: never cancelled, so no tick is lost.
    pending: asyncio.Future[PriceTick] = asyncio.ensure_future(anext(ticks))
    try:
        while True:
            done, _ = await asyncio.wait([pending], timeout=flush_every_s)
            if done:
                try:
                    tick = pending.result()
                except StopAsyncIteration:
                    break
                pending = asyncio.ensure_future(anext(ticks))
                for bar in bars.add(tick):
                    yield bar
            for bar in bars.flush(clock()):
                yield bar
        for bar in bars.drain():
            yield bar
    finally:
        if not pending.done():
            pending.cancel()
