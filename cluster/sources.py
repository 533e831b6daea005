"""The news sources btcpulse collects from: a user-editable TOML file, as a contract.

Stages
------
1. **Read** the file (:func:`load_sources`): ``tomllib``; a syntax error is a ``ValueError``
   that names the file.
2. **Validate** every ``[[source]]`` table (:class:`SourceConfig`): known keys only, the type
   of each value, a unique name, an absolute http(s) URL without credentials, a known ``kind``,
   ``interval_s`` within ``[MIN_INTERVAL_S, MAX_INTERVAL_S]``. Every error is a ``ValueError``
   whose message names the file, the entry (position and name) and the field.
3. **Refuse private targets**: a URL whose host is a literal private, loopback, link-local or
   otherwise non-public address (``http://10.0.0.1/``, ``http://127.0.0.1/``,
   ``http://localhost/``) is refused at load time without any network traffic; a host *name* is
   resolved when it is polled (:func:`resolve_checked`), and refused when any of its addresses is
   not public. ``allow_private = true`` lifts both checks (a feed on the local network, tests).

The file format (every key but ``name`` and ``url`` optional)::

    [[source]]
    name = "CoinDesk"          # unique (case-insensitive); becomes NewsItem.source
    url = "https://www.coindesk.com/arc/outboundfeeds/rss/"
    kind = "rss"               # rss (RSS 2.0, RSS 1.0/RDF and Atom), reddit, cryptopanic, gdelt, x
    interval_s = 300           # poll interval in seconds, >= 30 (default: the kind's, below)
    enabled = true
    bitcoin_only = false       # keep only items that mention Bitcoin (see actors.feeds)
    allow_private = false      # allow hosts on private/loopback/link-local addresses
    token_env = "CRYPTOPANIC_TOKEN"  # cryptopanic and x only: the environment variable
                                     # holding the API token (never the token itself)

Kinds (all collected by ``actors.feeds.FeedPoller``), their default interval and token:

============  ==========  ===================  ================================================
kind          interval_s  token_env            what
============  ==========  ===================  ================================================
rss           300         (none)               an RSS 2.0 / RSS 1.0 (RDF) / Atom feed
reddit        60          (none)               a subreddit listing (``.../new.json``), or its
                                               ``.rss`` feed when the URL ends with ``.rss``
cryptopanic   300         CRYPTOPANIC_TOKEN    CryptoPanic developer API v2 ``posts``
gdelt         300         (none)               GDELT DOC 2.0 API, ``mode=artlist&format=json``
x             900         X_BEARER_TOKEN       X API v2 recent search (bearer token)
============  ==========  ===================  ================================================

A token is read from the environment when the collector starts and is never written to a
file, a log or the health output; a source whose variable is unset is shown as disabled
("disabled: set CRYPTOPANIC_TOKEN") and never polled. A token in the URL itself (``auth_token=``
and the like) is refused for these kinds.

:data:`EXAMPLE_TOML` is a complete file listing :data:`DEFAULT_SOURCES`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

KINDS = frozenset({"rss", "reddit", "cryptopanic", "gdelt", "x"})
DEFAULT_INTERVAL_S = 300
# Per kind, the interval used when a source does not set one:
#   reddit 60 s       Reddit asks unauthenticated clients for about one request a minute.
#   cryptopanic 300 s the free developer plan allows a small daily/monthly request budget.
#   gdelt 300 s       GDELT's index updates every 15 minutes; it asks for <= 1 request per 5 s.
#   x 900 s           the recent-search rate window is 15 minutes, and the free/basic tiers
#                     count every returned post against a small monthly read cap.
KIND_INTERVAL_S: Mapping[str, int] = {
    "rss": DEFAULT_INTERVAL_S,
    "reddit": 60,
    "cryptopanic": 300,
    "gdelt": 300,
    "x": 900,
}
# Per kind, the environment variable holding its API token; kinds not listed take none.
KIND_TOKEN_ENV: Mapping[str, str] = {"cryptopanic": "CRYPTOPANIC_TOKEN", "x": "X_BEARER_TOKEN"}
# Below 30 s a poller costs the publisher real load and gains nothing: feeds are rebuilt
# every few minutes at best (CoinDesk's own <ttl> is 5 minutes).
MIN_INTERVAL_S = 30
# A day; anything longer is almost certainly a typo (3000 written as 300000).
MAX_INTERVAL_S = 86_400
MAX_URL_CHARS = 2048

# A name is shown on the dashboard and stored on every item (NewsItem.source, at most 64
# characters); keep it printable and free of quotes/markup. "/" is allowed for names such as
# "reddit/r/Bitcoin", which the replay data already uses.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/+-]{0,63}$")
_KEYS = ("name", "url", "kind", "interval_s", "enabled", "bitcoin_only", "allow_private")
# Keys only some kinds take (listed apart in the "unknown key" message).
_TOKEN_KEYS = ("token_env",)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Query parameters that carry a credential: refused in the URL of a kind that takes a token
# (the URL is shown in health output and logs; the token belongs in the environment).
_SECRET_PARAMS = frozenset({"auth_token", "access_token", "api_key", "apikey", "token", "bearer_token"})

Resolver = Callable[..., list[tuple[Any, ...]]]


class PrivateAddressError(ValueError):
    """A source URL points at a private, loopback, link-local or otherwise non-public address."""


def is_public_address(address: str) -> bool:
    """Whether ``address`` (an IPv4/IPv6 literal) is globally routable.

    ``is_global`` excludes private, loopback, link-local, shared (100.64/10), reserved and
    unspecified ranges; multicast is excluded explicitly. An IPv4-mapped IPv6 address is judged
    by its IPv4 part (``::ffff:10.0.0.1`` is private).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def check_literal_host(host: str) -> None:
    """Refuse, without any network traffic, a host that is a non-public address literal or a
    ``localhost`` name (RFC 6761 reserves ``localhost`` and ``*.localhost`` for loopback).

    Raises :class:`PrivateAddressError`; a host name that is not ``localhost`` passes (it is
    resolved when polled, see :func:`resolve_checked`).
    """
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise PrivateAddressError(f"host {host!r} is loopback")
    literal = _literal_address(name)
    if literal is not None and not is_public_address(literal):
        raise PrivateAddressError(f"host {host!r} is a non-public address")


