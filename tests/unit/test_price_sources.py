"""The [prices] table of the sources file, and its translation to stream/REST endpoints."""

from __future__ import annotations

import tomllib

import pytest

from actors.collectors import price_endpoints
from actors.prices import default_endpoints
from cluster.price_sources import PriceSources, RestSpec, StreamSpec, price_sources_from_mapping
from cluster.sources import parse_sources

FILE = """
[[source]]
name = "CoinDesk"
url = "https://www.coindesk.com/arc/outboundfeeds/rss/"

[prices]
stale_after_s = 5
[[prices.stream]]
exchange = "coinbase"
url = "wss://ws-feed.exchange.coinbase.com"
[[prices.stream]]
exchange = "gemini"
url = "wss://api.gemini.com/v2/marketdata/"
symbols = []
[[prices.rest]]
exchange = "kraken"
url = "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"
"""


def _prices(text: str) -> PriceSources:
    return price_sources_from_mapping(tomllib.loads(text), "sources.toml")


def test_a_sources_file_with_prices_parses_both_parts() -> None:
    assert [s.name for s in parse_sources(FILE, "sources.toml")] == ["CoinDesk"]
    prices = _prices(FILE)
    assert prices.enabled and prices.stale_after_s == 5.0
    assert prices.streams == (
        StreamSpec("coinbase", "wss://ws-feed.exchange.coinbase.com", None, ("BTC-USD",)),
        StreamSpec("gemini", "wss://api.gemini.com/v2/marketdata/", None, None),
    )
    assert prices.rest == (RestSpec("kraken", "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"),)


def test_no_prices_table_means_the_builtin_endpoints() -> None:
    prices = _prices('[[source]]\nname = "A"\nurl = "https://a.example.com/feed"\n')
    assert prices == PriceSources()
    assert price_endpoints(prices) == (None, None)


def test_endpoints_take_the_exchange_default_subscription_and_symbols() -> None:
    streams, rest = price_endpoints(_prices(FILE))
    assert streams is not None and rest is not None
    coinbase, gemini = streams
    assert coinbase.subscribe == next(e.subscribe for e in default_endpoints() if e.exchange == "coinbase")
    assert coinbase.symbols == frozenset({"BTC-USD"})
    assert gemini.symbols is None and '"BTCUSD"' in gemini.subscribe[0]
    assert [(r.exchange, r.symbol) for r in rest] == [("kraken", "BTC-USD")]


def test_an_empty_rest_list_means_no_rest_fallback() -> None:
    prices = _prices(
        '[prices]\nrest = []\n[[prices.stream]]\nexchange = "kraken"\nurl = "wss://ws.kraken.com"\n'
    )
    assert prices.rest == ()
    assert price_endpoints(prices)[1] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prices]\nspeed = 3\n", "unknown key(s) speed"),
        (
            '[prices]\n[[prices.stream]]\nexchange = "ftx"\nurl = "wss://x.example.com"\n',
            "exchange must be one of",
        ),
        (
            '[prices]\n[[prices.stream]]\nexchange = "kraken"\nurl = "https://ws.kraken.com"\n',
            "absolute ws/wss URL",
        ),
        (
            '[prices]\n[[prices.rest]]\nexchange = "gemini"\nurl = "https://api.gemini.com"\n',
            "coinbase, kraken",
        ),
        ('[prices]\n[[prices.stream]]\nexchange = "kraken"\nurl = "ws://127.0.0.1:9000"\n', "allow_private"),
        ('[prices]\n[[prices.stream]]\nexchange = "kraken"\nurl = "ws://localhost:9000"\n', "loopback"),
        ("[prices]\nstale_after_s = 0\n", "stale_after_s"),
        ("[prices]\nenabled = 1\n", "true or false"),
        (
            '[prices]\n[[prices.stream]]\nexchange = "kraken"\n'
            'url = "wss://ws.kraken.com"\nsymbols = "BTC"\n',
            "symbols",
        ),
    ],
)
def test_bad_prices_tables_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"sources\.toml: \[prices\]") as err:
        _prices(text)
    assert message in str(err.value)


def test_private_exchange_hosts_need_allow_private() -> None:
    text = '[prices]\nallow_private = true\n[[prices.stream]]\nexchange = "coinbase"\nurl = "ws://127.0.0.1:9000"\n'
    assert _prices(text).streams == (StreamSpec("coinbase", "ws://127.0.0.1:9000", None, ("BTC-USD",)),)
