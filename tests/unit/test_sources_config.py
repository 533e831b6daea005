"""cluster.sources: the sources file as a contract. A good file, the defaults and the example,
each class of bad input (with the message it gives), and the refusal of private addresses
(literal addresses are judged without any network traffic; names through a stub resolver)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.sources import (
    DEFAULT_SOURCES,
    EXAMPLE_TOML,
    KINDS,
    PrivateAddressError,
    SourceConfig,
    enabled,
    is_public_address,
    load_sources,
    parse_sources,
    resolve_checked,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[[source]]
name = "CoinDesk"
url = "https://www.coindesk.com/arc/outboundfeeds/rss/"

[[source]]
name = "reddit/r/Bitcoin"
url = "https://www.reddit.com/r/Bitcoin/.rss"
kind = "reddit"
interval_s = 600
enabled = false
bitcoin_only = true

[[source]]
name = "local test feed"
url = "http://127.0.0.1:8081/feed.xml"
interval_s = 30
allow_private = true
""",
    )
    sources = load_sources(path)
    assert sources == [
        SourceConfig("CoinDesk", "https://www.coindesk.com/arc/outboundfeeds/rss/"),
        SourceConfig(
            "reddit/r/Bitcoin",
            "https://www.reddit.com/r/Bitcoin/.rss",
            kind="reddit",
            interval_s=600,
            enabled=False,
            bitcoin_only=True,
        ),
        SourceConfig("local test feed", "http://127.0.0.1:8081/feed.xml", interval_s=30, allow_private=True),
    ]
    assert sources[0].interval_s == 300 and sources[0].kind == "rss" and sources[0].enabled
    assert not sources[0].bitcoin_only and not sources[0].allow_private
    assert [s.name for s in enabled(sources)] == ["CoinDesk", "local test feed"]


def test_defaults_and_example_agree() -> None:
    assert parse_sources(EXAMPLE_TOML, "EXAMPLE_TOML") == list(DEFAULT_SOURCES)
    assert [(s.name, s.url, s.interval_s) for s in DEFAULT_SOURCES] == [
        ("CoinDesk", "https://www.coindesk.com/arc/outboundfeeds/rss/", 300),
        ("CoinTelegraph", "https://cointelegraph.com/rss", 300),
        ("Bitcoin Magazine", "https://bitcoinmagazine.com/.rss/full/", 300),
        ("Decrypt", "https://decrypt.co/feed", 300),
        ("The Block", "https://www.theblock.co/rss.xml", 300),
        ("Bitcoinist", "https://bitcoinist.com/feed/", 300),
        ("NewsBTC", "https://www.newsbtc.com/feed/", 300),
        ("CryptoSlate", "https://cryptoslate.com/feed/", 300),
        ("CryptoPotato", "https://cryptopotato.com/feed/", 300),
        ("reddit/r/Bitcoin", "https://www.reddit.com/r/Bitcoin/new.json?limit=100", 60),
        ("CryptoPanic", "https://cryptopanic.com/api/developer/v2/posts/?currencies=BTC&public=true", 300),
        (
            "GDELT",
            "https://api.gdeltproject.org/api/v2/doc/doc?query=bitcoin&mode=artlist&format=json"
            "&maxrecords=75&sort=datedesc",
            300,
        ),
        (
            "X",
            "https://api.x.com/2/tweets/search/recent?query=bitcoin%20-is%3Aretweet%20lang%3Aen"
            "&max_results=100&tweet.fields=created_at",
            900,
        ),
    ]
    assert [s.kind for s in DEFAULT_SOURCES[9:]] == ["reddit", "cryptopanic", "gdelt", "x"]
    assert all(s.kind == "rss" for s in DEFAULT_SOURCES[:9])
    assert all(s.enabled and not s.allow_private for s in DEFAULT_SOURCES)
    assert sorted(KINDS) == ["cryptopanic", "gdelt", "reddit", "rss", "x"]


