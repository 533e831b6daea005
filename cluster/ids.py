"""Canonical URLs and deterministic ids.

Every write in btcpulse is idempotent because every id is derived from the content's
identity: an article's id from its canonical URL (or its GUID when it has no usable URL),
a price tick's id from its source, symbol and time. A redelivered or replayed message
therefore lands on the same id and changes nothing.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that only track the reader; they never change which article a URL names.
_TRACKING_PARAMS = frozenset(
    {"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "igshid", "ref", "ref_src", "_hsenc", "_hsmi"}
)
_TRACKING_PREFIXES = ("utm_", "ga_", "pk_", "mtm_")
# A scraper bug seen in real data: "https://site.comhttps://site.com/path".
# The inner scheme must follow the host directly, so a URL carried in a query or fragment of
# a path-less link ("https://a.com?next=https://b.org") is not mistaken for one.
_DOUBLED_SCHEME = re.compile(r"^https?://[a-z0-9.-]*(https?://.+)$", re.IGNORECASE)
_HOST = re.compile(r"^[a-z0-9.-]+(:\d{1,5})?$")

_NAMESPACE = uuid.UUID("5f0b8a3e-7c1d-4e8a-9b2f-0d6c1e4a7b93")


class BadURLError(ValueError):
    """The text is not an absolute http(s) URL that can name an article."""


def canonical_url(url: str) -> str:
    """The form of ``url`` that every copy of the same link shares.

    Lower-cases scheme and host, drops the default port, the fragment and tracking
    parameters, sorts the remaining query, and repairs a doubled scheme prefix.
    Raises :class:`BadURLError` for anything that is not an absolute http(s) URL.
    """
    text = url.strip()
    doubled = _DOUBLED_SCHEME.match(text)
    if doubled:
        text = doubled.group(1)
    if not text or any(c.isspace() for c in text):
        raise BadURLError(f"not a URL: {url[:200]!r}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadURLError(f"not an http(s) URL: {url[:200]!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or "." not in host or not _HOST.match(host):
        raise BadURLError(f"no valid host in {url[:200]!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadURLError(f"bad port in {url[:200]!r}") from exc
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _TRACKING_PARAMS and not k.lower().startswith(_TRACKING_PREFIXES)
    )
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return urlunsplit((scheme, host, path, urlencode(query), ""))


def article_id(*, url: str | None = None, guid: str | None = None, canonical: str | None = None) -> str:
    """The article's id: a UUID (string) from its canonical URL, else from its GUID.

    The same link, with or without tracking parameters, always gives the same id. Pass
    ``canonical`` when the URL is already canonical, to skip doing it twice.
    """
    if canonical:
        return str(uuid.uuid5(_NAMESPACE, "url:" + canonical))
    if url:
        return str(uuid.uuid5(_NAMESPACE, "url:" + canonical_url(url)))
    if guid and guid.strip():
        return str(uuid.uuid5(_NAMESPACE, "guid:" + guid.strip()))
    raise BadURLError("an article needs a URL or a GUID")


def tick_id(source: str, symbol: str, ts: float, seq: str = "") -> str:
    """Id of a price observation: one per source, symbol, time (and trade id when given)."""
    return str(uuid.uuid5(_NAMESPACE, f"tick:{source}:{symbol}:{ts:.6f}:{seq}"))
