"""The one error mapper: typed exceptions -> HTTP status + the OpenAI error envelope.

``{"error": {"message", "type", "param", "code"}}`` — for every error, from every handler,
before or during a stream. Nothing here looks at message text.

The errors that can cross a process are in scheduler/errors.py; those only the api raises (they
are about the HTTP request itself) are defined here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hearth.scheduler import errors as e


class NotFound(e.HearthError):
    """A path that is not an endpoint."""

    @classmethod
    def unknown_path(cls, method: str, path: str, prefix: str) -> NotFound:
        """The 404 for ``method path``. Under the API ``prefix`` ("/v1", or "" for the root)
        the endpoint does not exist; elsewhere the likely mistake is the prefix, so say it."""
        if not prefix or path == prefix or path.startswith(prefix + "/"):
            return cls(f"Unknown request URL: {method} {path}. This endpoint does not exist on "
                       f"this server; GET {prefix}/openapi.json lists the endpoints.")
        return cls(f"Unknown request URL: {method} {path}. The API lives under {prefix}.")


class ResponseNotFound(e.HearthError):
    """A stored response (Responses API) that does not exist for this API key: never stored,
    deleted, evicted, or another key's (the same answer for each, so that a key learns nothing
    of another's ids)."""

    @classmethod
    def with_id(cls, response_id: str, param: str | None = None) -> ResponseNotFound:
        what = "Previous response" if param else "Response"
        return cls(f"{what} with id '{response_id}' not found.", param=param)


class MethodNotAllowed(e.HearthError):
    pass


class Unauthorized(e.HearthError):
    pass


class ForbiddenHost(e.HearthError):
    pass


class PayloadTooLarge(e.HearthError):
    pass


class RequestTimeout(e.HearthError):
    """The request body stopped arriving for --body-timeout (the connection is then closed)."""


class HeadersTooLarge(e.HearthError):
    """The request headers are over api.http_server.MAX_HEADER_BYTES (RFC 6585 §5: 431)."""


# exception class -> (HTTP status, OpenAI error type, code); tests/unit/test_error_mapper.py
# fails if a class of either module is missing here.
_MAP: dict[type[e.HearthError], tuple[int, str, str | None]] = {
    e.InvalidRequest: (400, "invalid_request_error", None),
    e.ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    Unauthorized: (401, "invalid_request_error", "invalid_api_key"),
    ForbiddenHost: (403, "permission_error", "untrusted_host"),
    e.ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    NotFound: (404, "invalid_request_error", "unknown_url"),
    ResponseNotFound: (404, "invalid_request_error", "response_not_found"),
    MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
    RequestTimeout: (408, "invalid_request_error", "request_timeout"),
    PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    HeadersTooLarge: (431, "invalid_request_error", "request_header_too_large"),
    e.ModelLoadFailed: (500, "server_error", "model_load_failed"),
    e.WorkerDied: (502, "server_error", "worker_died"),
    e.Overloaded: (503, "server_error", "server_overloaded"),
    e.ShuttingDown: (503, "server_error", "shutting_down"),
    e.InternalError: (500, "server_error", "internal_error"),
}

RETRY_AFTER_S = 1


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


def status_of(exc: e.HearthError) -> int:
    return _lookup(exc)[0]


def _lookup(exc: e.HearthError) -> tuple[int, str, str | None]:
    for cls in type(exc).__mro__:
        if cls in _MAP:
            return _MAP[cls]
    return _MAP[e.InternalError]


def envelope(exc: e.HearthError) -> ErrorEnvelope:
    _, kind, code = _lookup(exc)
    return ErrorEnvelope(ErrorBody(exc.message, kind, exc.param, code))


def headers_for(exc: e.HearthError) -> dict[str, Any]:
    """Extra headers an error carries (Retry-After tells the official SDKs to retry)."""
    if isinstance(exc, (e.Overloaded, e.ShuttingDown)):
        return {"Retry-After": str(RETRY_AFTER_S)}
    return {}


def for_http_status(status: int, reason: str) -> e.HearthError:
    """Tornado's own errors (405, 413 from its body limit...) as typed errors."""
    if status == 404:
        return NotFound(reason)
    if status == 413:
        return PayloadTooLarge(reason)
    if status == 405:
        return MethodNotAllowed(reason)
    if 400 <= status < 500:
        return e.InvalidRequest(reason)
    return e.InternalError(reason)


# ---- Anthropic's envelope (the Messages API's routes) ------------------------------------------

# Anthropic's error ``type`` for each HTTP status hearth answers with (source: Anthropic's API
# reference, "Errors": 400 invalid_request_error, 401 authentication_error, 403
# permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
# api_error, 529 overloaded_error). The status stays hearth's own (a full queue is 503, not
# 529), so every route answers one error with one status; only the body's shape differs.
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    503: "overloaded_error",
}


class AnthropicErrorBody(msgspec.Struct):
    type: str
    message: str


class AnthropicErrorEnvelope(msgspec.Struct, tag="error", tag_field="type"):
    """``{"type": "error", "error": {"type", "message"}}``: Anthropic's error body, and the
    data of a stream's ``event: error``."""

    error: AnthropicErrorBody


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP ``status``: the table above, else
    ``invalid_request_error`` for another 4xx and ``api_error`` for a 5xx."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_envelope(exc: e.HearthError) -> AnthropicErrorEnvelope:
    return AnthropicErrorEnvelope(AnthropicErrorBody(anthropic_type(status_of(exc)), exc.message))