def resolve_checked(url: str, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> list[str]:
    """Resolve the host of ``url`` and return its addresses, refusing non-public ones.

    Raises :class:`PrivateAddressError` when ``allow_private`` is false and any address of the
    host is not public (one private answer is enough: an attacker-controlled name can list a
    public and a private address and let the client pick). DNS failures propagate as
    ``socket.gaierror`` (an ``OSError``). A literal address is checked without a lookup.

    Known limit: the HTTP client resolves the name again when it connects, so a name whose
    answers change between the two look-ups (DNS rebinding) is not caught here.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"no host in {url[:200]!r}")
    if allow_private:
        return []
    check_literal_host(host)
    literal = _literal_address(host)
    if literal is not None:
        return [literal]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = resolver(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in infos})
    bad = [a for a in addresses if not is_public_address(a)]
    if bad:
        raise PrivateAddressError(f"host {host!r} resolves to non-public address {bad[0]}")
    return addresses


def _check_url(url: str, allow_private: bool) -> None:
    if not url or len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"url: {url[:200]!r} is not a URL (empty, too long, or contains spaces)")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"url: {url[:200]!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"url: {url[:200]!r} has no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and health output.
        raise ValueError(f"url: {parts.hostname!r}: credentials in the URL are not allowed")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"url: {url[:200]!r} has a bad port") from exc
    if not allow_private:
        try:
            check_literal_host(parts.hostname)
        except PrivateAddressError as exc:
            raise PrivateAddressError(f"url: {exc} (set allow_private = true to allow it)") from exc


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One source to collect from. Validated on construction (``ValueError`` naming the field).

    ``name`` is unique among the sources (case-insensitive) and becomes ``NewsItem.source``;
    ``interval_s`` is the normal time between two polls (errors back off from it; left out,
    the kind's default from :data:`KIND_INTERVAL_S`); ``bitcoin_only`` keeps only items that
    mention Bitcoin; ``allow_private`` allows a URL on a private/loopback/link-local address
    (off by default: a sources file must not turn the collector into a probe of the local
    network); ``token_env`` names the environment variable holding the API token, for the
    kinds that take one (default from :data:`KIND_TOKEN_ENV`; ``None`` for the others).
    """

    name: str
    url: str
    kind: str = "rss"
    interval_s: int | None = None  # None: KIND_INTERVAL_S[kind]; always set after construction
    enabled: bool = True
    bitcoin_only: bool = False
    allow_private: bool = False
    token_env: str | None = None

    def __post_init__(self) -> None:
        for key, kind in (("name", str), ("url", str), ("kind", str)):
            if not isinstance(getattr(self, key), kind):
                raise ValueError(f"{key}: expected a string, got {type(getattr(self, key)).__name__}")
        for key in ("enabled", "bitcoin_only", "allow_private"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if not _NAME.match(self.name):
            raise ValueError(
                f"name: {self.name[:80]!r} must be 1-64 characters of letters, digits, space and ._/+-"
            )
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind[:40]!r} is not one of {', '.join(sorted(KINDS))}")
        if self.interval_s is None:
            object.__setattr__(self, "interval_s", KIND_INTERVAL_S[self.kind])
        if isinstance(self.interval_s, bool) or not isinstance(self.interval_s, int):
            raise ValueError(f"interval_s: expected a whole number of seconds, got {self.interval_s!r}")
        if self.interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval_s: {self.interval_s} is below the minimum of {MIN_INTERVAL_S} s")
        if self.interval_s > MAX_INTERVAL_S:
            raise ValueError(f"interval_s: {self.interval_s} is above the maximum of {MAX_INTERVAL_S} s")
        self._check_token_env()
        _check_url(self.url, self.allow_private)
        if self.token_env is not None:
            secret = sorted({k.lower() for k, _ in parse_qsl(urlsplit(self.url).query)} & _SECRET_PARAMS)
            if secret:
                raise ValueError(
                    f"url: {secret[0]!r} in the URL is not allowed; put the token in the environment "
                    f"variable {self.token_env} (token_env)"
                )

    def _check_token_env(self) -> None:
        default = KIND_TOKEN_ENV.get(self.kind)
        if self.token_env is None:
            object.__setattr__(self, "token_env", default)
            return
        if not isinstance(self.token_env, str):
            raise ValueError(f"token_env: expected a string, got {type(self.token_env).__name__}")
        if default is None:
            raise ValueError(
                f"token_env: kind {self.kind!r} takes no token (only {', '.join(sorted(KIND_TOKEN_ENV))})"
            )
        if not _ENV_NAME.match(self.token_env):
            raise ValueError(
                f"token_env: {self.token_env[:80]!r} is not an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )

    @property
    def interval(self) -> int:
        """``interval_s`` as an ``int`` (it is always set once constructed)."""
        return self.interval_s if self.interval_s is not None else KIND_INTERVAL_S[self.kind]


# The addresses each site publishes for its feed. They were not fetched from here (this machine
# has no internet); they are the ones the sites link from their pages and documentation.
# Every RSS default polls every 300 s: these feeds change every few minutes at most (CoinDesk's feed
# declares <ttl>5</ttl>), news that is 5 minutes late is still live for a dashboard, and with a
# conditional GET an unchanged feed costs the publisher one 304 with no body.
# bitcoin_only stays off: general crypto-market news moves the BTC price too, and the recorded
# 2021-2022 data the dashboard opens on covers all coins as well.
DEFAULT_SOURCES: tuple[SourceConfig, ...] = (
    SourceConfig("CoinDesk", "https://www.coindesk.com/arc/outboundfeeds/rss/"),
    # Spelled as in the recorded 2021-2022 data, so a source filter spans both.
    SourceConfig("CoinTelegraph", "https://cointelegraph.com/rss"),
    SourceConfig("Bitcoin Magazine", "https://bitcoinmagazine.com/.rss/full/"),
    SourceConfig("Decrypt", "https://decrypt.co/feed"),
    SourceConfig("The Block", "https://www.theblock.co/rss.xml"),
    SourceConfig("Bitcoinist", "https://bitcoinist.com/feed/"),
    SourceConfig("NewsBTC", "https://www.newsbtc.com/feed/"),
    SourceConfig("CryptoSlate", "https://cryptoslate.com/feed/"),
    SourceConfig("CryptoPotato", "https://cryptopotato.com/feed/"),
    # Social and aggregator sources. Their addresses follow each provider's API documentation
    # (Reddit's listing JSON, CryptoPanic developer API v2, GDELT DOC 2.0, X API v2 recent
    # search); like the feeds above they were not fetched from here. Intervals: see
    # KIND_INTERVAL_S. CryptoPanic and X need a token in the environment (CRYPTOPANIC_TOKEN,
    # X_BEARER_TOKEN); without it they are listed as disabled and never polled.
    # Named as in the recorded 2021-2022 Reddit data, so a source filter spans both.
    SourceConfig("reddit/r/Bitcoin", "https://www.reddit.com/r/Bitcoin/new.json?limit=100", kind="reddit"),
    SourceConfig(
        "CryptoPanic",
        "https://cryptopanic.com/api/developer/v2/posts/?currencies=BTC&public=true",
        kind="cryptopanic",
    ),
    SourceConfig(
        "GDELT",
        "https://api.gdeltproject.org/api/v2/doc/doc?query=bitcoin&mode=artlist&format=json"
        "&maxrecords=75&sort=datedesc",
        kind="gdelt",
    ),
    SourceConfig(
        "X",
        "https://api.x.com/2/tweets/search/recent?query=bitcoin%20-is%3Aretweet%20lang%3Aen"
        "&max_results=100&tweet.fields=created_at",
        kind="x",
    ),
)

EXAMPLE_TOML = """\
# btcpulse news sources. Each [[source]] is one feed; only name and url are required.
#   kind          rss (RSS 2.0, RSS 1.0/RDF, Atom) | reddit | cryptopanic | gdelt | x
#   interval_s    seconds between polls, at least 30 (default per kind: rss 300, reddit 60,
#                 cryptopanic 300, gdelt 300, x 900)
#   enabled       false keeps the entry but does not poll it (default true)
#   bitcoin_only  keep only items that mention Bitcoin (default false)
#   allow_private allow a host on a private/loopback address (default false)
#   token_env     cryptopanic and x only: the environment variable holding the API token
#                 (default CRYPTOPANIC_TOKEN / X_BEARER_TOKEN). Never put a token in this file;
#                 a source whose variable is unset is shown as disabled and not polled.

[[source]]
name = "CoinDesk"
url = "https://www.coindesk.com/arc/outboundfeeds/rss/"
interval_s = 300

[[source]]
name = "CoinTelegraph"
url = "https://cointelegraph.com/rss"
interval_s = 300

[[source]]
name = "Bitcoin Magazine"
url = "https://bitcoinmagazine.com/.rss/full/"
interval_s = 300

[[source]]
name = "Decrypt"
url = "https://decrypt.co/feed"
interval_s = 300

[[source]]
name = "The Block"
url = "https://www.theblock.co/rss.xml"
interval_s = 300

[[source]]
name = "Bitcoinist"
url = "https://bitcoinist.com/feed/"
interval_s = 300

[[source]]
name = "NewsBTC"
url = "https://www.newsbtc.com/feed/"
interval_s = 300

[[source]]
name = "CryptoSlate"
url = "https://cryptoslate.com/feed/"
interval_s = 300

[[source]]
name = "CryptoPotato"
url = "https://cryptopotato.com/feed/"
interval_s = 300

# Social and aggregator sources: addresses as documented by each provider (not fetched here).
# Reddit asks for about one request a minute; new.json lists the newest 100 posts.
# (Its RSS feed also works: url = "https://www.reddit.com/r/Bitcoin/new/.rss".)
[[source]]
name = "reddit/r/Bitcoin"
url = "https://www.reddit.com/r/Bitcoin/new.json?limit=100"
kind = "reddit"
interval_s = 60

# CryptoPanic developer API v2; the token is added to the request from the environment.
[[source]]
name = "CryptoPanic"
url = "https://cryptopanic.com/api/developer/v2/posts/?currencies=BTC&public=true"
kind = "cryptopanic"
interval_s = 300
token_env = "CRYPTOPANIC_TOKEN"

# GDELT DOC 2.0 API: the newest 75 articles that mention bitcoin.
[[source]]
name = "GDELT"
url = "https://api.gdeltproject.org/api/v2/doc/doc?query=bitcoin&mode=artlist&format=json&maxrecords=75&sort=datedesc"
kind = "gdelt"
interval_s = 300

# X API v2 recent search, sent with "Authorization: Bearer $X_BEARER_TOKEN". Every returned
# post counts against the tier's monthly read cap: 100 posts every 15 minutes is up to 9,600 a
# day, so lower max_results or raise interval_s to fit the plan.
[[source]]
name = "X"
url = "https://api.x.com/2/tweets/search/recent?query=bitcoin%20-is%3Aretweet%20lang%3Aen&max_results=100&tweet.fields=created_at"
kind = "x"
interval_s = 900
token_env = "X_BEARER_TOKEN"

# A feed on this machine (tests, a local aggregator) needs allow_private:
# [[source]]
# name = "local"
# url = "http://127.0.0.1:8081/feed.xml"
# allow_private = true
# enabled = false
"""


def _entry_label(position: int, entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    return f"source #{position}" + (f" ({name[:64]!r})" if isinstance(name, str) else "")


def sources_from_mapping(data: Mapping[str, Any], origin: str = "<sources>") -> list[SourceConfig]:
    """Validate a decoded sources document (``{"source": [ {...}, ... ]}``).

    Raises ``ValueError`` naming ``origin``, the entry (1-based position and name) and the
    field: an unknown top-level or entry key, a missing ``name``/``url``, a value of the wrong
    type, a duplicate name, a bad or private URL, an unknown kind, an interval out of range.
    """
    # [prices] (the price stream's endpoints) is read by cluster.price_sources.
    unknown_top = sorted(set(data) - {"source", "prices"})
    if unknown_top:
        raise ValueError(
            f"{origin}: unknown top-level key {unknown_top[0]!r} (expected [[source]] tables and [prices])"
        )
    entries = data.get("source")
    if entries is None:
        raise ValueError(f"{origin}: no [[source]] entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{origin}: 'source' must be an array of tables ([[source]])")
    configs: list[SourceConfig] = []
    seen: dict[str, int] = {}
    for position, entry in enumerate(entries, start=1):
        label = f"{origin}: {_entry_label(position, entry)}"
        unknown = sorted(set(entry) - set(_KEYS) - set(_TOKEN_KEYS))
        if unknown:
            raise ValueError(
                f"{label}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)}); "
                f"for kinds {' and '.join(sorted(KIND_TOKEN_ENV))} also {', '.join(_TOKEN_KEYS)}"
            )
        missing = [k for k in ("name", "url") if k not in entry]
        if missing:
            raise ValueError(f"{label}: {missing[0]}: required")
        try:
            config = SourceConfig(**entry)
        except PrivateAddressError as exc:
            raise PrivateAddressError(f"{label}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{label}: {exc}") from None
        key = config.name.casefold()
        if key in seen:
            raise ValueError(f"{label}: name: duplicate of source #{seen[key]}")
        seen[key] = position
        configs.append(config)
    return configs


def parse_sources(text: str, origin: str = "<string>") -> list[SourceConfig]:
    """:func:`sources_from_mapping` of a TOML text; a TOML syntax error is a ``ValueError``
    naming ``origin``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from None
    return sources_from_mapping(data, origin)


def load_sources(path: str | Path) -> list[SourceConfig]:
    """The sources in the TOML file at ``path``, validated, in file order.

    Raises ``OSError`` when the file cannot be read, ``ValueError`` (see
    :func:`sources_from_mapping`) when it is not a valid sources file.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_sources(text, p.name)


def enabled(sources: Iterable[SourceConfig]) -> list[SourceConfig]:
    """The sources that are switched on."""
    return [s for s in sources if s.enabled]
