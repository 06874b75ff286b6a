"""Who may talk to a real ``hearth serve``: keys, Host header, CORS, and the error envelope for
everything that is refused (always ``{"error": {message, type, param, code}}``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Response, Server
from hearth.tools.cli import tiny_model

pytestmark = pytest.mark.integration

CHAT = {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
JSON = {"Content-Type": "application/json"}


def auth(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", **JSON, **extra}


def error_of(r: Response, status: int) -> dict[str, Any]:
    """The envelope of an error response, checked for shape and status."""
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    return err  # type: ignore[no-any-return]


# ---- API keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/tiny", None),
    ("POST", "/v1/chat/completions", CHAT),
])
def test_missing_key_is_401(server: Server, method: str, path: str, body: Any) -> None:
    err = error_of(server.request(method, path, body, headers=JSON), 401)
    assert err["code"] == "invalid_api_key"
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
])
@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": f"Bearer {API_KEY}x"},
    {"Authorization": f"Basic {API_KEY}"},
    {"X-Api-Key": "wrong-key"},
], ids=["wrong", "longer", "basic", "x-api-key-wrong"])
def test_wrong_key_is_401(server: Server, method: str, path: str, body: Any,
                          headers: dict[str, str]) -> None:
    err = error_of(server.request(method, path, body, headers={**JSON, **headers}), 401)
    assert err["code"] == "invalid_api_key"
    assert API_KEY not in err["message"]


def test_x_api_key_header_is_accepted(server: Server) -> None:
    r = server.request("GET", "/v1/models", headers={"X-Api-Key": API_KEY})
    assert r.status == 200, r.body
    r = server.chat(CHAT, headers={**JSON, "X-Api-Key": API_KEY})
    assert r.status == 200, r.body


def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    r = server.request("GET", "/v1/models", headers={"Authorization": f"bearer {API_KEY}"})
    assert r.status == 200, r.body


def test_health_needs_no_key(server: Server) -> None:
    r = server.health()
    assert r.status == 200, r.body
    assert r.json()["status"] == "ok"
    r = server.request("GET", "/v1/health", headers={})
    assert r.status == 200, r.body


# ---- models -----------------------------------------------------------------------------------


def _check_model(model: dict[str, Any], size: int) -> None:
    assert model["id"] == "tiny"
    assert model["object"] == "model"
    assert isinstance(model["owned_by"], str) and model["owned_by"]
    assert isinstance(model["created"], int) and model["created"] > 0
    facts = model["hearth"]
    assert facts["architecture"] == "llama"
    assert isinstance(facts["context_length"], int) and facts["context_length"] > 0
    assert facts["size_bytes"] == size
    assert facts["loaded"] is True
    # the KV cache of one slot at the default types, and where the CPU build runs the model
    assert (facts["kv_cache_type_k"], facts["kv_cache_type_v"]) == ("f16", "f16")
    assert isinstance(facts["kv_bytes_per_slot"], int) and facts["kv_bytes_per_slot"] > 0
    assert (facts["device"], facts["gpu_layers"]) == ("cpu", 0)
    assert facts["layers"] == tiny_model.N_LAYER


def test_list_models(server: Server) -> None:
    r = server.request("GET", "/v1/models")
    assert r.status == 200, r.body
    body = r.json()
    assert body["object"] == "list"
    (model,) = [m for m in body["data"] if m["id"] == "tiny"]
    _check_model(model, Path(server.models_dir, "tiny.gguf").stat().st_size)


def test_get_one_model(server: Server) -> None:
    r = server.request("GET", "/v1/models/tiny")
    assert r.status == 200, r.body
    _check_model(r.json(), Path(server.models_dir, "tiny.gguf").stat().st_size)


def test_unknown_model_on_get_is_404(server: Server) -> None:
    err = error_of(server.request("GET", "/v1/models/nope"), 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"
    assert "nope" in err["message"]


@pytest.mark.parametrize("model", ["nope", "../tiny", ".tiny", "tiny/x"])
def test_unknown_model_on_chat_is_404(server: Server, model: str) -> None:
    err = error_of(server.chat({**CHAT, "model": model}), 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"
    assert err["type"] == "invalid_request_error"


# ---- paths and methods ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/models"), ("GET", "/models"), ("GET", "/index.html"), ("GET", "/v1"),
    ("GET", "/v1/nope"), ("POST", "/v1/audio/speech"), ("POST", "/chat/completions"),
    ("GET", "/v1/models/tiny/extra"), ("DELETE", "/v1/nope"),
])
def test_unknown_paths_are_404_envelopes(server: Server, method: str, path: str) -> None:
    err = error_of(server.request(method, path, CHAT if method == "POST" else None), 404)
    assert err["code"] == "unknown_url"


def test_unknown_path_is_404_without_a_key_too(server: Server) -> None:
    err = error_of(server.request("GET", "/v2/models", headers={}), 404)
    assert err["code"] == "unknown_url"


def test_get_on_chat_completions_is_405(server: Server) -> None:
    err = error_of(server.request("GET", "/v1/chat/completions"), 405)
    assert err["code"] == "method_not_allowed"


def test_post_on_models_is_405(server: Server) -> None:
    err = error_of(server.request("POST", "/v1/models", {}), 405)
    assert err["code"] == "method_not_allowed"


# ---- Host header ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.com", "localhost.evil.com", "evil.com:1337",
                                  "127.0.0.1.nip.io", "[::1].evil.com"])
@pytest.mark.parametrize("path", ["/v1/models", "/health", "/v2/nope"])
def test_foreign_host_is_403(server: Server, host: str, path: str) -> None:
    err = error_of(server.request("GET", path, headers=auth(Host=host)), 403)
    assert err["type"] == "permission_error"
    assert err["code"] == "untrusted_host"


def test_foreign_host_is_403_before_auth(server: Server) -> None:
    r = server.request("GET", "/v1/models", headers={"Host": "evil.com"})
    assert error_of(r, 403)["code"] == "untrusted_host"


def test_foreign_host_chat_is_403(server: Server) -> None:
    err = error_of(server.chat(CHAT, headers=auth(Host="evil.com")), 403)
    assert err["code"] == "untrusted_host"


@pytest.mark.parametrize("host", ["localhost:1234", "localhost", "127.0.0.1", "[::1]:9",
                                  "LOCALHOST:1337"])
def test_loopback_hosts_pass(server: Server, host: str) -> None:
    r = server.request("GET", "/v1/models", headers=auth(Host=host))
    assert r.status == 200, r.body


# ---- CORS -------------------------------------------------------------------------------------


def preflight(server: Server, origin: str, path: str = "/v1/chat/completions") -> Response:
    return server.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def _names(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",")}


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:8080"])
def test_preflight_from_a_local_origin(server: Server, origin: str) -> None:
    r = preflight(server, origin)
    assert r.status == 204, r.body
    assert r.body == b""
    assert r.headers["access-control-allow-origin"] == origin
    assert {"authorization", "content-type"} <= _names(r.headers["access-control-allow-headers"])
    assert "post" in _names(r.headers["access-control-allow-methods"])
    assert "origin" in _names(r.headers.get("vary", ""))


def test_preflight_on_models(server: Server) -> None:
    r = preflight(server, "http://localhost:5173", "/v1/models")
    assert r.status == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost.evil.com"])
def test_preflight_from_a_foreign_origin(server: Server, origin: str) -> None:
    r = preflight(server, origin)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-headers" not in r.headers
    assert "access-control-allow-methods" not in r.headers


def test_allowed_origin_on_a_normal_request(server: Server) -> None:
    r = server.request("GET", "/v1/models", headers=auth(Origin="http://localhost:5173"))
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "origin" in _names(r.headers["vary"])


def test_allowed_origin_on_an_error(server: Server) -> None:
    # a browser app can read why it was refused
    r = server.request("GET", "/v1/models", headers={"Origin": "http://localhost:5173"})
    error_of(r, 401)
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_foreign_origin_on_a_normal_request(server: Server) -> None:
    r = server.request("GET", "/v1/models", headers=auth(Origin="http://evil.example"))
    assert r.status == 200  # the key is valid; the browser just may not read the answer
    assert "access-control-allow-origin" not in r.headers


def test_no_origin_no_cors_headers(server: Server) -> None:
    r = server.request("GET", "/v1/models")
    assert "access-control-allow-origin" not in r.headers


# ---- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b"", None),
    (b"[]", None),
    ({**CHAT, "max_tokens": "many"}, "max_tokens"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "temperature": 2.5}, "temperature"),
    ({**CHAT, "top_p": 0}, "top_p"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "n": 3}, "n"),  # more than the 2 slots
    ({**CHAT, "seed": 2**64}, "seed"),
    ({**CHAT, "logit_bias": {"x": 1}}, "logit_bias"),
    ({**CHAT, "messages": []}, "messages"),
    ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({**CHAT, "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": CHAT["messages"]}, "model"),
    ({**CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0].type"),
])
def test_bad_requests_are_400_with_param(server: Server, body: Any, param: str | None) -> None:
    err = error_of(server.chat(body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] is None


def test_unknown_fields_are_ignored(server: Server) -> None:
    # harmless ones, and refused ones with their neutral value (api/field_policy.py);
    # reasoning_effort "low" is now refused: no model here reasons on request
    r = server.chat({**CHAT, "tools": [], "logprobs": False, "metadata": {"x": "y"},
                     "reasoning_effort": None, "something_new": 1})
    assert r.status == 200, r.body


def _raw(server: Server, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_missing_or_empty_host_is_400(server: Server) -> None:
    for request in (b"GET /health HTTP/1.0\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
                    b"GET /v1/models HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n"):
        head, _, body = _raw(server, request).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400", head
        assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_in_the_envelope(server: Server) -> None:
    body = b'{"model":"tiny","messages":[{"role":"user","content":"' + b"a" * (9 << 20) + b'"}]}'
    r = server.request("POST", "/v1/chat/completions", body)
    assert r.status == 413
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "--max-body" in err["message"]
    ok = server.chat({"model": "tiny", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "still fine"}]})
    assert ok.status == 200


def test_openapi_document(server: Server) -> None:
    assert server.request("GET", "/v1/openapi.json", headers={}).status == 401
    r = server.request("GET", "/v1/openapi.json")
    assert r.status == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/embeddings",
            "/health", "/metrics"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    temperature = chat["properties"]["temperature"]["anyOf"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0.0, 2.0)
    post = doc["paths"]["/v1/chat/completions"]["post"]
    for status in ("400", "401", "404", "503"):
        assert post["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"}
    assert "ErrorBody" in schemas
