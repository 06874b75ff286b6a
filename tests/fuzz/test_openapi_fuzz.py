"""Fuzz the HTTP API of a real server on the tiny model: schemathesis generates requests from
the server's own OpenAPI document (GET /v1/openapi.json), and hypothesis throws raw garbage at
it through a plain HTTP client.

What must hold for every request: no 5xx; the status is one the document lists for that
operation, with the documented content type and body schema; every error body is the OpenAI
envelope; a request that fits the document is served, unless it names an unknown model or asks
for what only the model can refuse (a prompt longer than the context, token ids outside the
vocabulary, other embedding dimensions); one that does not fit is refused with a 4xx. After the
run every process the server started is still alive and a normal chat request succeeds.

``HEARTH_FUZZ_EXAMPLES`` (default 300) sets the examples per operation and generation mode, and
per garbage test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from harness import Server, alive, api_accepts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis import checks as sc

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("HEARTH_FUZZ_EXAMPLES", "300"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])

OPERATIONS = ["listModels", "retrieveModel", "createChatCompletion", "createCompletion",
              "createEmbedding", "tokenize", "detokenize", "health", "metrics", "webLive",
              "webSettings"]
# /health has no parameters, body or key: there is nothing to make invalid.
CASES = [(op, mode) for op in OPERATIONS for mode in GenerationMode
         if not (op == "health" and mode is GenerationMode.NEGATIVE)]

ERROR_FIELDS = {"message", "type", "param", "code"}


def assert_envelope(status: int, body: bytes) -> dict[str, Any]:
    """The OpenAI error envelope, exactly; returns its ``error`` object."""
    data = json.loads(body)
    assert isinstance(data, dict) and set(data) == {"error"}, (status, body)
    err = data["error"]
    assert isinstance(err, dict) and set(err) == ERROR_FIELDS, (status, body)
    assert isinstance(err["message"], str) and err["message"], (status, body)
    assert isinstance(err["type"], str), (status, body)
    assert err["param"] is None or isinstance(err["param"], str), (status, body)
    assert err["code"] is None or isinstance(err["code"], str), (status, body)
    return err


def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """schemathesis check: every error answer is the OpenAI envelope."""
    if response.status_code >= 400:
        assert_envelope(response.status_code, response.content)


def endpoint_of(path: str) -> str:
    """The api_accepts name of a POST path of the document."""
    last = path.rsplit("/", 1)[-1]
    return "chat" if path.endswith("/chat/completions") else last


def schema_valid_is_served(ctx: Any, response: schemathesis.Response,
                           case: schemathesis.Case) -> None:
    """schemathesis check: a request that fits the document is answered 200, except for what
    only the models know: which exist (404), and what one of them can take (a 400 for a prompt
    beyond its context, token ids beyond its vocabulary, other embedding dimensions) — those
    come after the api's validation, which must have accepted the body."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    status = response.status_code
    if status == 200:
        return
    err = assert_envelope(status, response.content)
    allowed = (status == 404 and err["code"] == "model_not_found") or (
        status == 400 and case.operation.method.upper() == "POST"
        and api_accepts(endpoint_of(case.operation.path), case.body))
    assert allowed, f"a schema-valid request was refused: {status} {err}"


def negative_data_rejection(ctx: Any, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    """schemathesis's check, with 413 counted as a rejection: a negative case that breaks a
    ``maxItems`` may grow its body past --max-body, and "too large" is then the right refusal
    (schemathesis's default list of rejection statuses leaves 413 out)."""
    if response.status_code == 413:
        return None
    return sc.negative_data_rejection(ctx, response, case)


CHECKS = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
          sc.response_headers_conformance, sc.response_schema_conformance,
          negative_data_rejection, error_envelope, schema_valid_is_served]


@pytest.fixture(scope="module")
def schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json",
                                         headers=server.headers(), timeout=30)


def _aim_at_the_model(case: schemathesis.Case, model: str) -> None:
    """Name the served model, so that the request gets past the model lookup (an unknown name is
    a 404 that would hide whether the rest was accepted). A `model` that is not a string stays:
    it may be what a negative case is about."""
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = model
    if case.path_parameters and isinstance(case.path_parameters.get("model"), str):
        case.path_parameters["model"] = model


def _negates_headers(case: schemathesis.Case) -> bool:
    """Whether the headers are what this case makes invalid (here: the bearer key)."""
    components = case.meta.components if case.meta is not None else {}
    return any(location.value == "header" and info.mode.is_negative
               for location, info in components.items())


