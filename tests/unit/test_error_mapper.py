"""The one error mapper (api/errors.py) over the typed errors of scheduler/errors.py and the
api's own HTTP-only errors."""

from __future__ import annotations

import json

import msgspec
import pytest
from hearth.api import errors as mapper
from hearth.scheduler import errors as e

# class -> (status, type, code), as documented for clients
EXPECTED: dict[type[e.HearthError], tuple[int, str, str | None]] = {
    e.InvalidRequest: (400, "invalid_request_error", None),
    e.ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    mapper.Unauthorized: (401, "invalid_request_error", "invalid_api_key"),
    mapper.ForbiddenHost: (403, "permission_error", "untrusted_host"),
    e.ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    mapper.NotFound: (404, "invalid_request_error", "unknown_url"),
    mapper.ResponseNotFound: (404, "invalid_request_error", "response_not_found"),
    mapper.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
    mapper.RequestTimeout: (408, "invalid_request_error", "request_timeout"),
    mapper.PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    mapper.HeadersTooLarge: (431, "invalid_request_error", "request_header_too_large"),
    e.Overloaded: (503, "server_error", "server_overloaded"),
    e.WorkerDied: (502, "server_error", "worker_died"),
    e.ModelLoadFailed: (500, "server_error", "model_load_failed"),
    e.ShuttingDown: (503, "server_error", "shutting_down"),
    e.InternalError: (500, "server_error", "internal_error"),
}
ALL = list(EXPECTED)


def _defined_in(module: object) -> set[type[e.HearthError]]:
    return {cls for cls in vars(module).values()
            if isinstance(cls, type) and issubclass(cls, e.HearthError)
            and cls is not e.HearthError}


def test_every_error_class_is_covered() -> None:
    defined = _defined_in(e) | _defined_in(mapper)
    assert defined == set(EXPECTED)


def test_every_error_class_has_its_own_mapping() -> None:
    # not only through a parent: a new class must be given its status, type and code
    defined = _defined_in(e) | _defined_in(mapper)
    missing = {cls.__name__ for cls in defined if cls not in mapper._MAP}
    assert not missing, f"no HTTP mapping in api/errors.py for {sorted(missing)}"


def test_http_only_errors_do_not_cross_a_process() -> None:
    # they live in api/ and declare no kind of their own
    for cls in _defined_in(mapper):
        assert cls not in e.cross_process_classes()
        assert "kind" not in vars(cls)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_status_type_code(cls: type[e.HearthError]) -> None:
    status, kind, code = EXPECTED[cls]
    exc = cls("something went wrong", param="p")
    assert mapper.status_of(exc) == status
    env = mapper.envelope(exc)
    assert env.error.type == kind
    assert env.error.code == code
    assert env.error.message == "something went wrong"
    assert env.error.param == "p"


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_envelope_encodes_to_exactly_the_openai_shape(cls: type[e.HearthError]) -> None:
    status, kind, code = EXPECTED[cls]
    raw = msgspec.json.encode(mapper.envelope(cls("msg")))
    assert json.loads(raw) == {"error": {"message": "msg", "type": kind, "param": None,
                                         "code": code}}


def test_param_is_kept() -> None:
    raw = msgspec.json.encode(mapper.envelope(e.InvalidRequest("bad", param="messages[0].role")))
    assert json.loads(raw)["error"]["param"] == "messages[0].role"


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_retry_after_only_when_retrying_helps(cls: type[e.HearthError]) -> None:
    headers = mapper.headers_for(cls("x"))
    if cls in (e.Overloaded, e.ShuttingDown):
        assert headers == {"Retry-After": str(mapper.RETRY_AFTER_S)}
        assert int(headers["Retry-After"]) >= 1
    else:
        assert headers == {}


def test_overloaded_is_503_with_retry_after() -> None:
    exc = e.Overloaded("busy")
    assert mapper.status_of(exc) == 503
    assert "Retry-After" in mapper.headers_for(exc)


def test_subclass_maps_like_its_parent() -> None:
    class VeryLong(e.ContextLengthExceeded):
        pass

    exc = VeryLong("too long")
    assert mapper.status_of(exc) == 400
    assert mapper.envelope(exc).error.code == "context_length_exceeded"


def test_unmapped_hearth_error_is_internal() -> None:
    exc = e.HearthError("?")
    assert mapper.status_of(exc) == 500
    assert mapper.envelope(exc).error.code == "internal_error"


def test_mapping_never_reads_the_message() -> None:
    # a message that looks like another error does not change the mapping
    exc = e.InvalidRequest("model_not_found: 404 Unauthorized invalid_api_key")
    assert mapper.status_of(exc) == 400
    assert mapper.envelope(exc).error.code is None


@pytest.mark.parametrize(("status", "cls"), [
    (404, mapper.NotFound), (405, mapper.MethodNotAllowed), (413, mapper.PayloadTooLarge),
    (400, e.InvalidRequest), (411, e.InvalidRequest), (500, e.InternalError),
    (502, e.InternalError),
])
def test_tornado_statuses(status: int, cls: type[e.HearthError]) -> None:
    exc = mapper.for_http_status(status, "reason")
    assert type(exc) is cls
    assert exc.message == "reason"
    if status < 500:
        assert mapper.status_of(exc) == status or cls is e.InvalidRequest


# ---- Anthropic's envelope (the Messages routes) -----------------------------------------------

ANTHROPIC: dict[int, str] = {400: "invalid_request_error", 401: "authentication_error",
                             403: "permission_error", 404: "not_found_error",
                             405: "invalid_request_error", 408: "invalid_request_error",
                             413: "request_too_large", 431: "invalid_request_error",
                             500: "api_error", 502: "api_error", 503: "overloaded_error"}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_anthropic_envelope_of_every_error_kind(cls: type[e.HearthError]) -> None:
    from anthropic.types import ErrorResponse, ErrorType

    exc = cls("something is wrong", param="messages[0]")
    doc = json.loads(msgspec.json.encode(mapper.anthropic_envelope(exc)))
    status = EXPECTED[cls][0]
    assert doc == {"type": "error", "error": {"type": ANTHROPIC[status],
                                              "message": "something is wrong"}}
    # the SDK's own type of an error body (its Literal lacks request_too_large, which
    # Anthropic's error reference lists for 413)
    if ANTHROPIC[status] in ErrorType.__args__:
        assert ErrorResponse.model_validate(doc).to_dict() == doc


def test_anthropic_types_of_statuses_hearth_does_not_send() -> None:
    assert mapper.anthropic_type(429) == "rate_limit_error"
    assert mapper.anthropic_type(418) == "invalid_request_error"
    assert mapper.anthropic_type(504) == "api_error"
