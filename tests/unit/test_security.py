"""The ingress's guards on the real app (serve.app.build_api, dashboard mounted), through
FastAPI's TestClient: the API token (header, query, cookie; the dashboard and its websocket
too), CORS closed unless configured, request limits, and the token kept out of reprs, errors
and what the routes see. No cluster: the app reaches its actors only on first use, and these
requests stop before that (or, /healthz, report the parts as unreachable)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from starlette.websockets import WebSocketDisconnect

from cluster.settings import BtcpulseSettings
from serve.app import build_api
from serve.security import COOKIE

TOKEN = "s3cr3t-token-for-the-unit-tests"
ORIGIN = "http://dash.example:3000"


def _settings(tmp: Path, **kw: object) -> BtcpulseSettings:
    return BtcpulseSettings(state_dir=tmp, **kw)  # type: ignore[arg-type]


def _echo(app: FastAPI) -> FastAPI:
    """A route that shows what a handler receives (added to the real app, like any route)."""

    @app.get("/api/_echo_query")
    async def echo(request: Request) -> dict[str, str]:
        return {"query": request.url.query}

    return app


@pytest.fixture(scope="module")
def open_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return build_api(_settings(tmp_path_factory.mktemp("open")), load_model=False)


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    settings = _settings(tmp_path_factory.mktemp("locked"), api_token=SecretStr(TOKEN), cors_origins=[ORIGIN])
    return _echo(build_api(settings, load_model=False))


@pytest.fixture
def client(locked_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(locked_app) as c:  # a fresh cookie jar per test
        yield c


@pytest.fixture
def open_client(open_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(open_app) as c:
        yield c


# --- the token ---------------------------------------------------------------------------


def test_without_a_token_every_route_but_healthz_is_refused(client: TestClient) -> None:
    for path in ("/openapi.json", "/docs", "/api/news", "/api/search?q=btc", "/metrics", "/dashboard"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200  # no cluster here: "degraded", but open


def test_bearer_header(client: TestClient) -> None:
    assert client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer "):
        r = client.get("/openapi.json", headers={"Authorization": wrong})
        assert r.status_code == 401, wrong
        assert TOKEN not in r.text
    # bytes outside ASCII are compared too, not a crash
    r = client.get("/openapi.json", headers={"Authorization": "Bearer \xe9t\xe9".encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 401


def test_query_token_leaves_an_httponly_strict_cookie_that_is_not_the_token(client: TestClient) -> None:
    r = client.get("/openapi.json", params={"token": TOKEN})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    # the cookie alone now passes, for the API and for the dashboard's static files
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/static/js/bokeh.min.js").status_code == 200
    assert client.get("/api/search", params={"q": "x" * 501}).status_code == 422


def test_wrong_query_token_or_cookie_is_refused(client: TestClient) -> None:
    assert client.get("/openapi.json", params={"token": TOKEN + "x"}).status_code == 401
    client.cookies.set(COOKIE, "0" * 64)
    assert client.get("/openapi.json").status_code == 401
    client.cookies.set(COOKIE, TOKEN)  # the token itself is not the cookie
    assert client.get("/openapi.json").status_code == 401


def test_the_token_is_taken_out_of_the_query_the_routes_see(client: TestClient) -> None:
    r = client.get("/api/_echo_query", params={"a": "1", "token": TOKEN, "b": "x y"})
    assert r.status_code == 200
    assert r.json() == {"query": "a=1&b=x+y"}


def test_dashboard_page_load_with_token_redirects_without_it_and_sets_the_cookie(client: TestClient) -> None:
    assert client.get("/dashboard").status_code == 401
    assert client.get("/static/js/bokeh.min.js").status_code == 401
    r = client.get(
        "/dashboard",
        params={"token": TOKEN, "theme": "dark"},
        headers={"Accept": "text/html,application/xhtml+xml"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard?theme=dark"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert TOKEN not in r.headers["location"] + r.headers["set-cookie"]
    assert client.get("/static/js/bokeh.min.js").status_code == 200


def test_open_redirect_is_not_possible(client: TestClient) -> None:
    r = client.get(
        "http://testserver//evil.example/x",
        params={"token": TOKEN},
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/evil.example/x"  # a path on this host, not //host


def test_dashboard_websocket_needs_the_cookie(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/dashboard/ws"):
        pass
    assert refused.value.code == 1008
    assert refused.value.reason == "token required"
    # With the cookie a browser got from ?token=, the handshake reaches Bokeh, which then asks
    # for its own session token (a real page sends it as a subprotocol).
    client.get("/openapi.json", params={"token": TOKEN})
    bokeh_refuses = pytest.raises(RuntimeError, match="Subprotocol header is not 'bokeh'")
    with bokeh_refuses, client.websocket_connect("/dashboard/ws"):
        pass


def test_token_never_shown(locked_app: FastAPI, tmp_path: Path) -> None:
    settings = _settings(tmp_path, api_token=SecretStr(TOKEN))
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert TOKEN not in repr(locked_app.user_middleware)
    os.environ["BTCPULSE_API_TOKEN"] = "short-secret"
    try:
        with pytest.raises(ValidationError) as bad:
            BtcpulseSettings()
        assert "short-secret" not in str(bad.value)
    finally:
        del os.environ["BTCPULSE_API_TOKEN"]
    assert _settings(tmp_path, api_token=SecretStr("")).api_token is None


def test_unset_token_means_no_auth(open_client: TestClient) -> None:
    assert open_client.get("/openapi.json").status_code == 200
    assert open_client.get("/static/js/bokeh.min.js").status_code == 200
    assert "set-cookie" not in open_client.get("/openapi.json", params={"token": "anything"}).headers


# --- CORS ----------------------------------------------------------------------------------


def test_cors_closed_by_default(open_client: TestClient) -> None:
    r = open_client.get("/openapi.json", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    pre = open_client.options("/api/news", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert not [h for h in pre.headers if h.lower().startswith("access-control-")]


def test_cors_only_the_configured_origins_and_get(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.get("/openapi.json", headers={"Origin": ORIGIN, **auth})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    other = client.get("/openapi.json", headers={"Origin": "http://evil.example", **auth})
    assert "access-control-allow-origin" not in other.headers
    # a preflight carries no token and is answered by the CORS layer, never by the app
    pre = client.options(
        "/api/news",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert pre.headers["access-control-allow-methods"] == "GET"
    post = client.options("/api/news", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert post.status_code == 400
    assert (
        "access-control-allow-origin"
        not in client.options(
            "/api/news", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
        ).headers
    )


def test_cors_settings_refuse_wildcards() -> None:
    for bad in (["*"], ["dash.example"], ["http://dash.example/"]):
        with pytest.raises(ValidationError):
            BtcpulseSettings(cors_origins=bad)


# --- limits --------------------------------------------------------------------------------


def test_body_over_the_limit_by_content_length(open_client: TestClient) -> None:
    r = open_client.request("GET", "/openapi.json", content=b"x" * (64 * 1024 + 1))
    assert r.status_code == 413
    assert "larger than 65536" in r.json()["detail"]
    assert open_client.request("GET", "/openapi.json", content=b"x" * 1000).status_code == 200


def test_chunked_body_over_the_limit(open_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b"y" * 1024

    r = open_client.request("GET", "/openapi.json", content=chunks())
    assert r.status_code == 413

    def small() -> Iterator[bytes]:
        yield b"z" * 100

    assert open_client.request("GET", "/openapi.json", content=small()).status_code == 200


def test_bad_content_length(open_client: TestClient) -> None:
    r = open_client.get("/openapi.json", headers={"Content-Length": "lots"})
    assert r.status_code == 400


def test_long_query_string(open_client: TestClient) -> None:
    r = open_client.get("/api/news", params={"source": "a", "pad": "p" * 9000})
    assert r.status_code == 414
    assert "query string" in r.json()["detail"]
    # the longest legal q (500 four-byte characters, percent-encoded) still fits
    r = open_client.get("/api/search", params={"q": "\U0001f600" * 501})
    assert r.status_code == 422  # over q's max_length: validation, not the limit


def test_text_parameters_have_a_max_length(open_client: TestClient) -> None:
    cases = {
        "/api/search": {"q": "x" * 501},
        "/api/news": {"source": "s" * 65},
        "/api/series": {"step": "1" * 9},
        "/api/news/latest": {"source": "s" * 65},
    }
    for path, params in cases.items():
        r = open_client.get(path, params=params)
        assert r.status_code == 422, path
        assert r.json()["detail"][0]["type"] == "string_too_long"
    assert open_client.get("/api/news/" + "a" * 65).status_code == 422


def test_openapi_documents_the_guards_answers(locked_app: FastAPI, open_app: FastAPI) -> None:
    op = locked_app.openapi()["paths"]["/api/news"]["get"]["responses"]
    assert {"401", "413", "414"} <= set(op)
    assert "401" not in open_app.openapi()["paths"]["/api/news"]["get"]["responses"]


def test_ids_must_be_uuids_and_narrowed_buckets_are_documented(open_client: TestClient) -> None:
    from serve.schemas import BucketFields, BucketPublic

    for path in ("/api/news/0", "/api/news/0/similar", "/api/search?like=A90Fe6"):
        r = open_client.get(path)
        assert r.status_code == 422, path  # not the vector store's error as a 500
        assert r.json()["detail"][0]["type"] == "string_pattern_mismatch"
    assert set(BucketFields.model_fields) == set(BucketPublic.model_fields)
    series = open_client.get("/openapi.json").json()["paths"]["/api/series"]["get"]
    ok = series["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/SeriesFieldsResponse"} in ok["anyOf"]


def test_times_are_iso_not_numbers(open_client: TestClient) -> None:
    """Fuzzing found "start=0.3" taken as seconds since 1970 while the schema says date-time."""
    for params in ({"start": "0.3"}, {"end": "1e5"}, {"before": "12"}):
        r = open_client.get("/api/news", params=params)
        assert r.status_code == 422, params
        assert "ISO-8601" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "query",
    [
        "/api/events?distinct=false&end=0001-01-01T00%3A08%3A04Z&limit=16",  # found by the fuzzer: a 500
        "/api/series?start=1969-12-31T23:59:59Z",
        "/api/news?end=9999-06-01T00:00:00Z",
    ],
)
def test_times_outside_1970_to_9998_are_client_errors(open_client: TestClient, query: str) -> None:
    answer = open_client.get(query)
    assert answer.status_code == 422, answer.text
    assert "1970" in answer.text
