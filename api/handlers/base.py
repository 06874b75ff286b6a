"""The base handler: Host check, CORS and auth for every request; errors in the OpenAI envelope
(or a handler's own: :meth:`BaseHandler.error_body`).

Order in ``prepare``: Host (403, before anything else: DNS-rebinding defence), then CORS
headers, then — unless the handler is public or this is a preflight — the API key (401).

Pooled connections: an error found in ``prepare`` (404, 401, 403, 503 shutting_down) is
answered only once the request's body has been read and dropped, so a client's kept-alive
connection stays usable for its next request. Tornado closes a connection whose request was
answered before its body was read, and closing with unread bytes in the socket makes the kernel
send a reset that can destroy the answer itself; so a body is drained when it is at most
--max-body, and any answer that goes out before the body was read says ``Connection: close``
(RFC 9112 §9.6) so that no client reuses the connection.

Body timeout: a request body that sends nothing for --body-timeout is answered 408 and its
connection closed (nginx's client_body_timeout: the time between two reads, not the whole body).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import tornado.http1connection
import tornado.ioloop
import tornado.web
from hearth.api import errors as mapper
from hearth.api.access import CorsPolicy, HostCheck, KeyRing, bearer_token
from hearth.api.bridge import Bridge
from hearth.api.metrics import Metrics
from hearth.api.page_headers import PAGE_HEADERS, is_page_path
from hearth.api.responses_store import ResponseStore
from hearth.scheduler import errors
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

_json = msgspec.json.Encoder()
log = logging.getLogger("hearth.api")

# Tornado refuses a body over this (4 x --max-body; see api.app.serve) with a bare 400 and a
# close; a declared Content-Length over it is answered 413 here before Tornado sees it.


def body_backstop(max_body: int) -> int:
    """Tornado's own body limit in bytes for a --max-body of ``max_body`` bytes."""
    return 4 * max_body + 65536


@dataclass
class AppState:
    """Everything handlers share; built once at start-up by ``api.app.make_app``."""

    settings: Settings
    hosts: HostCheck
    cors: CorsPolicy
    keys: KeyRing
    bridge: Bridge
    registry: ModelRegistry
    metrics: Metrics
    responses: ResponseStore  # the Responses API's stored responses
    draining: bool = False  # shutting down: new requests get 503, those in flight finish


