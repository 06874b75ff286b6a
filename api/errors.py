"""The one error mapper: typed exceptions -> HTTP status + the OpenAI error envelope.

``{"error": {"message", "type", "param", "code"}}`` — for every error, from every handler,
before or during a stream. Nothing here looks at message text.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hearth.scheduler import errors as e

# exception class -> (HTTP status, OpenAI error type, code)
_MAP: dict[type[e.HearthError], tuple[int, str, str | None]] = {
    e.InvalidRequest: (400, "invalid_request_error", None),
    e.ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    e.Unauthorized: (401, "invalid_request_error", "invalid_api_key"),
    e.ForbiddenHost: (403, "permission_error", "untrusted_host"),
    e.ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    e.NotFound: (404, "invalid_request_error", "unknown_url"),
    e.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
    e.PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
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
            return _MAP[cls]  # type: ignore[index]
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
        return e.NotFound(reason)
    if status == 413:
        return e.PayloadTooLarge(reason)
    if status == 405:
        return e.MethodNotAllowed(reason)
    if 400 <= status < 500:
        return e.InvalidRequest(reason)
    return e.InternalError(reason)
