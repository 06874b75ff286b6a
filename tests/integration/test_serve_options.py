"""Serve options reach the running server: --no-cors, --trusted-hosts, --api-prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Server

pytestmark = pytest.mark.integration

# as in tests/integration/conftest.py (not imported from there: "conftest" is an ambiguous
# module name when tests/ and tests/integration/ both have one)
TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")

PREFIX = "/api/v9"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
CHAT = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def custom(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=TINY_ARGS + ("--no-cors", "--trusted-hosts", "myhost.lan",
                                   "--api-prefix", PREFIX))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def test_ready_line_shows_the_prefix(custom: Server) -> None:
    assert any(f"http://127.0.0.1:{custom.port}{PREFIX}" in line for line in custom.stdout)


def test_preflight_gets_no_cors_headers(custom: Server) -> None:
    r = custom.request("OPTIONS", f"{PREFIX}/chat/completions", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert not [h for h in r.headers if h.startswith("access-control-")], r.headers


def test_normal_request_gets_no_cors_headers(custom: Server) -> None:
    r = custom.request("GET", f"{PREFIX}/models", headers={**AUTH,
                                                          "Origin": "http://localhost:5173"})
    assert r.status == 200, r.body
    assert not [h for h in r.headers if h.startswith("access-control-")], r.headers


@pytest.mark.parametrize("host", ["myhost.lan", "myhost.lan:1337", "MyHost.LAN", "localhost"])
def test_trusted_host_passes(custom: Server, host: str) -> None:
    r = custom.request("GET", f"{PREFIX}/models", headers={**AUTH, "Host": host})
    assert r.status == 200, r.body


@pytest.mark.parametrize("host", ["evil.com", "myhost.lan.evil.com", "other.lan"])
def test_other_hosts_still_refused(custom: Server, host: str) -> None:
    r = custom.request("GET", f"{PREFIX}/models", headers={**AUTH, "Host": host})
    assert r.status == 403
    assert r.json()["error"]["code"] == "untrusted_host"


def test_api_lives_under_the_prefix(custom: Server) -> None:
    r = custom.request("GET", f"{PREFIX}/models", headers=AUTH)
    assert r.status == 200, r.body
    assert [m["id"] for m in r.json()["data"]] == ["tiny"]
    r = custom.request("GET", f"{PREFIX}/models/tiny", headers=AUTH)
    assert r.status == 200, r.body
    r = custom.request("POST", f"{PREFIX}/chat/completions", CHAT, headers=AUTH)
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] == 2


def test_health_stays_at_the_root(custom: Server) -> None:
    assert custom.health().status == 200
    assert custom.request("GET", f"{PREFIX}/health", headers={}).status == 200


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/tiny", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/api/models", None),
    ("GET", "/api/v9x/models", None),
])
def test_default_prefix_is_gone(custom: Server, method: str, path: str, body: Any) -> None:
    r = custom.request(method, path, body, headers=AUTH)
    assert r.status == 404, r.body
    err = r.json()["error"]
    assert err["code"] == "unknown_url"
    assert PREFIX in err["message"]  # the 404 says where the API lives


def test_lan_bind_accepts_the_machine_s_names_only(tiny_models_dir: Path,
                                                    tmp_path_factory: pytest.TempPathFactory
                                                    ) -> None:
    import socket

    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("lan"),
                 args=(*TINY_ARGS, "--host", "0.0.0.0")).start()
    try:
        name = socket.gethostname()
        ok = srv.request("GET", "/v1/models", headers={**srv.headers(), "Host": f"{name}:80"})
        assert ok.status == 200
        bad = srv.request("GET", "/v1/models", headers={**srv.headers(), "Host": "evil.example"})
        assert bad.status == 403
    finally:
        assert srv.stop() == 0