def _plain_integers(value: Any) -> Any:
    """Whole floats as integers. JSON Schema counts `2.0` as an integer and schemathesis sends
    it so; hearth, like msgspec, reads a JSON number with a fraction part as a float and refuses
    it where an integer is due (400). That choice is the server's, not a lie of the document, so
    positive cases spell their integers plainly."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_plain_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_integers(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("operation_id", "mode"), CASES,
                         ids=[f"{op}-{mode.value}" for op, mode in CASES])
def test_operation(server: Server, schema: schemathesis.BaseSchema, operation_id: str,
                   mode: GenerationMode) -> None:
    operation = schema.find_operation_by_id(operation_id)
    base_url = f"http://127.0.0.1:{server.port}"
    key = {"Authorization": f"Bearer {server.api_key}"}
    # Invalid cases of an operation with a body break the body (the key is fixed); the others
    # have only the key to break.
    fixed = {"headers": key} if mode is GenerationMode.NEGATIVE and operation.method == "post" \
        else {}
    statuses: Counter[int] = Counter()

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode, **fixed), aim=st.integers(0, 3))
    def run(case: schemathesis.Case, aim: int) -> None:
        if mode is GenerationMode.POSITIVE:
            case.body = _plain_integers(case.body)
        if aim < 3 or mode is GenerationMode.NEGATIVE:  # a quarter of valid ones: unknown models
            _aim_at_the_model(case, server.model)
        # The real key, unless the key is what this case gets wrong.
        response = case.call(base_url=base_url, headers={} if _negates_headers(case) else key,
                             timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    run()
    total = sum(statuses.values())
    print(f"{operation_id} {mode.value}: {total} requests, statuses {sorted(statuses.items())}")
    assert total > 0  # /health has only a handful of distinct requests; the others, EXAMPLES


# ---- raw garbage through a plain HTTP client -------------------------------------------------

BODY_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/tokenize",
              "/v1/detokenize", "/v1/responses"]
ALL_PATHS = [*BODY_PATHS, "/v1/models", "/v1/models/tiny", "/v1/models/ti%00ny",
             "/v1/models/%ff", "/v1/models/..%2ftiny", "/v1/openapi.json", "/health", "/metrics",
             "/v1", "/", "/v2/chat/completions", "/v1/chat/completions/x", "/web/app.js",
             "/web/..%2fapp.py", "/web/api/live", "/web/api/settings", "/v1/responses/resp_x",
             "/v1/responses/resp_x/input_items", "/v1/responses/%00/input_items?limit=0"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
chat_keys = st.sampled_from(["model", "messages", "role", "content", "type", "text", "stop",
                             "max_tokens", "temperature", "logit_bias", "stream", "n", "seed",
                             "input", "encoding_format", "dimensions", "stream_options",
                             "prompt", "suffix", "echo", "best_of", "tokens", "add_special",
                             "with_pieces", "instructions", "tools", "name", "call_id",
                             "output", "arguments", "previous_response_id", "format",
                             "max_output_tokens", "truncation", "tool_choice", "store"])
# Objects whose keys are the real field names, so the values reach the validators.
near_requests = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["tiny", "ti\x00ny", "../tiny", "user", "text"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(chat_keys, inner, max_size=6),
    max_leaves=25)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"model": "tiny", "messages": ' + b"[" * depth + b"]" * depth + b"}"


garbage = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_requests.map(lambda v: json.dumps(v).encode()),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["array", "object", "field"])),
    st.binary(max_size=50).map(lambda b: b'{"model": "tiny", "messages": [' + b),
    st.binary(max_size=50).map(  # bytes inside a string: not always UTF-8
        lambda b: b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b + b'"}]}'),
)


@FUZZ_SETTINGS
@given(body=garbage, path=st.sampled_from(BODY_PATHS), content_type=st.sampled_from(CONTENT_TYPES))
def test_garbage_bodies(server: Server, body: bytes, path: str, content_type: str) -> None:
    headers = server.headers()
    if content_type:
        headers["Content-Type"] = content_type
    else:
        del headers["Content-Type"]
    r = server.request("POST", path, body, headers=headers, timeout=60)
    assert r.status < 500, (r.status, body[:200], r.body[:300])
    if r.status >= 400:  # (a few of these bodies happen to be valid requests)
        assert_envelope(r.status, r.body)


@FUZZ_SETTINGS
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
       path=st.sampled_from(ALL_PATHS), body=st.none() | st.binary(max_size=64),
       key=st.sampled_from(["good", "none", "wrong"]))
def test_methods_paths_and_keys(server: Server, method: str, path: str, body: bytes | None,
                                key: str) -> None:
    headers = server.headers()
    if key == "none":
        del headers["Authorization"]
    elif key == "wrong":
        headers["Authorization"] = "Bearer not-the-key"
    r = server.request(method, path, body, headers=headers, timeout=60)
    assert r.status < 500, (method, path, r.status, r.body[:300])
    if r.status >= 400 and method != "HEAD":
        assert_envelope(r.status, r.body)


# ---- Anthropic's Messages routes: their own envelope -------------------------------------------

MESSAGES_PATHS = ["/v1/messages", "/v1/messages/count_tokens"]
messages_keys = st.sampled_from(["model", "max_tokens", "messages", "role", "content", "type",
                                 "text", "id", "name", "input", "tool_use_id", "is_error",
                                 "system", "tools", "input_schema", "tool_choice",
                                 "stop_sequences", "stream", "temperature", "top_k",
                                 "output_config", "format", "schema", "thinking"])
near_messages = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["tiny", "user", "assistant", "text", "tool_use", "tool_result", "image",
                       "object", "any", "tool", "auto"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(messages_keys, inner,
                                                                 max_size=6),
    max_leaves=30)


def assert_anthropic_envelope(status: int, body: bytes) -> None:
    data = json.loads(body)
    assert isinstance(data, dict) and set(data) == {"type", "error"}, (status, body)
    assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, (status, body)
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]


@FUZZ_SETTINGS
@given(body=st.one_of(garbage, near_messages.map(lambda v: json.dumps(v).encode())),
       path=st.sampled_from(MESSAGES_PATHS), key=st.sampled_from(["good", "none", "wrong"]))
def test_messages_garbage_bodies(server: Server, body: bytes, path: str, key: str) -> None:
    headers = server.headers()
    if key == "none":
        del headers["Authorization"]
    elif key == "wrong":
        headers["Authorization"] = "Bearer not-the-key"
    r = server.request("POST", path, body, headers=headers, timeout=60)
    assert r.status < 500, (r.status, body[:200], r.body[:300])
    if r.status >= 400:
        assert_anthropic_envelope(r.status, r.body)
    elif r.headers.get("content-type", "").startswith("application/json"):
        assert isinstance(json.loads(r.body), dict)


def anthropic_error_envelope(ctx: Any, response: schemathesis.Response,
                             case: schemathesis.Case) -> None:
    """schemathesis check: every error answer of a Messages route is Anthropic's envelope."""
    if response.status_code >= 400:
        assert_anthropic_envelope(response.status_code, response.content)


