"""cluster.ids: canonical URLs (what is kept, what is dropped, what is refused) and the
deterministic article/tick ids built on them."""

from __future__ import annotations

import uuid

import pytest

from cluster.ids import BadURLError, article_id, canonical_url, tick_id

# ---------------------------------------------------------------- canonical_url: normalisation


def test_tracking_params_dropped_meaningful_kept_and_sorted() -> None:
    url = (
        "https://example.com/news/btc?utm_source=twitter&z=9&fbclid=abc&id=42"
        "&UTM_Campaign=x&gclid=g&ref=home&mc_cid=1&a=1&igshid=i&_hsenc=h&page=2"
    )
    assert canonical_url(url) == "https://example.com/news/btc?a=1&id=42&page=2&z=9"


def test_only_tracking_params_leaves_no_query() -> None:
    assert canonical_url("https://example.com/a?utm_medium=x&ga_x=1&pk_campaign=y&mtm_kwd=z") == (
        "https://example.com/a"
    )


def test_param_that_only_contains_a_tracking_word_is_kept() -> None:
    # "reference" and "my_utm" are not tracking parameters: only exact names / prefixes are.
    assert canonical_url("https://example.com/a?reference=1&my_utm=2") == (
        "https://example.com/a?my_utm=2&reference=1"
    )


def test_blank_values_kept_and_query_reencoded() -> None:
    assert canonical_url("https://example.com/a?q=a%20b&empty") == "https://example.com/a?empty=&q=a+b"


def test_fragment_dropped() -> None:
    assert canonical_url("https://example.com/a/b#comments") == "https://example.com/a/b"
    assert canonical_url("https://example.com/a?x=1#top") == "https://example.com/a?x=1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
    ],
)
def test_default_port_dropped_other_ports_kept(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_scheme_and_host_lowercased_path_case_kept() -> None:
    assert canonical_url("HTTPS://News.Example.COM/Bitcoin/ETF") == "https://news.example.com/Bitcoin/ETF"


def test_trailing_slash_and_empty_path() -> None:
    assert canonical_url("https://example.com") == "https://example.com/"
    assert canonical_url("https://example.com/") == "https://example.com/"
    assert canonical_url("https://example.com/a/b/") == "https://example.com/a/b"


def test_trailing_dot_host_and_surrounding_space() -> None:
    assert canonical_url("  https://example.com./a \n") == "https://example.com/a"


def test_userinfo_is_not_kept() -> None:
    assert canonical_url("https://user:secret@example.com/a") == "https://example.com/a"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://site.comhttps://site.com/path", "https://site.com/path"),
        ("https://site.comhttp://site.com/path", "http://site.com/path"),
        ("https://https://site.com/path", "https://site.com/path"),
        ("HTTPS://SITE.COMhttps://site.com/path?utm_source=x", "https://site.com/path"),
    ],
)
def test_doubled_prefix_repaired(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_ip_address_host_accepted() -> None:
    assert canonical_url("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/x"


def test_equivalent_urls_share_one_form() -> None:
    variants = [
        "https://example.com/story?id=7",
        "https://EXAMPLE.com:443/story/?id=7&utm_source=rss",
        "https://example.com/story?fbclid=zzz&id=7#section",
    ]
    assert {canonical_url(v) for v in variants} == {"https://example.com/story?id=7"}


# ---------------------------------------------------------------- canonical_url: refusals


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "not a url",
        "ftp://example.com/file",
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "example.com/path",
        "//example.com/path",
        "/relative/path",
        "http://localhost",
        "http://localhost:8000/a",
        "https://intranet/page",
        "http://[::1]/a",
        "http:///path-only",
        "https://exa mple.com/a",
        "https://example.com/a b",
        "https://example.com:99999/a",
        "https://example.com:port/a",
        "https://ex_ample.com/a",
    ],
)
def test_rejected(url: str) -> None:
    with pytest.raises(BadURLError):
        canonical_url(url)


def test_bad_url_error_is_a_value_error() -> None:
    assert issubclass(BadURLError, ValueError)


def test_url_in_query_of_pathless_url_is_not_a_doubled_prefix() -> None:
    assert canonical_url("https://example.com?next=https://other.org/x") == (
        "https://example.com/?next=https%3A%2F%2Fother.org%2Fx"
    )


# ---------------------------------------------------------------- article_id


def test_article_id_is_uuid5_and_stable() -> None:
    aid = article_id(url="https://example.com/a")
    parsed = uuid.UUID(aid)
    assert parsed.version == 5
    assert aid == article_id(url="https://example.com/a")
    assert aid == article_id(canonical="https://example.com/a")


def test_article_id_same_for_tracking_variants_distinct_for_other_articles() -> None:
    a = article_id(url="https://example.com/a?utm_source=x#frag")
    assert a == article_id(url="HTTPS://EXAMPLE.COM:443/a/")
    assert a != article_id(url="https://example.com/b")
    assert a != article_id(url="https://example.com/a?id=2")


def test_article_id_canonical_takes_precedence() -> None:
    assert article_id(canonical="https://example.com/a", url="https://example.com/b") == article_id(
        url="https://example.com/a"
    )


def test_article_id_from_guid_when_no_url() -> None:
    g = article_id(guid="  tag:example.com,2022:123 ")
    assert g == article_id(guid="tag:example.com,2022:123")
    assert g == article_id(url="", guid="tag:example.com,2022:123")
    assert g != article_id(guid="tag:example.com,2022:124")
    # a GUID that looks like a URL is not confused with that URL's id (separate namespaces)
    assert article_id(guid="https://example.com/a") != article_id(url="https://example.com/a")


@pytest.mark.parametrize(
    "kwargs", [{}, {"guid": "   "}, {"url": None, "guid": None}, {"url": "", "guid": ""}]
)
def test_article_id_without_url_or_guid_raises(kwargs: dict[str, str | None]) -> None:
    with pytest.raises(BadURLError):
        article_id(**kwargs)  # type: ignore[arg-type]


def test_article_id_bad_url_raises_even_with_guid() -> None:
    # A URL that is given is validated; it is not silently replaced by the GUID.
    with pytest.raises(BadURLError):
        article_id(url="ftp://example.com/a", guid="g-1")


# ---------------------------------------------------------------- tick_id


def test_tick_id_deterministic_and_discriminating() -> None:
    base = tick_id("bitstamp", "BTCUSD", 1656995040.0)
    assert uuid.UUID(base).version == 5
    assert base == tick_id("bitstamp", "BTCUSD", 1656995040.0, "")
    others = {
        tick_id("coinbase", "BTCUSD", 1656995040.0),
        tick_id("bitstamp", "BTCEUR", 1656995040.0),
        tick_id("bitstamp", "BTCUSD", 1656995041.0),
        tick_id("bitstamp", "BTCUSD", 1656995040.000001),
        tick_id("bitstamp", "BTCUSD", 1656995040.0, "trade-1"),
    }
    assert base not in others
    assert len(others) == 5


def test_tick_id_ignores_below_microsecond() -> None:
    assert tick_id("s", "BTC", 1.0) == tick_id("s", "BTC", 1.0000000001)
    assert tick_id("s", "BTC", 1) == tick_id("s", "BTC", 1.0)
