"""hearth.tools.cli.server_client: reaching a running server, against a small real HTTP server
on a loopback port (the layer below: no hearth server needed)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hearth.tools.cli.server_client import (
    Unreachable,
    http_get,
    query_server,
    read_key_file,
    server_key,
    server_tls,
)
from hearth.tools.settings import Settings
from hearth.tools.tls import TlsError


class Answers:
    """What the test server answers (status, content type, body) and the headers it saw."""

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.body = b"{}"
        self.seen: list[dict[str, str]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers.seen.append({"path": self.path, **dict(self.headers.items())})
            self.send_response(answers.status)
            self.send_header("Content-Type", answers.content_type)
            self.send_header("Content-Length", str(len(answers.body)))
            self.end_headers()
            self.wfile.write(answers.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll: shutdown() waits for the loop's next look at the flag
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", answers
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


# ---- http_get ------------------------------------------------------------------------------


def test_http_get_sends_the_key_and_returns_the_body(server: tuple[str, Answers]) -> None:
    url, answers = server
    answers.body = b'{"ok": true}'
    status, body = http_get(url + "/health", key="sk-test", accept="application/json")
    assert (status, body) == (200, b'{"ok": true}')
    seen = answers.seen[0]
    assert seen["path"] == "/v1/health"
    assert seen["Authorization"] == "Bearer sk-test" and seen["Accept"] == "application/json"


def test_http_get_without_a_key_sends_no_authorization(server: tuple[str, Answers]) -> None:
    url, answers = server
    http_get(url, key=None, accept="text/plain")
    assert "Authorization" not in answers.seen[0]


def test_http_get_returns_error_statuses_with_their_body(server: tuple[str, Answers]) -> None:
    url, answers = server
    answers.status, answers.body = 401, b'{"error": {"code": "invalid_api_key"}}'
    assert http_get(url, key="wrong", accept="application/json") == (
        401, b'{"error": {"code": "invalid_api_key"}}')


def test_http_get_ignores_proxies_from_the_environment(server: tuple[str, Answers],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = server
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, _closed_port_url())
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert http_get(url, key=None, accept="application/json")[0] == 200


@pytest.mark.parametrize("url", [_closed_port_url(), "not a url", "http://"])
def test_http_get_with_no_answer_raises_unreachable(url: str) -> None:
    with pytest.raises(Unreachable):
        http_get(url, key=None, accept="application/json", timeout=2)


# ---- query_server --------------------------------------------------------------------------


def test_query_server_reads_which_models_are_loaded(server: tuple[str, Answers]) -> None:
    url, answers = server
    answers.body = json.dumps({"object": "list", "data": [
        {"id": "tiny", "hearth": {"loaded": True}},
        {"id": "other", "hearth": {"loaded": False}},
        {"id": "foreign"},  # another server's entry: no hearth facts, so not loaded
        {"name": "no id"},
    ]}).encode()
    res = query_server(url, "sk-test")
    assert res.url == url and res.note == ""
    assert res.loaded == {"tiny": True, "other": False, "foreign": False}
    assert answers.seen[0]["path"] == "/v1/models"
    assert answers.seen[0]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(("status", "body", "note"), [
    (401, b"{}", "(the server refused the API key: pass --api-key)"),
    (500, b"{}", "(the server answered HTTP 500)"),
    (200, b"<html>not json</html>", "(server not running at {url})"),
])
def test_query_server_says_why_it_has_no_answer(server: tuple[str, Answers], status: int,
                                                body: bytes, note: str) -> None:
    url, answers = server
    answers.status, answers.body = status, body
    res = query_server(url, None)
    assert res.loaded is None and res.note == note.format(url=url)


def test_query_server_not_running() -> None:
    res = query_server(_closed_port_url(), None, timeout=2)
    assert res.loaded is None and "server not running" in res.note


# ---- key and TLS ---------------------------------------------------------------------------


def test_the_configured_key_comes_before_the_saved_one(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert read_key_file() is None and server_key(Settings()) is None  # none is created
    assert not any(tmp_path.rglob("*"))
    from hearth.tools.cli.keys import key_path

    key_path().parent.mkdir(parents=True)
    key_path().write_text("sk-saved\n")
    assert server_key(Settings()) == "sk-saved"
    assert server_key(Settings(api_keys=["sk-configured", "sk-second"])) == "sk-configured"


def test_the_own_certificate_is_trusted_only_for_the_settings_url(tmp_path: Path) -> None:
    assert server_tls(Settings(), url_given=False) is None
    missing = Settings(tls_cert=str(tmp_path / "missing.pem"))
    assert server_tls(missing, url_given=True) is None  # --url: the system's trust, no read
    with pytest.raises(TlsError):
        server_tls(missing, url_given=False)
