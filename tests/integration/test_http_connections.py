"""Connections of a real ``hearth serve``: pooled connections survive early error answers,
requests Tornado refuses itself get the error envelope, and stalled requests are cut off.

The server runs with short read timeouts (2 s) so that the timeout tests end quickly; the
waits here drive the client, nothing asserts how long anything took."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx  # what the openai SDK installs (its own httpx)
import pytest
from harness import API_KEY, Server

pytestmark = pytest.mark.integration

TIMEOUT_S = 2
TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")
MAX_BODY = 8 * 1024 * 1024  # the default
CHAT = {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
BIG = {"x": "y" * 2000}


@pytest.fixture(scope="module")
def srv(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"), args=(
        *TINY_ARGS, "--header-timeout", f"{TIMEOUT_S}s", "--body-timeout", f"{TIMEOUT_S}s"))
    server.start()
    yield server
    assert server.stop() == 0, "".join(server.stderr)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


# ---- kind 1: early error answers on a pooled client ---------------------------------------

# (method, path, headers, body, status): each is answered from what comes before the body
EARLY: dict[str, tuple[str, str, dict[str, str], Any, int]] = {
    "404-wrong-path": ("POST", "/v1/nope", auth(), BIG, 404),
    "404-outside-prefix": ("POST", "/nope", {}, BIG, 404),
    "401-wrong-key": ("POST", "/v1/chat/completions", {"Authorization": "Bearer no"}, BIG, 401),
    "401-get": ("GET", "/v1/models", {"Authorization": "Bearer no"}, None, 401),
    "403-foreign-host": ("POST", "/v1/chat/completions", {**auth(), "Host": "evil.example"},
                         BIG, 403),
    "405-post-to-get-only": ("POST", "/v1/models", auth(), BIG, 405),
    "405-put": ("PUT", "/v1/chat/completions", auth(), BIG, 405),
    "413-body-over-max": ("POST", "/v1/chat/completions", auth(),
                          b"x" * (MAX_BODY + 1000), 413),
}


@pytest.mark.parametrize("case", list(EARLY))
def test_pooled_connection_survives_early_errors(srv: Server, case: str) -> None:
    method, path, headers, body, status = EARLY[case]
    rounds = 10 if status == 413 else 50  # 413 moves 8 MiB a round
    seen: list[int] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=60,
                      limits=httpx.Limits(max_connections=1)) as client:
        for i in range(rounds):
            content = body if isinstance(body, bytes) or body is None else json.dumps(body)
            r = client.request(method, path, headers=headers, content=content)
            assert r.status_code == status, r.text
            assert set(r.json()) == {"error"}
            seen.append(r.status_code)
            # the normal requests in between, alternating an empty-bodied and a bodied one
            if i % 2:
                ok = client.get("/v1/models", headers=auth())
            else:
                ok = client.post("/v1/chat/completions", headers=auth(), json=CHAT)
            assert ok.status_code == 200, ok.text
    assert seen == [status] * rounds


def test_answer_before_an_oversized_body_says_connection_close(srv: Server) -> None:
    """A Content-Length past Tornado's backstop (4 x --max-body) is answered 413 at once,
    without reading the body: the answer must tell the client not to reuse the connection."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {5 * MAX_BODY}\r\n\r\n")
    status, headers, body = raw(srv, head.encode())
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_unauthorised_body_over_max_body_is_not_drained(srv: Server) -> None:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n\r\n")
    status, headers, _ = raw(srv, head.encode())
    assert status == 401 and headers.get("connection") == "close"


# ---- errors Tornado answers itself -------------------------------------------------------


def raw(srv: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a fresh socket; read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def envelope_of(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    return doc["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("host_lines", [
    "",
    "Host: evil.com@localhost\r\n",
    "Host: localhost evil.com\r\n",
    "Host: localhost:{port}/x\r\n",
    "Host: localhost\r\nHost: localhost\r\n",
    "Host: localhost, evil.com\r\n",
], ids=["no-host", "userinfo", "space", "path", "two-hosts", "comma"])
def test_malformed_host_gets_the_envelope(srv: Server, host_lines: str) -> None:
    request = (f"GET /v1/models HTTP/1.1\r\n{host_lines.format(port=srv.port)}"
               f"Authorization: Bearer {API_KEY}\r\n\r\n")
    status, headers, body = raw(srv, request.encode())
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") == "close"
    assert envelope_of(body)["type"] == "invalid_request_error"


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\x01b\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Nul: \x00\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
    b"Transfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
], ids=["control-char", "nul", "negative-length", "gzip-te", "bad-chunk", "no-colon"])
def test_unparseable_request_gets_the_envelope(srv: Server, request_bytes: bytes) -> None:
    """Bytes Tornado's parser refuses (it answers a bare 400 with no body) get the envelope."""
    status, headers, body = raw(srv, request_bytes)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") == "close"
    err = envelope_of(body)
    assert err["type"] == "invalid_request_error" and "Malformed HTTP request" in err["message"]
    ok = httpx.get(f"http://127.0.0.1:{srv.port}/v1/models", headers=auth(), timeout=30)
    assert ok.status_code == 200


def test_huge_header_gets_431_in_the_envelope(srv: Server) -> None:
    request = (f"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: {'a' * 100_000}\r\n"
               f"Authorization: Bearer {API_KEY}\r\n\r\n")
    status, headers, body = raw(srv, request.encode())
    assert status == 431 and headers.get("connection") == "close"
    assert envelope_of(body)["code"] == "request_header_too_large"


# ---- read timeouts -------------------------------------------------------------------------


def closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes ``sock``; what it sent first."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_slowloris_headers_are_cut_off(srv: Server) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n")
        sock.settimeout(0.2)
        closed = False
        for _ in range(30 * 5):  # a byte every 0.2 s for up to 30 s, far past the 2 s timeout
            try:
                sock.sendall(b"a")
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed, "the server kept a slowloris connection open"


def test_stalled_body_is_answered_408_and_closed(srv: Server) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {9 * 1024 * 1024}\r\n\r\n0123456789".encode())
        data = closed_by_server(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert b"\r\nConnection: close\r\n" in data
    assert envelope_of(data.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"


def test_slow_but_steady_body_is_served(srv: Server) -> None:
    """The body timeout is between two reads: a body that takes longer in all, a piece every
    half second, is read to the end."""
    body = json.dumps(CHAT).encode()
    pieces = [body[i:i + len(body) // 6 + 1] for i in range(0, len(body), len(body) // 6 + 1)]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
                     f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for piece in pieces:  # 3 s and more in all, > the 2 s timeout
            time.sleep(0.5)
            sock.sendall(piece)
        data = closed_by_server(sock)
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]


def test_a_stream_outlives_the_read_timeouts(srv: Server) -> None:
    """An SSE answer is a response, not a slow request: pausing mid-stream for longer than both
    timeouts loses nothing."""
    body = {**CHAT, "max_tokens": 40, "stream": True}
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", headers=auth(), json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(lines)
            time.sleep(TIMEOUT_S * 2)
            rest = list(lines)
        # the pooled connection is still good afterwards
        assert client.get("/v1/models", headers=auth()).status_code == 200
    assert first.startswith("data: {")
    assert [line for line in rest if line][-1] == "data: [DONE]"
