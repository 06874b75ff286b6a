"""The api's HTTP server: Tornado's, with three changes at the connection level.

- Closing the port answers every connection the kernel has already accepted instead of
  resetting it (``HttpServer.stop``).
- A request Tornado refuses while building it (no ``Host`` on HTTP/1.1, a Host value that is not
  ``name[:port]``, two Host headers, a bad query string), which Tornado answers with a bare
  ``400`` and no body, gets the OpenAI error envelope and ``Connection: close`` instead.
- Request headers over :data:`MAX_HEADER_BYTES` get ``431`` in the envelope with
  ``Connection: close`` (Tornado would close the connection without a word); the header timeout
  (``--header-timeout``) is Tornado's ``idle_connection_timeout``, which bounds both the wait
  for a request's first byte and the time its headers may take to arrive (slowloris).

- Errors Tornado finds while *parsing* the bytes (a malformed request line, a control
  character in a header, an invalid Content-Length or Transfer-Encoding, a bad chunk) happen
  inside its read loop, before any delegate sees the request, and Tornado writes a bare ``400``
  with no body: that write is replaced by the envelope with ``Connection: close``
  (``_ParseErrorAnswer``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from http.client import responses
from typing import Any

import msgspec
import tornado.http1connection
import tornado.httpserver
import tornado.httputil
import tornado.iostream
from hearth.api import errors as mapper
from hearth.scheduler import errors

log = logging.getLogger("hearth.api")

# Tornado's own default limit, and above nginx's 4 x 8 KiB (which answers 400 "Request Header
# Or Cookie Too Large"); RFC 6585 §5 gives 431 for it. Tornado's read limit (the backstop,
# HEADER_BACKSTOP_BYTES) is higher so that a request between the two gets the 431 answer.
MAX_HEADER_BYTES = 64 * 1024
HEADER_BACKSTOP_BYTES = 1024 * 1024

_json = msgspec.json.Encoder()


def _header_bytes(headers: tornado.httputil.HTTPHeaders) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers.get_all())


class _RequestGuard(tornado.httputil.HTTPMessageDelegate):
    """Wraps the application's delegate for one request: answers in the OpenAI envelope what
    the application never sees (an oversized header block, a request Tornado cannot build)."""

    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate,
                 connection: tornado.httputil.HTTPConnection) -> None:
        self.inner = inner
        self.connection = connection
        self.answered = False  # by this guard: the application never saw the request

    def headers_received(self, start_line: tornado.httputil.RequestStartLine
                         | tornado.httputil.ResponseStartLine,
                         headers: tornado.httputil.HTTPHeaders) -> Awaitable[None] | None:
        if _header_bytes(headers) > MAX_HEADER_BYTES:
            self._answer(mapper.HeadersTooLarge(
                f"The request headers are larger than this server's limit of "
                f"{MAX_HEADER_BYTES} bytes."), start_line)
            return None
        try:
            return self.inner.headers_received(start_line, headers)
        except tornado.httputil.HTTPInputError as exc:  # raised building the HTTPServerRequest
            self._answer(errors.InvalidRequest(f"Malformed HTTP request: {exc}."), start_line)
            return None

    def _answer(self, exc: errors.HearthError, start_line: Any) -> None:
        self.answered = True
        status = mapper.status_of(exc)
        body = _json.encode(mapper.envelope(exc))
        log.info("%d %s %s: %s", status, getattr(start_line, "method", "?"),
                 getattr(start_line, "path", "?"), exc.message)
        # Connection: close, because the request's body (if any) is not read; Tornado closes
        # the connection once this answer is written.
        self.connection.write_headers(
            tornado.httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "")),
            tornado.httputil.HTTPHeaders({"Content-Type": "application/json",
                                          "Content-Length": str(len(body)),
                                          "Connection": "close"}),
            body)
        self.connection.finish()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.answered else self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.answered:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.answered:
            self.inner.on_connection_close()


# What Tornado 6 writes, and the only thing it writes without a body, when it cannot parse a
# request's bytes (tornado/http1connection.py, HTTP1Connection._read_message_inner).
_TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"


def _parse_error_answer() -> bytes:
    exc = errors.InvalidRequest(
        "Malformed HTTP request: the request line, a header or the body's framing could not be "
        "parsed (a control character in a header, an invalid Content-Length or "
        "Transfer-Encoding, a malformed chunk).")
    body = _json.encode(mapper.envelope(exc))
    return (f"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _ParseErrorAnswer:
    """A connection's stream, passed through, except that Tornado's bare 400 for bytes it
    cannot parse is written as the error envelope (Tornado closes the connection after it)."""

    def __init__(self, stream: tornado.iostream.IOStream) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._stream, name)
        if callable(value):  # a bound method: kept, so the next call on the token path is a
            setattr(self, name, value)  # plain attribute lookup
        return value

    def write(self, data: bytes | memoryview) -> Any:
        if isinstance(data, bytes) and data == _TORNADO_BARE_400:
            data = _parse_error_answer()
        return self._stream.write(data)


class HttpServer(tornado.httpserver.HTTPServer):
    """``stop`` first takes every connection waiting in the listening sockets' accept queues.

    The kernel completes a client's handshake before the server calls ``accept``. Closing a
    listening socket resets every connection still in its queue, so a client that connected in
    the last moment before shutdown saw "connection reset" after sending its request, where it
    should get the server's answer (503 shutting_down while draining). Taking the queue and
    closing happen in one step, with no wait between them; a client that connects after it is
    refused, as for any closed port.
    """

    def start_request(self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
                      ) -> tornado.httputil.HTTPMessageDelegate:
        if isinstance(request_conn, tornado.http1connection.HTTP1Connection) and \
                not isinstance(request_conn.stream, _ParseErrorAnswer):
            request_conn.stream = _ParseErrorAnswer(request_conn.stream)  # type: ignore[assignment]
        return _RequestGuard(super().start_request(server_conn, request_conn), request_conn)

    def stop(self) -> None:
        if not self._stopped:
            for sock in self._sockets.values():
                while True:
                    try:
                        connection, address = sock.accept()
                    except BlockingIOError:
                        break
                    except ConnectionAbortedError:
                        continue
                    self._handle_connection(connection, address)  # as Tornado's accept handler
        super().stop()
