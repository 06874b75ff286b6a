"""Property tests on the OpenAI HTTP types (api/openai_types.py), the decode path the handlers
run, the served OpenAPI document (api/openapi.py) and the error mapper (api/errors.py). No
server: seconds.

- Any JSON value, or any object built from the real field names, is either a request (which
  then crosses the ZeroMQ wire as msgpack) or an ``InvalidRequest``; for an object, its
  ``param`` names one of the request's fields. Nothing else is ever raised.
- The document and the validation agree on every such body: what one accepts, so does the other.
- Valid requests round-trip through JSON.
- Every error, typed or from Tornado, maps to a status and the exact OpenAI envelope.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hearth.api import errors as mapper
from hearth.api import openai_types, openapi
from hearth.scheduler import errors
from hearth.scheduler.messages import ChatJob, Codec, EmbedJob
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("HEARTH_FUZZ_EXAMPLES", "300"))
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])

CHAT_FIELDS = set(openai_types.ChatCompletionRequest.__struct_fields__)
EMBEDDING_FIELDS = set(openai_types.EmbeddingRequest.__struct_fields__)
FIELD_NAMES = sorted(CHAT_FIELDS | EMBEDDING_FIELDS | set(openai_types.Message.__struct_fields__)
                     | set(openai_types.ContentPart.__struct_fields__) | {"include_usage"})

# ---- strategies -------------------------------------------------------------------------------

# Whole floats are left out: JSON Schema counts 2.0 as an integer, hearth reads it as a float
# (see tests/fuzz/test_openapi_fuzz.py); everything else must agree.
floats = st.floats(-1e6, 1e6).map(lambda f: f + 0.5 if f.is_integer() else f) | st.sampled_from(
    [1e-300, -1e-300, 2.0000001, -2.0000001, 100.5, -100.5, 1.5e300])
edge_ints = st.sampled_from([0, 1, -1, 2, 4, 100, 101, 2**31 - 1, 2**31, 2**63 - 1, 2**63,
                             -(2**63), -(2**63) - 1, 10**30])
edge_strings = st.sampled_from(["", "tiny", "text", "image_url", "float", "base64", "[DONE]",
                                "0", "0001", "2147483647", "2147483648", "00000000001", "-5",
                                "1_000", "٣", "5\n", "x" * 256, "x" * 257, *openai_types.ROLES])
scalars = (st.none() | st.booleans() | st.integers() | edge_ints | floats | st.text(max_size=20)
           | edge_strings)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=15)
# Objects keyed by the real field names, so values reach every validator.
near_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), inner, max_size=6),
    max_leaves=12)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(openai_types.ROLES) | scalars},
    optional={"content": near_values, "name": scalars}), max_size=4)


def _request_like(required: dict[str, Any], fields: set[str]) -> Any:
    """The required fields (from the given strategies) and up to four others."""
    others = st.dictionaries(st.sampled_from(sorted(fields - set(required))), near_values,
                             max_size=4)
    return st.tuples(st.fixed_dictionaries(required), others).map(lambda p: {**p[1], **p[0]})


chat_like = _request_like({"model": st.text(max_size=8) | scalars,
                           "messages": messages | near_values}, CHAT_FIELDS)
embedding_like = _request_like({"model": st.text(max_size=8) | scalars,
                                "input": near_values}, EMBEDDING_FIELDS)


def _token_key(n: int, zeros: int) -> str:
    return ("0" * zeros + str(n))[-10:] if zeros else str(n)


text = st.text(max_size=30)
valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(openai_types.ROLES)},
    optional={"content": st.none() | text | st.lists(
        st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=3),
        "name": st.none() | text})
stop_string = st.text(max_size=openai_types.MAX_STOP_LENGTH)
valid_chat = st.fixed_dictionaries(
    {"model": text, "messages": st.lists(valid_message, min_size=1, max_size=5)},
    optional={
        "max_tokens": st.none() | st.integers(1, 2**63 - 1),
        "max_completion_tokens": st.none() | st.integers(1, 2**63 - 1),
        "temperature": st.none() | st.floats(0, 2),
        "top_p": st.none() | st.floats(0, 1, exclude_min=True),
        "top_k": st.none() | st.integers(0, 2**63 - 1),
        "min_p": st.none() | st.floats(0, 1),
        "frequency_penalty": st.none() | st.floats(-2, 2),
        "presence_penalty": st.none() | st.floats(-2, 2),
        "logit_bias": st.none() | st.dictionaries(
            st.builds(_token_key, st.integers(0, openai_types.INT32_MAX), st.integers(0, 3)),
            st.floats(-100, 100), max_size=5),
        "stop": st.none() | stop_string | st.lists(stop_string, max_size=openai_types.MAX_STOP),
        "seed": st.none() | st.integers(-(2**63), 2**63 - 1),
        "n": st.none() | st.just(1),
        "stream": st.none() | st.booleans(),
        "stream_options": st.none() | st.fixed_dictionaries({}, optional={
            "include_usage": st.booleans()}),
        "user": st.none() | text,
        "x_unknown": json_values,  # harmless unknown fields are ignored
        "tools": st.none() | st.just([]),  # a refused field's neutral value (api/field_policy)
    })
token_ids = st.integers(0, openai_types.INT32_MAX)
valid_embedding = st.fixed_dictionaries(
    {"model": text,
     "input": st.text(min_size=1) | st.lists(st.text(min_size=1), min_size=1, max_size=5)
     | st.lists(token_ids, min_size=1, max_size=5)
     | st.lists(st.lists(token_ids, min_size=1, max_size=4), min_size=1, max_size=4)},
    optional={"encoding_format": st.sampled_from(["float", "base64"]),
              "dimensions": st.none() | st.integers(1, 10**6), "user": st.none() | text})

# ---- the decode path, as the handlers run it -----------------------------------------------------


def chat_path(raw: bytes) -> ChatJob:
    req = openai_types.parse_chat_request(raw)
    return ChatJob("rid", "frontend", "key", req.model, openai_types.chat_messages(req),
                   openai_types.requested_sampling(req))


def embedding_path(raw: bytes) -> EmbedJob:
    req = openai_types.parse_embedding_request(raw)
    texts, tokens = openai_types.embedding_inputs(req)
    return EmbedJob("rid", "frontend", "key", req.model, texts, tokens)


def outcome(path: Any, value: Any, fields: set[str]) -> ChatJob | EmbedJob | None:
    """The job a body becomes, or None for an InvalidRequest (any other exception fails)."""
    try:
        job = path(json.dumps(value).encode())
    except errors.InvalidRequest as exc:
        assert exc.message
        if isinstance(value, dict):
            assert exc.param is not None, exc.message
            root = exc.param.split(".")[0].split("[")[0]
            assert root in fields, (exc.param, exc.message)
        return None
    # Whatever validation accepts crosses the ZeroMQ wire.
    assert CODEC.to_scheduler.decode(CODEC.encode(job)) == job
    return job


CODEC = Codec()
_DOC = openapi.build("/v1", "0")


def _validator(name: str) -> Any:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": _DOC["components"]})


CHAT_DOC = _validator("ChatCompletionRequest")
EMBEDDING_DOC = _validator("EmbeddingRequest")


# ---- properties ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(value=json_values | chat_like)
def test_any_json_is_a_chat_request_or_invalid(value: Any) -> None:
    accepted = outcome(chat_path, value, CHAT_FIELDS) is not None
    event(f"accepted: {accepted}")
    assert accepted == CHAT_DOC.is_valid(value), "the document and the validation disagree"


@PROPERTY_SETTINGS
@given(value=json_values | embedding_like)
def test_any_json_is_an_embedding_request_or_invalid(value: Any) -> None:
    accepted = outcome(embedding_path, value, EMBEDDING_FIELDS) is not None
    event(f"accepted: {accepted}")
    assert accepted == EMBEDDING_DOC.is_valid(value), "the document and the validation disagree"


def _nested(depth: int, where: str) -> bytes:
    inner = b"[" * depth + b"]" * depth
    if where == "top":
        return inner
    if where == "unknown":
        return b'{"model": "m", "extra": ' + inner + b"}"
    return b'{"model": "m", "' + where.encode() + b'": ' + inner + b"}"


def _in_a_string(junk: bytes, field: str) -> bytes:
    body = {"model": "m", "input": "x", "messages": [{"role": "user", "content": "c"}],
            field: "\x00"}
    return json.dumps(body).encode().replace(b"\\u0000", junk)


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=200) | st.builds(
    _nested, st.integers(1, 50_000), st.sampled_from(["top", "unknown", "messages", "input"]))
    | st.builds(_in_a_string, st.binary(max_size=8), st.sampled_from(["model", "input", "user",
                                                                      "unknown"])))
def test_any_bytes_are_a_request_or_invalid(raw: bytes) -> None:
    for path in (chat_path, embedding_path):
        try:
            path(raw)
        except errors.InvalidRequest as exc:
            assert exc.message


@PROPERTY_SETTINGS
@given(body=valid_chat)
def test_valid_chat_requests_round_trip(body: dict[str, Any]) -> None:
    assert CHAT_DOC.is_valid(body)
    raw = json.dumps(body).encode()
    req = openai_types.parse_chat_request(raw)
    assert openai_types.parse_chat_request(msgspec.json.encode(req)) == req
    job = outcome(chat_path, body, CHAT_FIELDS)
    assert job is not None and job.model == body["model"]
    assert len(job.messages) == len(body["messages"])
    if body.get("max_completion_tokens") is not None:
        assert job.params.max_tokens == body["max_completion_tokens"]
    elif body.get("max_tokens") is not None:
        assert job.params.max_tokens == body["max_tokens"]
    assert job.params.logit_bias == {int(k): v for k, v in (body.get("logit_bias") or {}).items()}


@PROPERTY_SETTINGS
@given(body=valid_embedding)
def test_valid_embedding_requests_round_trip(body: dict[str, Any]) -> None:
    assert EMBEDDING_DOC.is_valid(body)
    req = openai_types.parse_embedding_request(json.dumps(body).encode())
    assert openai_types.parse_embedding_request(msgspec.json.encode(req)) == req
    job = outcome(embedding_path, body, EMBEDDING_FIELDS)
    assert job is not None
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if isinstance(inputs[0], str):
        assert job.texts == inputs and job.tokens == []
    elif isinstance(inputs[0], int):
        assert job.tokens == [inputs] and job.texts == []
    else:
        assert job.tokens == inputs and job.texts == []


# ---- the error mapper ---------------------------------------------------------------------------

# those that cross a process and the api's HTTP-only ones
ERROR_CLASSES = [cls for module in (errors, mapper) for cls in vars(module).values()
                 if isinstance(cls, type) and issubclass(cls, errors.HearthError)]


def assert_envelope(exc: errors.HearthError) -> int:
    status = mapper.status_of(exc)
    assert 400 <= status < 600
    body = json.loads(msgspec.json.encode(mapper.envelope(exc)))
    assert body == {"error": {"message": exc.message, "type": body["error"]["type"],
                              "param": exc.param, "code": body["error"]["code"]}}
    assert isinstance(body["error"]["type"], str)
    assert body["error"]["code"] is None or isinstance(body["error"]["code"], str)
    return status


@PROPERTY_SETTINGS
@given(cls=st.sampled_from(ERROR_CLASSES), message=st.text(), param=st.none() | st.text())
def test_every_typed_error_maps_to_the_envelope(cls: type[errors.HearthError], message: str,
                                                param: str | None) -> None:
    assert_envelope(cls(message, param=param))


@PROPERTY_SETTINGS
@given(kind=st.sampled_from([c.__name__ for c in ERROR_CLASSES]) | st.text(), message=st.text(),
       param=st.none() | st.text())
def test_errors_rebuilt_from_worker_events_map_to_the_envelope(kind: str, message: str,
                                                               param: str | None) -> None:
    assert_envelope(errors.rebuild(kind, message, param))  # type: ignore[arg-type]


@PROPERTY_SETTINGS
@given(status=st.integers(100, 599), reason=st.text())
def test_tornado_statuses_map_to_the_envelope(status: int, reason: str) -> None:
    mapped = assert_envelope(mapper.for_http_status(status, reason))
    assert (400 <= mapped < 500) == (400 <= status < 500)