def messages_valid_is_served_or_refused(ctx: Any, response: schemathesis.Response,
                                        case: schemathesis.Case) -> None:
    """schemathesis check: a Messages request that fits the document is answered 200, or
    refused with a 400 (the rules across blocks and messages, such as a ``tool_result`` that
    answers no earlier ``tool_use``, which the document does not state) or the unknown
    model's 404 — never anything else."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    assert response.status_code in (200, 400, 404), response.status_code


MESSAGES_CHECKS = [sc.not_a_server_error, sc.status_code_conformance,
                   sc.content_type_conformance, sc.response_schema_conformance,
                   negative_data_rejection, anthropic_error_envelope,
                   messages_valid_is_served_or_refused]
MESSAGES_CASES = [(op, mode) for op in ("createMessage", "countMessageTokens")
                  for mode in GenerationMode]


@pytest.mark.parametrize(("operation_id", "mode"), MESSAGES_CASES,
                         ids=[f"{op}-{mode.value}" for op, mode in MESSAGES_CASES])
def test_messages_operation(server: Server, schema: schemathesis.BaseSchema, operation_id: str,
                            mode: GenerationMode) -> None:
    """As :func:`test_operation`, for Anthropic's Messages routes and their envelope. Never
    streamed here (schemathesis reads a body as one JSON document)."""
    operation = schema.find_operation_by_id(operation_id)
    key = {"Authorization": f"Bearer {server.api_key}"}
    statuses: Counter[int] = Counter()

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode, headers=key))
    def run(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            # (only valid cases are changed: a negative one's fault may be in these fields)
            case.body = _plain_integers(case.body)
            case.body.pop("stream", None)
            if isinstance(case.body.get("max_tokens"), int) and case.body["max_tokens"] > 8:
                case.body["max_tokens"] = 8  # the answer's shape is checked, not its length
        _aim_at_the_model(case, server.model)
        response = case.call(base_url=f"http://127.0.0.1:{server.port}", headers=key,
                             timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=MESSAGES_CHECKS)

    run()
    print(f"{operation_id} {mode.value}: {sum(statuses.values())} requests, statuses "
          f"{sorted(statuses.items())}")
    assert sum(statuses.values()) > 0


# ---- afterwards ------------------------------------------------------------------------------


def test_the_server_is_unharmed(server: Server) -> None:
    assert server.proc is not None and server.proc.poll() is None
    assert server.children and all(alive(pid) for pid in server.children)
    r = server.chat({"model": server.model, "max_tokens": 8,
                     "messages": [{"role": "user", "content": "Hello"}]})
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] > 0
    r = server.request("POST", "/v1/embeddings", {"model": server.model, "input": "Hello"})
    assert r.status == 200, r.body
    log = "".join(server.stderr)
    assert not any(line.startswith("Traceback (most recent call last)")
                   for line in server.stderr), log[-5000:]
