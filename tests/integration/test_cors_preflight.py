"""CORS preflights as browsers send them for each official SDK, by raw OPTIONS to a real
``hearth serve``: every header the SDK asks for is allowed (issue 15: Firefox and Safari ask
for ``user-agent``, and the ``x-stainless-*`` set changes between SDK versions), for allowed
origins only; then the SDK's real request with those headers is answered."""

from __future__ import annotations

import http.client

import pytest
from harness import API_KEY, Server
from sdk_headers import SDK_PREFLIGHT_HEADERS, request_headers_value

pytestmark = pytest.mark.integration

LOCAL_PAGE = "http://localhost:5173"
PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages",
         "/v1/messages/count_tokens")
HEADER_SETS = {**SDK_PREFLIGHT_HEADERS, "user-agent only": ("user-agent",)}
# what each header might carry from a browser (values do not matter to hearth, names do)
SAMPLE_VALUES = {"authorization": f"Bearer {API_KEY}", "x-api-key": API_KEY,
                 "content-type": "application/json", "anthropic-version": "2023-06-01",
                 "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                               "Firefox/128.0"}


def options(server: Server, path: str, origin: str,
            requested: str) -> tuple[int, http.client.HTTPMessage]:
    """Status and headers (all of them: Vary may come more than once) of a preflight."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("OPTIONS", path, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.msg
    finally:
        conn.close()


def names(values: list[str] | None) -> set[str]:
    return {v.strip().lower() for value in values or [] for v in value.split(",")}


@pytest.mark.parametrize("sdk", sorted(HEADER_SETS))
@pytest.mark.parametrize("path", PATHS)
def test_preflight_allows_each_sdk_s_headers(server: Server, sdk: str, path: str) -> None:
    status, headers = options(server, path, LOCAL_PAGE, request_headers_value(HEADER_SETS[sdk]))
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == LOCAL_PAGE
    assert set(HEADER_SETS[sdk]) <= names(headers.get_all("Access-Control-Allow-Headers"))
    assert "post" in names(headers.get_all("Access-Control-Allow-Methods"))
    assert {"origin", "access-control-request-headers"} <= names(headers.get_all("Vary"))


@pytest.mark.parametrize("sdk", sorted(HEADER_SETS))
def test_a_foreign_origin_still_gets_no_cors_answer(server: Server, sdk: str) -> None:
    status, headers = options(server, "/v1/chat/completions", "http://evil.example",
                              request_headers_value(HEADER_SETS[sdk]))
    assert status == 204  # answered, but with nothing a browser would accept
    assert not [k for k in headers if k.lower().startswith("access-control-")]


@pytest.mark.parametrize("sdk", sorted(SDK_PREFLIGHT_HEADERS))
def test_the_request_after_the_preflight_is_answered(server: Server, sdk: str) -> None:
    sent = {name: SAMPLE_VALUES.get(name, "x") for name in SDK_PREFLIGHT_HEADERS[sdk]}
    r = server.chat({"model": "tiny", "max_tokens": 1,
                     "messages": [{"role": "user", "content": "Hi"}]},
                    headers={**sent, "Origin": LOCAL_PAGE})
    assert r.status == 200, r.body
    assert r.headers["access-control-allow-origin"] == LOCAL_PAGE