CLIENT_CLOSED = 499  # nginx's status for "the client went away before the answer"


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Bodies are streamed in (``data_received``) so that one over --max-body is refused with a
    413 in the OpenAI envelope, instead of Tornado dropping the connection."""

    public = False  # True: no API key needed
    endpoint = "other"  # the ``endpoint`` label of hearth_requests_total (api.metrics.ENDPOINTS)

    def initialize(self, state: AppState) -> None:
        self.state = state
        self._body = bytearray()
        self._oversize = False
        self.key_name: str | None = None
        # The ``model`` label: set by a handler once the registry knows the model, so label
        # values stay bounded by the models directory whatever clients send.
        self.model_label = "-"
        self.client_gone = False  # the connection closed before the answer was finished
        # The error that cut a stream after its 200 went out (worker_died, shutting_down...):
        # logged and counted with that error's status and code rather than as a plain 200.
        self.stream_error: errors.HearthError | None = None
        # For the request log line (api.request_log): the model the client asked for, as sent,
        # and the usage once known (None: none, e.g. an error before a slot took the request).
        self.log_model: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        # The answer's body as sent (a stream: a summary), logged with --verbose.
        self.response_log: bytes | None = None
        # An error found before the body was read, answered once it is (see the module doc).
        self._pending: errors.HearthError | None = None
        self._drained = 0  # body bytes received while an error is pending
        self._body_timer: object | None = None  # IOLoop timeout handle of the body timeout
        self._body_seen = 0.0  # loop time of the body's last bytes

    def on_connection_close(self) -> None:
        self.client_gone = True
        self._stop_body_timer()
        super().on_connection_close()  # fails the body future: a request cut mid-body ends

    def _body_read(self) -> bool:
        """Whether the whole request body has been read (Tornado resolves this future, which
        ``_execute`` awaits between ``prepare`` and the method, when the body is complete)."""
        future = getattr(self.request, "_body_future", None)
        return future is None or future.done()

    def outcome_status(self) -> int:
        """The status to log and count: 499 if the client left before the answer finished;
        the status of the error that cut a started stream (e.g. 502 for ``worker_died``)."""
        if self.client_gone:
            return CLIENT_CLOSED
        if self.stream_error is not None:
            return mapper.status_of(self.stream_error)
        return self.get_status()

    def error_code(self) -> str | None:
        """The OpenAI ``code`` (else ``type``) of the error that cut a started stream."""
        if self.stream_error is None:
            return None
        body = mapper.envelope(self.stream_error).error
        return body.code or body.type

    def on_finish(self) -> None:
        self._stop_body_timer()
        self.state.metrics.count_request(self.endpoint, self.model_label, self.outcome_status(),
                                         self.key_name or "-")

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.clear_header("Server")

    def data_received(self, chunk: bytes) -> None:
        self._body_seen = tornado.ioloop.IOLoop.current().time()
        if self._pending is not None:  # dropped; a chunked body over --max-body is not drained
            self._drained += len(chunk)
            if self._drained > self.state.settings.max_body and not self._finished:
                self.send_error_envelope(self._pending)
            return
        # An oversized body is read and dropped (up to Tornado's backstop, 4 x --max-body) so
        # that clients which send the whole body before reading the answer still get the 413.
        if self._oversize or len(self._body) + len(chunk) > self.state.settings.max_body:
            self._oversize = True
            self._body.clear()
            return
        self._body += chunk

    def request_body_for_log(self) -> bytes | None:
        """The request body as received; None when it was over --max-body (not kept)."""
        return None if self._oversize else bytes(self._body)

    def response_body_for_log(self) -> bytes | None:
        """The answer's body as sent, or None (logged with --verbose)."""
        return self.response_log

    @property
    def body(self) -> bytes:
        if self._oversize:
            raise mapper.PayloadTooLarge(self._too_large())
        return bytes(self._body)

    def _too_large(self) -> str:
        return (f"The request body is larger than this server's limit of "
                f"{self.state.settings.max_body} bytes (--max-body).")

    def prepare(self) -> None:
        max_body = self.state.settings.max_body
        length_text = self.request.headers.get("Content-Length", "")
        length = int(length_text) if length_text.isdigit() else None
        if length is not None and length > body_backstop(max_body):
            # Tornado would refuse it with a bare 400; the answer closes the connection, and
            # the rest of the body is not read (so Tornado's limit must not fire on it).
            connection = self.request.connection
            if isinstance(connection, tornado.http1connection.HTTP1Connection):
                connection.set_max_body_size(length)
            raise mapper.PayloadTooLarge(self._too_large())
        if length is not None and length > max_body:
            self._oversize = True
        expects_body = bool(length) or "Transfer-Encoding" in self.request.headers
        if expects_body:
            self._start_body_timer()
        try:
            self._check_access()
        except errors.HearthError as exc:
            if length is not None and length > max_body:
                raise  # not worth draining: answered now, and the connection closed
            # Answered by the method once the body is read and dropped (data_received).
            self._pending = exc
            setattr(self, self.request.method.lower(), self._answer_pending)

    def _answer_pending(self, *args: Any) -> None:
        assert self._pending is not None
        raise self._pending

    def _start_body_timer(self) -> None:
        timeout = self.state.settings.body_timeout
        if timeout > 0:
            loop = tornado.ioloop.IOLoop.current()
            self._body_seen = loop.time()
            self._body_timer = loop.call_later(timeout, self._check_body_idle)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._body_timer)
            self._body_timer = None

    def _check_body_idle(self) -> None:
        self._body_timer = None
        if self._body_read() or self._finished:
            return
        loop = tornado.ioloop.IOLoop.current()
        idle = loop.time() - self._body_seen
        timeout = self.state.settings.body_timeout
        if idle < timeout:
            self._body_timer = loop.call_later(timeout - idle, self._check_body_idle)
            return
        log.info("request body from %s sent nothing for %gs: closing the connection",
                 self.request.remote_ip, timeout)
        self.send_error_envelope(mapper.RequestTimeout(
            f"The request body sent nothing for {timeout:g} seconds (--body-timeout)."))

    def _check_access(self) -> None:
        if not self.request.headers.get("Host", "").strip():
            raise errors.InvalidRequest("The request has no Host header.")
        if not self.state.hosts.allowed(self.request.headers.get("Host")):
            raise mapper.ForbiddenHost(
                "The Host header is not trusted by this server. Add it with --trusted-hosts if "
                "this is intended.")
        origin = self.request.headers.get("Origin")
        if self.state.cors.allowed(origin):
            assert origin is not None
            self.set_header("Access-Control-Allow-Origin", origin)
            self.add_header("Vary", "Origin")
        if self.state.draining and self.request.method != "OPTIONS":
            raise errors.ShuttingDown("The server is shutting down; retry in a moment.")
        if self.public or self.request.method == "OPTIONS":
            return
        token = bearer_token(self.request.headers.get("Authorization"),
                             self.request.headers.get("X-Api-Key"))
        self.key_name = self.state.keys.match(token)
        if self.key_name is None:
            raise mapper.Unauthorized(
                "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')."
                if token is None
                else "Incorrect API key provided.")

    def options(self, *args: Any) -> None:
        if self.state.cors.allowed(self.request.headers.get("Origin")):
            self.set_header("Access-Control-Allow-Methods", CorsPolicy.ALLOW_METHODS)
            self.set_header("Access-Control-Allow-Headers", self.state.cors.allow_headers(
                self.request.headers.get("Access-Control-Request-Headers")))
            self.set_header("Access-Control-Max-Age", CorsPolicy.MAX_AGE)
            # the answer echoes the asked-for headers: a cache must not serve it to another ask
            # (one Vary line, replacing prepare()'s, so clients that keep one value see both)
            self.set_header("Vary", "Origin, Access-Control-Request-Headers")
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.response_log = _json.encode(obj)
        self.finish(self.response_log)

    def send_error_envelope(self, exc: errors.HearthError) -> None:
        self.clear()
        self.set_status(mapper.status_of(exc))
        for name, value in mapper.headers_for(exc).items():
            self.set_header(name, value)
        if isinstance(exc, mapper.MethodNotAllowed):
            self.set_header("Allow", ", ".join(self.allowed_methods()))  # RFC 9110 §15.5.6
        if not self._body_read() or isinstance(exc, errors.ShuttingDown):
            # Tornado closes the connection after this answer (its body is unread), or the
            # server is going away: say so, so that no client sends its next request on it.
            self.set_header("Connection", "close")
        origin = self.request.headers.get("Origin")
        if self.state.cors.allowed(origin):
            assert origin is not None
            self.set_header("Access-Control-Allow-Origin", origin)
            self.add_header("Vary", "Origin")
        self.response_log = _json.encode(self.error_body(exc))
        self.finish(self.response_log)

    def allowed_methods(self) -> list[str]:
        """The methods this handler answers (the ``Allow`` header of its 405): those its class
        implements, in Tornado's order. The class, not the instance: ``prepare`` may replace a
        method on the instance to answer an error later."""
        unimplemented = tornado.web.RequestHandler._unimplemented_method
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), unimplemented) is not unimplemented]

    def error_body(self, exc: errors.HearthError) -> msgspec.Struct:
        """The body of an error answer: the OpenAI envelope. A route of another API (Anthropic's
        Messages) overrides this to answer in its own envelope, with the same status; every
        error of the request goes through here, those found before the handler's method runs
        (401, 403, 413, 503 shutting down, 405) included."""
        return mapper.envelope(exc)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if not isinstance(exc, errors.HearthError):
            if isinstance(exc, tornado.web.HTTPError):
                exc = mapper.for_http_status(exc.status_code, exc.log_message or
                                             self._reason or "error")
            elif status_code >= 500:
                exc = errors.InternalError("The server had an error processing the request.")
            else:
                exc = mapper.for_http_status(status_code, self._reason)
        self.send_error_envelope(exc)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, errors.HearthError):
            return  # an answer, not a failure
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    public = True  # the Host check still runs; an unknown path is 404 with or without a key

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # A 404 on the page's paths carries the page's headers like every other answer there.
        # (Tornado first calls this before ``initialize``: no state yet; the error's answer
        # calls it again through ``clear``.)
        state: AppState | None = getattr(self, "state", None)
        if state is not None and state.settings.web and is_page_path(self.request.path):
            for name, value in PAGE_HEADERS.items():
                self.set_header(name, value)

    def error_body(self, exc: errors.HearthError) -> msgspec.Struct:
        """Anthropic's envelope under the Messages API's path (``{prefix}/messages/…``: an
        Anthropic SDK's other routes, such as Message Batches), OpenAI's elsewhere."""
        if self.request.path.startswith(self.state.settings.api_prefix + "/messages/"):
            return mapper.anthropic_envelope(exc)
        return super().error_body(exc)

    def _check_access(self) -> None:
        super()._check_access()
        raise mapper.NotFound.unknown_path(self.request.method or "GET", self.request.path,
                                           self.state.settings.api_prefix)
