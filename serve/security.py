"""The ingress's guards, as ASGI middleware around the FastAPI app (API and dashboard alike).

    CORSMiddleware   only when cors_origins is set: those origins, GET only
    RequestLimits    query string over max_query_bytes: 414; a body over max_request_bytes:
                     413 (by Content-Length, or counted as a chunked body arrives)
    TokenAuth        only when api_token is set: every route but /healthz, HTTP and websocket,
                     needs the token (Bearer header, ?token= once, or the cookie it leaves)

They sit outside FastAPI's routing, so the dashboard's page, its static files, autoload script
and Bokeh websocket are guarded like the API. The token is held as a ``SecretStr`` until
the middleware is built, compared with :func:`hmac.compare_digest`, and never put in a log line,
a response or the request the app sees (``?token=`` is taken out of the query string).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import SecretStr

from cluster.settings import BtcpulseSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Reachable without the token: a load balancer's or the CLI's health check.
OPEN_PATHS = frozenset({"/healthz"})
COOKIE = "btcpulse_session"
TOKEN_PARAM = "token"  # noqa: S105 (the parameter's name)
# Policy violation: what a websocket handshake refused by the server gets.
WS_POLICY_VIOLATION = 1008


def documented_responses(settings: BtcpulseSettings) -> dict[int | str, dict[str, Any]]:
    """The guards' answers, for the OpenAPI document (any operation may get them)."""
    from serve.schemas import ErrorResponse

    out: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorResponse, "description": "request body too large"},
        414: {"model": ErrorResponse, "description": "query string too long"},
    }
    if settings.api_token is not None:
        out[401] = {"model": ErrorResponse, "description": "missing or wrong token"}
    return out


def install(app: FastAPI, settings: BtcpulseSettings) -> None:
    """Wrap ``app`` in the guards ``settings`` ask for (the last added runs first)."""
    if settings.api_token is not None:
        # The SecretStr itself: Starlette keeps middleware options in a repr-able list.
        app.add_middleware(TokenAuth, token=settings.api_token)
    app.add_middleware(RequestLimits, max_body=settings.max_request_bytes, max_query=settings.max_query_bytes)
    if settings.cors_origins:
        # Outermost: a preflight carries no credentials and must not meet TokenAuth.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET"],
            allow_headers=["Authorization"],
            allow_credentials=False,
            max_age=600,
        )


async def _json(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class RequestLimits:
    """414 for a long query string, 413 for a large body; the body is read (at most the limit)
    before the app runs, so a chunked body is measured as well as a declared one."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_query: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_query = max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            else:
                await _json(send, 414, f"query string longer than {self.max_query} bytes")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _json(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body:
                await _json(send, 413, f"request body larger than {self.max_body} bytes")
                return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                await _json(send, 413, f"request body larger than {self.max_body} bytes")
                return
            buffered.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


class TokenAuth:
    """Every request but :data:`OPEN_PATHS` needs the token.

    Accepted: ``Authorization: Bearer <token>``; ``?token=<token>`` (browsers), answered with
    an HttpOnly, SameSite=Strict cookie so that the page's later requests and its Bokeh
    websocket pass, and, for a page load, a redirect to the same address without the token;
    that cookie. The cookie holds an HMAC of the token, not the token.
    """

    def __init__(self, app: ASGIApp, *, token: SecretStr) -> None:
        self.app = app
        self._token = token.get_secret_value().encode()
        self._cookie = hmac.new(self._token, b"btcpulse session cookie", hashlib.sha256).hexdigest().encode()

    def __repr__(self) -> str:
        return "TokenAuth(token=**********)"

    def _valid(self, given: bytes) -> bool:
        return hmac.compare_digest(given, self._token)

    def _cookie_ok(self, scope: Scope) -> bool:
        raw = _header(scope, b"cookie")
        if raw is None:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode("latin-1"), self._cookie)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == TOKEN_PARAM]
        rest = [(k, v) for k, v in query if k != TOKEN_PARAM]
        ok = via_query = False
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, credentials = auth.strip().partition(b" ")
            ok = scheme.lower() == b"bearer" and self._valid(credentials.strip())
        if not ok and given:
            ok = via_query = self._valid(given[-1].encode("utf-8", "surrogateescape"))
        if not ok:
            ok = self._cookie_ok(scope)
        if not ok:
            if scope["type"] == "websocket":
                await send(
                    {"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": "token required"}
                )
            else:
                await _json(
                    send,
                    401,
                    "a token is required: Authorization: Bearer <token>, or ?token=<token> in a browser",
                    [(b"www-authenticate", b"Bearer")],
                )
            return
        if given:  # never handed on: the app, its logs and Panel's session args don't see it
            scope = {**scope, "query_string": urlencode(rest).encode("latin-1", "replace")}
        if not via_query or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = self._set_cookie(scope)
        accept = _header(scope, b"accept") or b""
        if scope["method"] == "GET" and b"text/html" in accept:
            # A page load: keep the token out of the address bar, history and Referer.
            target = "/" + (scope.get("root_path", "") + scope["path"]).lstrip("/")
            if scope["query_string"]:
                target += "?" + scope["query_string"].decode("latin-1")
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", target.encode("latin-1", "replace")),
                        (b"set-cookie", cookie),
                        (b"cache-control", b"no-store"),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, scope: Scope) -> bytes:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return f"{COOKIE}={self._cookie.decode()}; Path=/; HttpOnly; SameSite=Strict{secure}".encode()
