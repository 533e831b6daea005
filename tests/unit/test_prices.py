"""actors.prices: the exchange parsers on real cryptofeed recordings (skipped when
../shared/data is absent), symbol selection, malformed input, REST answers, 1-second bars, and
PriceStream against real local servers: a WebSocket server (``websockets.serve`` on 127.0.0.1)
that replays recorded messages and drops / silences the connection, and an ``http.server``
REST endpoint."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_file
from websockets.asyncio.server import ServerConnection, serve

from actors.prices import (
    ParseResult,
    PriceStream,
    RestEndpoint,
    SecondBars,
    StreamEndpoint,
    TickParser,
    backoff_delay,
    iter_bars,
    normalize_symbol,
    parse_binance,
    parse_bitstamp,
    parse_coinbase,
    parse_gemini,
    parse_kraken,
    parse_rest,
    read_recording,
)
from cluster.ids import tick_id
from cluster.records import PriceTick

WS_DIR = ("feed_and_exchange_fixtures", "exchange_ws")


def recording(name: str) -> Path:
    return shared_file(*WS_DIR, name)


def received(name: str) -> list[tuple[float, str]]:
    return [(r.ts, r.text) for r in read_recording(recording(name)) if r.kind == "received"]


def sent(name: str) -> tuple[str, ...]:
    return tuple(r.text for r in read_recording(recording(name)) if r.kind == "sent")


def parse_file(name: str, symbols: list[str] | None = None) -> tuple[list[PriceTick], TickParser]:
    parser = TickParser(name.split(".")[0].lower(), symbols)
    ticks = [t for ts, text in received(name) for t in parser.feed(text, received_at=ts)]
    return ticks, parser


def unique(ticks: list[PriceTick]) -> list[PriceTick]:
    """First occurrence of each id, in order (what PriceStream hands out)."""
    seen: set[str] = set()
    out = []
    for t in ticks:
        if t.id not in seen:
            seen.add(t.id)
            out.append(t)
    return out


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- the recordings

# file -> (messages received, ticks, distinct tick ids, ignored); errors are 0 everywhere.
EXPECTED = {
    # ticker 107 + match 97 + last_match 10; every ticker names a trade that also has a
    # match/last_match, so the 214 ticks are 107 trades.
    "COINBASE.ws.28.0.txt": (9946, 214, 107, 9732),
    "KRAKEN.ws.48.0.txt": (49, 10, 10, 41),  # 8 trade messages with 10 trades
    "KRAKEN.ws.49.0.txt": (60, 18, 18, 42),  # 18 ticker messages
    "BITSTAMP.ws.1.0.txt": (747, 10, 10, 737),  # 10 live_trades events
    "BINANCE.ws.1.0.txt": (265, 2, 2, 263),  # 2 aggTrade
    "GEMINI.ws.1.0.txt": (678, 16, 16, 662),  # 16 trade messages
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_counts_and_stable_ids(name: str) -> None:
    messages, n_ticks, n_ids, ignored = EXPECTED[name]
    ticks, parser = parse_file(name)
    assert (parser.stats.messages, len(ticks), len({t.id for t in ticks}), parser.stats.ignored) == (
        messages,
        n_ticks,
        n_ids,
        ignored,
    )
    assert parser.stats.errors == 0 and parser.stats.filtered == 0
    assert all(t.interval_s == 0 and t.open == t.high == t.low == t.close > 0 for t in ticks)
    again, _ = parse_file(name)
    assert again == ticks  # same messages, same ids and values


def _by_kind(name: str, key: Callable[[Any], str]) -> tuple[Counter[str], Counter[str]]:
    """(ticks per message kind, ignored messages per message kind) of one recording."""
    parser = TickParser(name.split(".")[0].lower(), None)
    ticks: Counter[str] = Counter()
    ignored: Counter[str] = Counter()
    for ts, text in received(name):
        result = parser.parse(text, received_at=ts)
        kind = key(json.loads(text))
        ticks[kind] += len(result.ticks)
        ignored[kind] += result.ignored
    return +ticks, +ignored


def test_coinbase_counts_by_type() -> None:
    ticks, ignored = _by_kind("COINBASE.ws.28.0.txt", lambda m: m["type"])
    assert ticks == {"ticker": 107, "match": 97, "last_match": 10}
    assert ignored == {"l2update": 9719, "snapshot": 10, "subscriptions": 3}


def test_kraken_counts_by_kind() -> None:
    def kind(m: Any) -> str:
        return m[-2] if isinstance(m, list) else m["event"]

    ticks, ignored = _by_kind("KRAKEN.ws.48.0.txt", kind)
    assert ticks == {"trade": 10}
    assert ignored == {"heartbeat": 30, "subscriptionStatus": 10, "systemStatus": 1}
    ticks, ignored = _by_kind("KRAKEN.ws.49.0.txt", kind)
    assert ticks == {"ticker": 18}
    assert ignored == {"heartbeat": 31, "subscriptionStatus": 10, "systemStatus": 1}


def test_binance_bitstamp_gemini_counts_by_kind() -> None:
    def binance(m: Any) -> str:
        return m["data"].get("e", "bookTicker")

    assert _by_kind("BINANCE.ws.1.0.txt", binance) == (
        {"aggTrade": 2},
        {"depthUpdate": 177, "bookTicker": 84, "kline": 2},
    )
    assert _by_kind("BITSTAMP.ws.1.0.txt", lambda m: m["event"]) == (
        {"trade": 10},
        {"data": 717, "bts:subscription_succeeded": 20},
    )
    # The 500 trades inside the first l2_updates of each symbol are history: not ticks.
    assert _by_kind("GEMINI.ws.1.0.txt", lambda m: m["type"]) == (
        {"trade": 16},
        {"l2_updates": 655, "heartbeat": 7},
    )


def test_read_recording_line_kinds() -> None:
    kinds = Counter(r.kind for r in read_recording(recording("COINBASE.ws.28.0.txt")))
    assert kinds == {"open": 1, "sent": 3, "received": 9946}
    first = next(iter(read_recording(recording("COINBASE.ws.28.0.txt"))))
    assert (first.kind, first.url, first.ts) == ("open", "wss://ws-feed.pro.coinbase.com", 1618677816.8434298)


def _find(ticks: list[PriceTick], source: str, symbol: str, close: float) -> PriceTick:
    (hit,) = [t for t in ticks if (t.source, t.symbol, t.close) == (source, symbol, close)][:1]
    return hit


def test_hand_checked_ticks() -> None:
    coinbase, _ = parse_file("COINBASE.ws.28.0.txt")
    # {"type":"match","trade_id":1568268,"size":"450","price":"0.791","product_id":"SKL-USD",
    #  "time":"2021-04-17T16:43:37.121358Z"}
    t = _find(coinbase, "coinbase", "SKL-USD", 0.791)
    assert (t.ts, t.volume) == ("2021-04-17T16:43:37.121Z", 450.0)
    assert t.id == tick_id("coinbase", "SKL-USD", epoch("2021-04-17T16:43:37.121358"), "1568268")
    # ticker and last_match of trade 881613 (BAND-GBP 14.7775 x 0.04) are one tick.
    band = [x for x in coinbase if x.symbol == "BAND-GBP" and x.close == 14.7775]
    assert len(band) == 2 and band[0] == band[1]
    assert (band[0].ts, band[0].volume) == ("2021-04-17T16:43:30.244Z", 0.04)

    kraken, _ = parse_file("KRAKEN.ws.48.0.txt")
    # [993,[["354.11000000","0.89594024","1618678142.557535","s","l",""]],"trade","XMR/USD"]
    t = kraken[0]
    assert (t.source, t.symbol, t.close, t.volume) == ("kraken", "XMR-USD", 354.11, 0.89594024)
    assert t.ts == "2021-04-17T16:49:02.557Z"
    # one message, two SC/EUR trades (0.04298 x 8500, 0.043 x 2383.16665529): two ticks
    two = [x for x in kraken if x.ts.startswith("2021-04-17T16:49:15.7")]
    assert [(x.close, x.volume) for x in two] == [(0.04298, 8500.0), (0.043, 2383.16665529)]

    ticker, _ = parse_file("KRAKEN.ws.49.0.txt")
    # [468,{"c":["56218.30000","0.01309422"],...},"ticker","XBT/CHF"] received at 1618678132.954571
    t = _find(ticker, "kraken", "BTC-CHF", 56218.3)
    assert (t.ts, t.volume) == ("2021-04-17T16:48:52.954Z", 0.0)

    binance, _ = parse_file("BINANCE.ws.1.0.txt")
    t = binance[0]  # aggTrade a=15683430 NKNUSDT p=0.3528 q=58 T=1633998523963
    assert (t.symbol, t.close, t.volume, t.ts) == ("NKN-USDT", 0.3528, 58.0, "2021-10-12T00:28:43.963Z")
    assert t.id == tick_id("binance", "NKN-USDT", 1633998523.963, "a15683430")

    bitstamp, _ = parse_file("BITSTAMP.ws.1.0.txt")
    t = bitstamp[0]  # id 216000477, 3805.44 x 0.0792, microtimestamp 1641343699596000
    assert (t.symbol, t.close, t.volume, t.ts) == ("ETH-USD", 3805.44, 0.0792, "2022-01-05T00:48:19.596Z")

    gemini, _ = parse_file("GEMINI.ws.1.0.txt")
    t = gemini[0]  # event_id 45465818387 ANKRUSD 0.07946 x 1020.482111 at 1624493670759 ms
    assert (t.symbol, t.close, t.volume, t.ts) == (
        "ANKR-USD",
        0.07946,
        1020.482111,
        "2021-06-24T00:14:30.759Z",
    )


# ---------------------------------------------------------------- symbols and selection


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("BTC-USD", "BTC-USD"),
        ("XBT/USD", "BTC-USD"),
        ("XXBTZUSD", "BTC-USD"),
        ("btcusd", "BTC-USD"),
        ("btcusdt", "BTC-USDT"),
        ("BTCUSDT", "BTC-USDT"),
        ("BTCGBP", "BTC-GBP"),
        ("LINKETH", "LINK-ETH"),
        ("usdteur", "USDT-EUR"),
        ("KSM/XBT", "KSM-BTC"),
        ("btc_usd", "BTC-USD"),
    ],
)
def test_normalize_symbol(raw: str, canonical: str) -> None:
    assert normalize_symbol(raw) == canonical


BTC_MESSAGES = {
    "coinbase": (
        '{"type":"match","trade_id":1,"size":"0.5","price":"30000.01","product_id":"BTC-USD",'
        '"time":"2022-01-05T00:00:00.123456789Z"}'
    ),
    "kraken": '[1,[["30000.1","0.25","1641340800.5","b","m",""]],"trade","XBT/USD"]',
    "binance": (
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":7,"p":"30001.00",'
        '"q":"0.1","f":1,"l":1,"T":1641340800500,"m":false}}'
    ),
    "bitstamp": (
        '{"data":{"id":9,"timestamp":"1641340800","amount_str":"0.2","price_str":"30002",'
        '"microtimestamp":"1641340800500000"},"channel":"live_trades_btcusd","event":"trade"}'
    ),
    "gemini": (
        '{"type":"trade","symbol":"BTCUSD","event_id":5,"timestamp":1641340800500,'
        '"price":"30003","quantity":"0.3","side":"buy"}'
    ),
}


@pytest.mark.parametrize("exchange", sorted(BTC_MESSAGES))
def test_default_selection_is_btc_usd(exchange: str) -> None:
    parser = TickParser(exchange)
    ticks = parser.feed(BTC_MESSAGES[exchange], received_at=1641340801.0)
    if exchange == "binance":  # BTCUSDT is its own symbol, not BTC-USD
        assert ticks == [] and parser.stats.filtered == 1
        (tick,) = TickParser(exchange, ["btcusdt"]).feed(BTC_MESSAGES[exchange])
        assert tick.symbol == "BTC-USDT"
    else:
        (tick,) = ticks
        assert tick.symbol == "BTC-USD" and tick.source == exchange
        assert tick.ts.startswith("2022-01-05T00:00:00")  # exchange time, not the receive time


def test_coinbase_nanosecond_time_is_cut_to_microseconds() -> None:
    (tick,) = parse_coinbase(BTC_MESSAGES["coinbase"]).ticks
    assert tick.ts == "2022-01-05T00:00:00.123Z"
    assert tick.id == tick_id("coinbase", "BTC-USD", epoch("2022-01-05T00:00:00.123456"), "1")


def test_kraken_short_arrays_use_the_subscription_map() -> None:
    channels: dict[int, tuple[str, str]] = {}
    ack = (
        '{"channelID":42,"channelName":"trade","event":"subscriptionStatus","pair":"XBT/USD",'
        '"status":"subscribed"}'
    )
    assert parse_kraken(ack, channels=channels).ignored
    assert channels == {42: ("trade", "XBT/USD")}
    (tick,) = parse_kraken('[42,[["30000.1","0.25","1641340800.5","b","m",""]]]', channels=channels).ticks
    assert tick.symbol == "BTC-USD"
    assert parse_kraken('[43,[["1","1","1641340800.5","b","m",""]]]', channels=channels).error
    book = '[42,{"as":[["30000.1","1.0","1641340800.5"]]},"book-10","XBT/USD"]'
    assert parse_kraken(book).ignored


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_coinbase, b"\xff\xfe not utf-8"),
        (parse_coinbase, "not json"),
        (parse_coinbase, "null"),
        (parse_coinbase, "[]"),
        (parse_coinbase, '{"type":"match"}'),
        (parse_coinbase, '{"type":"brand_new"}'),
        (parse_coinbase, '{"type":"error","message":"Failed to subscribe"}'),
        (parse_coinbase, BTC_MESSAGES["coinbase"].replace('"30000.01"', '"abc"')),
        (parse_coinbase, BTC_MESSAGES["coinbase"].replace('"30000.01"', '"0"')),
        (parse_coinbase, BTC_MESSAGES["coinbase"].replace('"30000.01"', '"NaN"')),
        (parse_coinbase, BTC_MESSAGES["coinbase"].replace('"0.5"', "true")),
        (parse_coinbase, BTC_MESSAGES["coinbase"].replace("2022-01-05T", "yesterday ")),
        (parse_kraken, '[1,[["30000.1","0.25"]],"trade","XBT/USD"]'),
        (parse_kraken, '[1,["30000.1"],"trade","XBT/USD"]'),
        (parse_kraken, '[1,[["30000.1","0.25","1641340800.5"]],"trade","XBT/USD"'),
        (parse_kraken, '{"event":"subscriptionStatus","status":"error","errorMessage":"bad pair"}'),
        (parse_kraken, "7"),
        (parse_binance, BTC_MESSAGES["binance"].replace("1641340800500", "1641340800")),  # s, not ms
        (parse_binance, '{"code":2,"msg":"Invalid request"}'),
        (parse_binance, '{"stream":"x","data":[]}'),
        (parse_bitstamp, '{"event":"trade","channel":"live_trades_btcusd","data":{"id":1}}'),
        (parse_gemini, '{"type":"trade","symbol":"BTCUSD"}'),
    ],
)
def test_malformed_messages_are_errors_never_exceptions(parse: Callable[..., ParseResult], text: Any) -> None:
    result = parse(text, received_at=1641340801.0)
    assert result.error and not result.ticks and not result.ignored


def test_tick_parser_counts_errors_and_keeps_going() -> None:
    parser = TickParser("coinbase")
    for text in ["{", "[1]", '{"type":"heartbeat"}', BTC_MESSAGES["coinbase"]]:
        parser.feed(text)
    s = parser.stats
    assert (s.messages, s.errors, s.ignored, s.ticks) == (4, 2, 1, 1)
    assert s.last_error and "expected an object" in s.last_error


def test_rest_answers() -> None:
    body = '{"ask":"30000.02","bid":"30000","volume":"1","trade_id":1,"price":"30000.01","size":"0.5",'
    body += '"time":"2022-01-05T00:00:00.123456789Z"}'
    (rest,) = parse_rest("coinbase", body, symbol="BTC-USD").ticks
    (stream,) = parse_coinbase(BTC_MESSAGES["coinbase"]).ticks
    assert rest == stream  # one trade, one id, whether polled or streamed

    kraken = {"error": [], "result": {"XXBTZUSD": {"a": ["30010.0", "1", "1.0"], "c": ["30005.5", "0.01"]}}}
    (tick,) = parse_rest("kraken", json.dumps(kraken), symbol="BTC-USD", received_at=1641340800.25).ticks
    assert (tick.source, tick.symbol, tick.close, tick.volume) == ("kraken", "BTC-USD", 30005.5, 0.0)
    assert tick.ts == "2022-01-05T00:00:00.250Z"
    assert parse_rest("kraken", '{"error":["EQuery:Unknown asset pair"]}', symbol="BTC-USD").error
    assert parse_rest("coinbase", '{"message":"NotFound"}', symbol="BTC-USD").error
    assert parse_rest("bitfinex", "{}", symbol="BTC-USD").error


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(a, base_s=0.5, max_s=8.0, rng=rng) for a in range(8)]
    for attempt, d in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= d <= ceiling
    again = [backoff_delay(a, base_s=0.5, max_s=8.0, rng=random.Random(3)) for a in range(1)]
    assert again[0] == delays[0]  # a seeded generator gives the same schedule
    assert backoff_delay(10_000, base_s=0.5, max_s=8.0, rng=rng) <= 8.0


# ---------------------------------------------------------------- 1-second bars

S = 1_650_000_000  # a whole second


def tick(t: float, price: float, volume: float, seq: str, symbol: str = "BTC-USD") -> PriceTick:
    return PriceTick.create(
        source="coinbase",
        symbol=symbol,
        ts=datetime.fromtimestamp(t, UTC),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=volume,
        seq=seq,
    )


def test_second_bars_exact_ohlcv() -> None:
    bars = SecondBars(grace_s=0.5)
    assert bars.add(tick(S + 0.100, 10.0, 1.0, "1")) == []
    assert bars.add(tick(S + 0.500, 12.0, 2.0, "2")) == []
    assert bars.add(tick(S + 0.300, 9.0, 0.5, "3")) == []  # arrives late but inside its second
    assert bars.add(tick(S + 0.500, 12.0, 2.0, "2")) == []  # the same trade again
    assert bars.add(tick(S + 0.700, 50.0, 1.0, "x", symbol="BTC-USDT")) == []  # its own series
    (bar,) = bars.add(tick(S + 1.200, 11.0, 0.25, "4"))
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (10.0, 12.0, 9.0, 12.0, 3.5)
    assert (bar.ts, bar.interval_s, bar.source, bar.symbol) == (
        "2022-04-15T05:20:00Z",
        1,
        "coinbase",
        "BTC-USD",
    )
    assert bar.id == tick_id("coinbase", "BTC-USD", float(S), "1s")

    assert bars.add(tick(S + 0.900, 99.0, 9.0, "5")) == []  # its second is published: late
    assert bars.add(tick(S + 1.900, 13.0, 0.5, "6")) == []
    assert bars.flush(now=S + 1.4) == []  # BTC-USDT's second S ended, but within grace_s
    (usdt,) = bars.flush(now=S + 2.4)
    (second,) = bars.flush(now=S + 2.5)
    assert (usdt.symbol, usdt.ts, usdt.close, usdt.volume) == ("BTC-USDT", "2022-04-15T05:20:00Z", 50.0, 1.0)
    assert (second.open, second.high, second.low, second.close, second.volume) == (
        11.0,
        13.0,
        11.0,
        13.0,
        0.75,
    )
    assert bars.add(tick(S + 3.000, 14.0, 1.0, "7")) == []
    (last,) = bars.drain()
    assert (last.ts, last.close) == ("2022-04-15T05:20:03Z", 14.0)
    assert (bars.stats.bars, bars.stats.late, bars.stats.duplicates, bars.stats.ticks) == (4, 1, 1, 7)
    with pytest.raises(ValueError, match="not bars"):
        bars.add(bar)


def test_iter_bars_closes_quiet_seconds_by_the_clock() -> None:
    now = [S + 0.5]

    async def source() -> AsyncIterator[PriceTick]:
        yield tick(S + 0.1, 10.0, 1.0, "1")
        yield tick(S + 0.2, 11.0, 1.0, "2")
        await asyncio.sleep(0.05)
        now[0] = S + 2.0  # second S is over and past the grace: the next flush emits it
        await asyncio.sleep(0.1)
        yield tick(S + 2.5, 12.0, 1.0, "3")

    async def run() -> list[tuple[str, float, float]]:
        out = []
        async for bar in iter_bars(
            source(), SecondBars(grace_s=0.5), flush_every_s=0.02, clock=lambda: now[0]
        ):
            out.append((bar.ts, bar.close, now[0]))
        return out

    got = asyncio.run(run())
    assert got == [("2022-04-15T05:20:00Z", 11.0, S + 2.0), ("2022-04-15T05:20:02Z", 12.0, S + 2.0)]


# ---------------------------------------------------------------- PriceStream on real sockets


class ReplayServer:
    """A WebSocket server that waits for the client's subscribe messages, then replays
    recorded received-lines. It resumes where it stopped on the next connection; it can drop
    the connection at chosen positions (``abort``: TCP reset; ``close``: close code 1012), go
    silent at a position until :attr:`resume` is set, and send heartbeats once done."""

    def __init__(
        self,
        messages: list[str],
        *,
        subscribe_count: int,
        drops: dict[int, str] | None = None,
        pause_at: int | None = None,
        heartbeat: str | None = None,
        repeat_last_match: bool = True,
    ) -> None:
        self.messages = messages
        self.subscribe_count = subscribe_count
        self.drops = dict(drops or {})
        self.pause_at = pause_at
        self.heartbeat = heartbeat
        self.repeat_last_match = repeat_last_match
        self.resume = asyncio.Event()
        self.position = 0
        self.connections = 0
        self.subscribes: list[str] = []
        self.repeats = 0
        self._last_match: str | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        me = self.connections
        for _ in range(self.subscribe_count):
            self.subscribes.append(str(await ws.recv()))
        if me > 1 and self._last_match and self.repeat_last_match:
            # Like Coinbase: a new matches subscription starts with the last trade again.
            await ws.send(self._last_match)
            self.repeats += 1
        while self.position < len(self.messages):
            if self.pause_at is not None and self.position >= self.pause_at and not self.resume.is_set():
                await self.resume.wait()  # silent, socket open
                if me != self.connections:
                    return  # the client gave this connection up meanwhile
                continue
            how = self.drops.pop(self.position, None)
            if how == "abort":
                while ws.transport.get_write_buffer_size():
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)  # let loopback deliver what was written
                ws.transport.abort()
                return
            if how == "close":
                await ws.close(1012, "restart")
                return
            text = self.messages[self.position]
            await ws.send(text)
            self.position += 1
            if '"type":"match"' in text:
                self._last_match = text.replace('"type":"match"', '"type":"last_match"')
        while self.heartbeat is not None:
            await ws.send(self.heartbeat)
            await asyncio.sleep(0.1)
        await ws.wait_closed()


async def wait_until(what: str, check: Callable[[], object], timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def collect(stream: PriceStream, into: list[PriceTick], modes: list[str]) -> None:
    async for t in stream:
        into.append(t)
        modes.append(stream.health().mode)


async def with_stream(
    stream: PriceStream, body: Callable[[list[PriceTick], list[str]], Awaitable[None]]
) -> None:
    """Run ``body`` while a task consumes ``stream`` into a tick list; also samples the mode."""
    ticks: list[PriceTick] = []
    modes: list[str] = []
    async with stream:
        consumer = asyncio.create_task(collect(stream, ticks, modes))

        async def sample() -> None:
            while True:
                modes.append(stream.health().mode)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            await body(ticks, modes)
        finally:
            consumer.cancel()
            sampler.cancel()
            await asyncio.gather(consumer, sampler, return_exceptions=True)
            if consumer.done() and not consumer.cancelled() and consumer.exception():
                raise consumer.exception()  # type: ignore[misc]


def squeeze(modes: list[str]) -> list[str]:
    out: list[str] = []
    for m in modes:
        if not out or out[-1] != m:
            out.append(m)
    return out


def fast(**kw: Any) -> dict[str, Any]:
    settings: dict[str, Any] = dict(backoff_base_s=0.02, backoff_max_s=0.1, rng=random.Random(7), rest=[])
    settings.update(kw)
    return settings


def test_stream_reconnects_and_resumes_without_loss_or_duplicates() -> None:
    name = "COINBASE.ws.28.0.txt"
    messages = [text for _, text in received(name)]
    subscribe = sent(name)
    expected = unique(parse_file(name)[0])
    third = len(messages) // 3
    # The segments on each side of the drops all carry trades: the test sees both sides.
    for part in (messages[:third], messages[third : 2 * third], messages[2 * third :]):
        assert sum(len(parse_coinbase(m).ticks) for m in part) > 10

    async def main() -> None:
        server = ReplayServer(
            messages, subscribe_count=len(subscribe), drops={third: "abort", 2 * third: "close"}
        )
        async with serve(server.handler, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            endpoint = StreamEndpoint("coinbase", f"ws://127.0.0.1:{port}", subscribe, symbols=None)
            stream = PriceStream([endpoint], **fast(stale_after_s=5.0))

            async def body(ticks: list[PriceTick], modes: list[str]) -> None:
                await wait_until("every recorded trade", lambda: len(ticks) >= len(expected))
                await asyncio.sleep(0.1)  # nothing more may come
                assert ticks == expected  # in order, none lost, none twice
                h = stream.health()
                assert (h.reconnects, server.connections, server.repeats) == (2, 3, 2)
                assert h.messages == len(messages) + server.repeats
                assert (
                    h.duplicates == len(expected) + server.repeats
                )  # ticker+match pairs, last_match repeats
                assert (h.errors, h.ticks, h.mode, h.connected) == (0, len(expected), "stream", "coinbase")
                assert h.last_error and "coinbase" in h.last_error
                assert server.subscribes == list(subscribe) * 3  # it subscribed again each time

            await with_stream(stream, body)

    asyncio.run(main())


class TickerHandler(BaseHTTPRequestHandler):
    """Coinbase's ``GET /products/BTC-USD/ticker``: a new trade on every request."""

    requests = 0

    def do_GET(self) -> None:
        cls = type(self)
        cls.requests += 1
        n = cls.requests
        body = json.dumps(
            {
                "trade_id": 900_000 + n,
                "price": "61000.5",
                "size": "0.01",
                "time": f"2021-04-17T16:50:{n % 60:02d}.000001Z",
                "bid": "61000",
                "ask": "61001",
                "volume": "12345.6",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


def test_stale_stream_hands_over_to_rest_and_back() -> None:
    name = "COINBASE.ws.28.0.txt"
    messages = [text for _, text in received(name)][:1500]
    subscribe = sent(name)
    pause = 700
    before = unique([t for m in messages[:pause] for t in parse_coinbase(m).ticks])
    after = unique([t for m in messages[pause:] for t in parse_coinbase(m).ticks])
    assert before and after

    http = ThreadingHTTPServer(("127.0.0.1", 0), TickerHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    rest_url = f"http://127.0.0.1:{http.server_address[1]}/products/BTC-USD/ticker"

    async def main() -> None:
        server = ReplayServer(
            messages,
            subscribe_count=len(subscribe),
            pause_at=pause,
            heartbeat='{"type":"heartbeat"}',
            repeat_last_match=False,  # a silent exchange says nothing at all
        )
        async with serve(server.handler, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            endpoint = StreamEndpoint("coinbase", f"ws://127.0.0.1:{port}", subscribe, symbols=None)
            stream = PriceStream(
                [endpoint],
                **fast(stale_after_s=1.0, rest=[RestEndpoint("coinbase", rest_url)], rest_interval_s=0.1),
            )

            async def body(ticks: list[PriceTick], modes: list[str]) -> None:
                loop = asyncio.get_running_loop()
                await wait_until("the ticks before the silence", lambda: len(ticks) >= len(before))
                silent_from = loop.time()
                await wait_until("REST to take over", lambda: stream.health().rest_ticks >= 3)
                assert loop.time() - silent_from >= 0.9  # not before stale_after_s
                h = stream.health()
                assert h.mode == "rest" and h.stale >= 1 and h.reconnects >= 1
                server.resume.set()  # the exchange speaks again, on the current connection
                await wait_until(
                    "the stream again", lambda: len(ticks) >= len(before) + h.rest_ticks + len(after)
                )
                await wait_until("mode stream", lambda: stream.health().mode == "stream")
                polls = stream.health().rest_polls
                await asyncio.sleep(0.5)  # heartbeats keep the stream fresh: REST stays off
                h = stream.health()
                assert (h.mode, h.rest_polls) == ("stream", polls)

                rest = [t for t in ticks if t.symbol == "BTC-USD"]
                assert len(rest) == h.rest_ticks >= 3
                assert all((t.source, t.close, t.volume) == ("coinbase", 61000.5, 0.01) for t in rest)
                # stream ticks, then REST ticks while it was stale, then the stream resumed
                assert ticks == before + rest + after
                assert squeeze([m for m in modes if m != "down"]) == ["stream", "rest", "stream"]

            await with_stream(stream, body)

    try:
        asyncio.run(main())
    finally:
        http.shutdown()
        http.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fallback_order_and_return_to_primary() -> None:
    kraken_name, coinbase_name = "KRAKEN.ws.48.0.txt", "COINBASE.ws.28.0.txt"
    kraken_msgs = [text for _, text in received(kraken_name)]
    coinbase_msgs = [text for _, text in received(coinbase_name)][:600]
    kraken_expected = parse_file(kraken_name)[0]
    coinbase_expected = unique([t for m in coinbase_msgs for t in parse_coinbase(m).ticks])
    primary_port = free_port()

    async def main() -> None:
        kraken = ReplayServer(
            kraken_msgs, subscribe_count=len(sent(kraken_name)), heartbeat='{"event":"heartbeat"}'
        )
        coinbase = ReplayServer(coinbase_msgs, subscribe_count=len(sent(coinbase_name)))
        async with serve(kraken.handler, "127.0.0.1", 0) as kraken_server:
            endpoints = [
                StreamEndpoint(
                    "coinbase", f"ws://127.0.0.1:{primary_port}", sent(coinbase_name), symbols=None
                ),
                StreamEndpoint(
                    "kraken",
                    f"ws://127.0.0.1:{kraken_server.sockets[0].getsockname()[1]}",
                    sent(kraken_name),
                    symbols=None,
                ),
            ]
            stream = PriceStream(endpoints, **fast(stale_after_s=2.0, return_to_primary_s=0.3))

            async def body(ticks: list[PriceTick], modes: list[str]) -> None:
                # The primary refuses connections: two tries, then the fallback.
                await wait_until("the fallback's trades", lambda: len(ticks) >= len(kraken_expected))
                await wait_until("the fallback connected", lambda: stream.health().connected == "kraken")
                h = stream.health()
                assert h.reconnects >= 2 and h.last_error and "coinbase" in h.last_error
                assert ticks == kraken_expected
                # The primary comes up; the fallback session rotates back to it.
                async with serve(coinbase.handler, "127.0.0.1", primary_port):
                    await wait_until("the primary's trades", lambda: len(ticks) >= len(kraken_expected) + 10)
                    assert stream.health().connected == "coinbase"
                    await wait_until(
                        "all of them", lambda: len(ticks) >= len(kraken_expected) + len(coinbase_expected)
                    )
                assert ticks == kraken_expected + coinbase_expected

            await with_stream(stream, body)

    asyncio.run(main())
