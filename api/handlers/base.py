"""The base handler: Host check, CORS and auth for every request; errors in the OpenAI envelope.

Order in ``prepare``: Host (403, before anything else: DNS-rebinding defence), then CORS
headers, then — unless the handler is public or this is a preflight — the API key (401).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import tornado.web
from hearth.api import errors as mapper
from hearth.api.access import CorsPolicy, HostCheck, KeyRing, bearer_token
from hearth.api.bridge import Bridge
from hearth.api.metrics import Metrics
from hearth.scheduler import errors
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

_json = msgspec.json.Encoder()


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

    def on_connection_close(self) -> None:
        self.client_gone = True

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
        self.state.metrics.count_request(self.endpoint, self.model_label, self.outcome_status(),
                                         self.key_name or "-")

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.clear_header("Server")

    def data_received(self, chunk: bytes) -> None:
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
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.state.settings.max_body:
            self._oversize = True
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
                "Missing API key: send 'Authorization: Bearer <key>'." if token is None
                else "Incorrect API key provided.")

    def options(self, *args: Any) -> None:
        if self.state.cors.allowed(self.request.headers.get("Origin")):
            self.set_header("Access-Control-Allow-Methods", CorsPolicy.ALLOW_METHODS)
            self.set_header("Access-Control-Allow-Headers", self.state.cors.allow_headers(
                self.request.headers.get("Access-Control-Request-Headers")))
            self.set_header("Access-Control-Max-Age", CorsPolicy.MAX_AGE)
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
        origin = self.request.headers.get("Origin")
        if self.state.cors.allowed(origin):
            assert origin is not None
            self.set_header("Access-Control-Allow-Origin", origin)
            self.add_header("Vary", "Origin")
        self.response_log = _json.encode(mapper.envelope(exc))
        self.finish(self.response_log)

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

    def prepare(self) -> None:
        super().prepare()
        raise mapper.NotFound(f"Unknown request URL: {self.request.method} {self.request.path}. "
                               f"The API lives under {self.state.settings.api_prefix or '/'}.")
