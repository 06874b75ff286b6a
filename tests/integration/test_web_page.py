"""The web page's routes over plain HTTP against a real ``hearth serve``: security and caching
headers, exact-name static files (no listing, no traversal in any encoding), the key on its JSON
views, the Host check, and ``--no-web``. The page itself in a browser: tests/browser/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import API_KEY, Server

pytestmark = pytest.mark.integration

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")
STATIC = Path(__file__).resolve().parents[2] / "api" / "static"


def get(srv: Server, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    r = srv.request("GET", path, headers={**headers})
    return r.status, r.headers, r.body


def keyed(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", **extra}


def assert_page_headers(headers: dict[str, str]) -> None:
    csp = headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'",
                      "object-src 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_serve_says_where_the_page_is(server: Server, no_web: Server) -> None:
    out = server.wait_for_stdout("web page:")
    assert f"\nweb page: http://127.0.0.1:{server.port}/ (--no-web turns it off)\n" in out
    assert "web page" not in no_web.wait_for_stdout("API keys:")


def test_the_page_and_its_files(server: Server) -> None:
    status, headers, body = get(server, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert_page_headers(headers)
    page = body.decode()
    assert '<meta name="hearth-api-prefix" content="/v1">' in page
    # everything it loads is its own: /web/<file>?v=<hash>, or the data: icon
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("/web/") or r == "data:," for r in refs), refs
    assert "<script>" not in page and "style=" not in page  # nothing inline
    for ref in refs:
        if not ref.startswith("/web/"):
            continue
        status, headers, body = get(server, ref)
        assert status == 200, ref
        name = ref.split("?")[0].removeprefix("/web/")
        assert body == (STATIC / name).read_bytes()
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["content-type"].startswith(
            "text/javascript" if name.endswith(".js") else "text/css")
        assert_page_headers(headers)
        # without the current version: revalidated instead of cached for a year
        assert get(server, f"/web/{name}")[1]["cache-control"] == "no-cache"
    # ETag revalidation
    etag = get(server, "/")[1]["etag"]
    status, _, body = get(server, "/", **{"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert server.request("HEAD", "/", headers={}).status == 200


@pytest.mark.parametrize("path", [
    "/web/", "/web", "/web/static", "/web/index.html", "/web/../pyproject.toml",
    "/web/..%2fpyproject.toml", "/web/%2e%2e%2fapp.py", "/web/%2e%2e/app.py",
    "/web/..%5capp.py", "/web/%2fetc%2fpasswd", "/web/app.js%00.css", "/web/.%2e/handlers",
    "/web/app.js/", "//web/app.js", "/web/APP.JS", "/web/api/", "/web/api/nothing",
])
def test_nothing_but_the_page_s_files_by_exact_name(server: Server, path: str) -> None:
    status, headers, body = get(server, path)
    assert status == 404, path
    assert body.startswith(b'{"error":'), body[:200]
    assert headers["content-type"] == "application/json"
    if path.startswith("/web"):  # the page's paths: its headers on every answer, 404s too
        assert_page_headers(headers)
    # any other method: the same 404 (not a 405 naming methods of a file that is not there)
    r = server.request("POST", path, b"{}", headers={"Content-Type": "application/json"})
    assert r.status == 404, (path, r.body)
    assert r.json()["error"]["code"] == "unknown_url"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/", "GET, HEAD, OPTIONS"),
    ("DELETE", "/web/app.js", "GET, HEAD, OPTIONS"),
    ("POST", "/web/api/live", "GET, OPTIONS"),
    ("HEAD", "/web/api/settings", "GET, OPTIONS"),
    ("GET", "/v1/chat/completions", "POST, OPTIONS"),  # the API's 405s say it too
])
def test_a_405_says_which_methods_are_allowed(server: Server, method: str, path: str,
                                              allow: str) -> None:
    """RFC 9110 §15.5.6: a 405 carries ``Allow``; on the page's paths, the page's headers."""
    r = server.request(method, path, b"" if method != "HEAD" else None, headers=keyed())
    assert r.status == 405, (method, path, r.body)
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert r.json()["error"]["code"] == "method_not_allowed"
    if path == "/" or path.startswith("/web/"):
        assert_page_headers(r.headers)
    else:
        assert "content-security-policy" not in r.headers


def test_the_views_need_the_key_and_show_key_names_only(server: Server) -> None:
    for path in ("/web/api/live", "/web/api/settings"):
        status, headers, body = get(server, path)
        assert status == 401 and b"invalid_api_key" in body, path
        assert_page_headers(headers)
        r = server.request("GET", path, headers=keyed())
        assert r.status == 200, path
        assert r.headers["cache-control"] == "no-store"
        assert API_KEY.encode() not in r.body
    live = server.request("GET", "/web/api/live", headers=keyed()).json()
    assert live["scheduler_up"] is True and live["default_model"] == "tiny"
    (tiny,) = live["models"]
    assert tiny["id"] == "tiny" and tiny["loaded"] is True and tiny["slots_total"] == 2
    assert tiny["size_bytes"] > 0
    assert live["in_flight_by_key"] == {"key1": 0} and live["queue_by_key"] == {"key1": 0}
    settings = server.request("GET", "/web/api/settings", headers=keyed()).json()
    rows = {r["name"]: r for r in settings["settings"]}
    assert rows["port"]["value"] == server.port and rows["port"]["source"] == "flag"
    assert rows["api_key (names)"]["value"] == "key1"
    assert settings["key_names"] == {"key1": "flag"}


def test_a_foreign_host_gets_403_on_every_web_route(server: Server) -> None:
    for path in ("/", "/web/app.js", "/web/api/live", "/web/api/settings"):
        r = server.request("GET", path, headers=keyed(Host="rebind.example"))
        assert r.status == 403, path
        assert b"not trusted" in r.body
        assert_page_headers(r.headers)


def test_the_page_counts_in_metrics_as_web(server: Server) -> None:
    get(server, "/")
    text = server.request("GET", "/metrics", headers=keyed()).body.decode()
    assert re.search(r'hearth_requests_total\{endpoint="web",key="-",model="-",status="200"\}',
                     text)
    assert 'hearth_requests_in_flight{key="key1"} 0.0' in text


@pytest.fixture
def no_web(tiny_models_dir: Path, tmp_path: Path) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path / "home", args=(*TINY_ARGS, "--no-web"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


def test_no_web_turns_every_web_route_off(no_web: Server) -> None:
    for path in ("/", "/web/app.js", "/web/api/live", "/web/api/settings"):
        r = no_web.request("GET", path, headers=keyed())
        assert r.status == 404, path
        assert r.json()["error"]["code"] == "unknown_url"
        assert "content-security-policy" not in r.headers  # the plain API 404
    assert no_web.request("GET", "/v1/models", headers=keyed()).status == 200


def test_the_openapi_document_lists_the_views_unless_no_web(server: Server,
                                                            no_web: Server) -> None:
    paths = server.request("GET", "/v1/openapi.json", headers=keyed()).json()["paths"]
    assert {"/web/api/live", "/web/api/settings"} <= set(paths)
    paths = no_web.request("GET", "/v1/openapi.json", headers=keyed()).json()["paths"]
    assert not [p for p in paths if p.startswith("/web/")]


def test_an_api_prefix_of_web_leaves_the_api_and_the_page_working(tiny_models_dir: Path,
                                                                   tmp_path: Path) -> None:
    """``--api-prefix /web`` shares ``/web/`` with the page's files: the API's routes win."""
    srv = Server(tiny_models_dir, "tiny", tmp_path / "home",
                 args=(*TINY_ARGS, "--api-prefix", "/web"))
    srv.start()
    try:
        r = srv.request("GET", "/web/models", headers=keyed())
        assert r.status == 200, r.body
        assert [m["id"] for m in r.json()["data"]] == ["tiny"]
        assert srv.request("GET", "/web/models", headers={}).status == 401  # the API's key check
        r = srv.request("GET", "/web/openapi.json", headers=keyed())
        assert r.status == 200 and "/web/chat/completions" in r.json()["paths"]
        r = srv.request("POST", "/web/chat/completions",
                        {"model": "tiny", "max_tokens": 2,
                         "messages": [{"role": "user", "content": "Hi"}]},
                        headers=keyed(**{"Content-Type": "application/json"}))
        assert r.status == 200, r.body
        assert r.json()["object"] == "chat.completion"
        status, _, page = get(srv, "/")
        assert status == 200 and b'content="/web"' in page
        status, headers, _ = get(srv, "/web/app.js")
        assert status == 200 and "javascript" in headers["content-type"]
        assert get(srv, "/web/api/live", **keyed())[0] == 200
        assert srv.request("GET", "/v1/models", headers=keyed()).status == 404
        # an unknown path under the prefix is the API's 404 for every method, not a 405 of
        # the page's /web/<file> route
        for method in ("GET", "POST", "PUT", "DELETE"):
            r = srv.request(method, "/web/nothing", b"{}",
                            headers=keyed(**{"Content-Type": "application/json"}))
            assert r.status == 404, (method, r.body)
            error = r.json()["error"]
            assert error["code"] == "unknown_url" and error["type"] == "invalid_request_error"
            assert "GET /web/openapi.json lists the endpoints" in error["message"]
        r = srv.request("POST", "/web/app.js", b"{}", headers=keyed())
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS"
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