_ONE = '[[source]]\nname = "CoinDesk"\nurl = "https://www.coindesk.com/arc/outboundfeeds/rss/"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _ONE + "intervl_s = 60\n",
            "sources.toml: source #1 ('CoinDesk'): unknown key 'intervl_s' (known: name, url, kind, "
            "interval_s, enabled, bitcoin_only, allow_private)",
        ),
        (
            _ONE + '[[source]]\nname = "coindesk"\nurl = "https://example.com/feed"\n',
            "sources.toml: source #2 ('coindesk'): name: duplicate of source #1",
        ),
        (
            '[[source]]\nname = "A"\nurl = "ftp://example.com/feed"\n',
            "sources.toml: source #1 ('A'): url: 'ftp://example.com/feed' is not an http(s) URL",
        ),
        (
            '[[source]]\nname = "A"\nurl = "example.com/feed"\n',
            "sources.toml: source #1 ('A'): url: 'example.com/feed' is not an http(s) URL",
        ),
        (
            '[[source]]\nname = "A"\nurl = "https://exa mple.com/"\n',
            "sources.toml: source #1 ('A'): url: 'https://exa mple.com/' is not a URL",
        ),
        (
            '[[source]]\nname = "A"\nurl = "https:///feed"\n',
            "sources.toml: source #1 ('A'): url: 'https:///feed' has no host",
        ),
        (
            '[[source]]\nname = "A"\nurl = "https://user:secret@example.com/feed"\n',
            "sources.toml: source #1 ('A'): url: 'example.com': credentials in the URL are not allowed",
        ),
        (
            '[[source]]\nname = "A"\nurl = "https://example.com:99999/feed"\n',
            "sources.toml: source #1 ('A'): url: 'https://example.com:99999/feed' has a bad port",
        ),
        (
            _ONE + "interval_s = 10\n",
            "sources.toml: source #1 ('CoinDesk'): interval_s: 10 is below the minimum of 30 s",
        ),
        (
            _ONE + "interval_s = 300000\n",
            "sources.toml: source #1 ('CoinDesk'): interval_s: 300000 is above the maximum of 86400 s",
        ),
        (
            _ONE + "interval_s = 90.5\n",
            "sources.toml: source #1 ('CoinDesk'): interval_s: expected a whole number of seconds, got 90.5",
        ),
        (
            _ONE + 'interval_s = "300"\n',
            "sources.toml: source #1 ('CoinDesk'): interval_s: expected a whole number of seconds, got '300'",
        ),
        (
            _ONE + 'kind = "atom"\n',
            "sources.toml: source #1 ('CoinDesk'): kind: 'atom' is not one of "
            "cryptopanic, gdelt, reddit, rss, x",
        ),
        (
            _ONE + 'enabled = "yes"\n',
            "sources.toml: source #1 ('CoinDesk'): enabled: expected true or false, got 'yes'",
        ),
        (
            '[[source]]\nname = "CoinDesk"\n',
            "sources.toml: source #1 ('CoinDesk'): url: required",
        ),
        (
            '[[source]]\nurl = "https://example.com/feed"\n',
            "sources.toml: source #1: name: required",
        ),
        (
            '[[source]]\nname = 42\nurl = "https://example.com/feed"\n',
            "sources.toml: source #1: name: expected a string, got int",
        ),
        (
            '[[source]]\nname = "<b>x</b>"\nurl = "https://example.com/feed"\n',
            "sources.toml: source #1 ('<b>x</b>'): name: '<b>x</b>' must be 1-64 characters of letters, "
            "digits, space and ._/+-",
        ),
        (
            'sources = []\n[[source]]\nname = "A"\nurl = "https://a.com/"\n',
            "sources.toml: unknown top-level key",
        ),
        ("# nothing here\n", "sources.toml: no [[source]] entries"),
        ('source = "https://example.com/feed"\n', "sources.toml: 'source' must be an array of tables"),
        ('[[source]\nname = "A"\n', "sources.toml: not valid TOML: "),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        load_sources(_write(tmp_path, text))
    assert str(err.value).startswith(message), str(err.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_bytes(b'[[source]]\nname = "Caf\xe9"\n')
    with pytest.raises(ValueError, match=r"sources.toml: not UTF-8 text \(invalid continuation byte"):
        load_sources(path)
    with pytest.raises(FileNotFoundError):
        load_sources(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/feed.xml",
        "http://10.0.0.1/",
        "http://192.168.1.20/rss",
        "http://172.16.0.1/rss",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private
        "http://localhost/",
        "http://feeds.localhost:8080/",
        "http://224.0.0.1/",
    ],
)
def test_private_literals_refused_unless_allowed(url: str) -> None:
    with pytest.raises(PrivateAddressError, match=r"url: host .* \(set allow_private = true to allow it\)"):
        SourceConfig("Inside", url)
    text = f'[[source]]\nname = "Inside"\nurl = "{url}"\n'
    with pytest.raises(PrivateAddressError, match=r"^sources.toml: source #1 \('Inside'\): url: host "):
        parse_sources(text, "sources.toml")
    assert SourceConfig("Inside", url, allow_private=True).allow_private
    assert parse_sources(text + "allow_private = true\n")[0].url == url


def _never(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
    raise AssertionError("no DNS lookup expected")


def _answers(*addresses: str) -> Callable[..., list[tuple[object, ...]]]:
    """A resolver stub answering ``addresses`` for any name."""

    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return resolve


def test_resolve_checked() -> None:
    # Literal addresses: judged without a lookup.
    with pytest.raises(PrivateAddressError, match=r"host '10\.0\.0\.1' is a non-public address"):
        resolve_checked("http://10.0.0.1/", allow_private=False, resolver=_never)
    assert resolve_checked("http://93.184.216.34/", allow_private=False, resolver=_never) == ["93.184.216.34"]
    assert resolve_checked("http://127.0.0.1/", allow_private=True, resolver=_never) == []
    # Names: every answer must be public.
    assert resolve_checked(
        "https://feeds.example.com/", allow_private=False, resolver=_answers("93.184.216.34")
    ) == ["93.184.216.34"]
    with pytest.raises(PrivateAddressError, match=r"resolves to non-public address 10\.9\.8\.7"):
        resolve_checked(
            "https://feeds.example.com/", allow_private=False, resolver=_answers("93.184.216.34", "10.9.8.7")
        )
    with pytest.raises(PrivateAddressError, match="resolves to non-public address ::1"):
        resolve_checked("https://feeds.example.com/", allow_private=False, resolver=_answers("::1"))
    with pytest.raises(PrivateAddressError, match="is loopback"):
        resolve_checked("http://localhost:8080/", allow_private=False, resolver=_never)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.1", False),
        ("127.0.0.1", False),
        ("169.254.1.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("239.1.1.1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public
