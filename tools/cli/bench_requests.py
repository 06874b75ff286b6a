"""One benchmark request against any OpenAI-compatible server, timed: a streamed chat
completion (time to first content chunk, gaps between chunks), a streamed Responses API
response (the same, between output deltas), or an embeddings call, and the model list used to
pick a server's only model. Each request opens a fresh connection, as a
client that does not pool would. ``hearth bench`` (:mod:`hearth.tools.cli.bench`) runs them.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hearth.tools.cli.bench_report import RequestResult

__all__ = [
    "CHARS_PER_TOKEN",
    "Target",
    "chat_request",
    "embeddings_request",
    "error_kind",
    "list_models",
    "messages_request",
    "responses_extra",
    "responses_request",
    "sse_payloads",
]

CHARS_PER_TOKEN = 4  # the prompt-size estimate; the server's usage gives the real count


@dataclass(frozen=True)
class Target:
    """One server under test. ``url`` is the API base, e.g. http://127.0.0.1:1337/v1."""

    name: str
    url: str
    api_key: str | None
    model: str

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, parts.port, timeout=timeout)
        return http.client.HTTPConnection(host, parts.port, timeout=timeout)

    def path(self, suffix: str) -> str:
        return urlsplit(self.url).path.rstrip("/") + suffix

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h


def error_kind(status: int, reason: str, body: bytes) -> str:
    """"503 server_overloaded": the status and the OpenAI error code (or type), else the
    status and its reason phrase."""
    code = None
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
    except (ValueError, AttributeError):
        pass
    return f"{status} {code or reason}".strip()


def sse_payloads(resp: http.client.HTTPResponse, deadline: float) -> Iterator[bytes]:
    """Each server-sent event's data (lines joined), as it completes."""
    data: list[bytes] = []
    while True:
        if time.perf_counter() > deadline:
            raise TimeoutError
        line = resp.readline()
        if not line:
            if data:
                yield b"\n".join(data)
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        # comments (":…"), "event:", "id:" and "retry:" lines carry nothing we time


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") \
                or delta.get("tool_calls"):
            return True
    return False


def _take_usage(res: RequestResult, usage: dict[str, Any]) -> None:
    if isinstance(usage.get("prompt_tokens"), int):
        res.prompt_tokens = usage["prompt_tokens"]
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details.get("cached_tokens"), int):
        res.cached_tokens = details["cached_tokens"]


def _guard(res: RequestResult, t0: float, call: Callable[[], None]) -> RequestResult:
    """Run ``call`` and turn transport failures into error kinds; set the latency."""
    try:
        call()
    except TimeoutError:
        res.error = "timeout"
    except (OSError, http.client.HTTPException) as exc:
        res.error = f"connection {type(exc).__name__}"
    except (ValueError, KeyError, TypeError, AttributeError):
        res.error = "bad response"
    res.latency = time.perf_counter() - t0
    return res


class _Clock:
    """A stream's timing: the first token event's time (TTFT) and the gaps between the next."""

    def __init__(self, res: RequestResult, t0: float) -> None:
        self.res, self.t0, self.last, self.events = res, t0, 0.0, 0

    def tick(self) -> None:
        now = time.perf_counter()
        if self.res.ttft is None:
            self.res.ttft = now - self.t0
        else:
            self.res.gaps.append(now - self.last)
        self.last = now
        self.events += 1


def _post(target: Target, path: str, body: dict[str, Any], timeout: float, res: RequestResult,
          t0: float, read: Callable[[http.client.HTTPResponse], None],
          headers: dict[str, str] | None = None,
          error: Callable[[int, str, bytes], str] = error_kind) -> RequestResult:
    """POST ``body`` to ``path`` and hand a 200's response to ``read``; any other status is
    ``error``'s kind, a transport failure :func:`_guard`'s."""
    def call() -> None:
        conn = target.connection(timeout)
        try:
            conn.request("POST", target.path(path), body=json.dumps(body).encode(),
                         headers=headers or target.headers())
            resp = conn.getresponse()
            if resp.status != 200:
                res.error = error(resp.status, resp.reason, resp.read())
                return
            read(resp)
        finally:
            conn.close()

    return _guard(res, t0, call)


def chat_request(target: Target, messages: list[dict[str, str]], max_tokens: int,
                 extra: dict[str, Any], timeout: float) -> RequestResult:
    body = {"model": target.model, "messages": messages, "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **extra}
    res = RequestResult()
    t0 = time.perf_counter()
    clock = _Clock(res, t0)

    def read(resp: http.client.HTTPResponse) -> None:
        usage, done = None, False
        for payload in sse_payloads(resp, t0 + timeout):
            if payload == b"[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            if chunk.get("error"):
                err = chunk["error"]
                code = err.get("code") or err.get("type") if isinstance(err, dict) else None
                res.error = f"stream {code or 'error'}"
                return
            if _has_content(chunk):
                clock.tick()
            if chunk.get("usage"):
                usage = chunk["usage"]
        if not done:
            res.error = "incomplete stream"
        elif usage is not None and isinstance(usage.get("completion_tokens"), int):
            res.tokens = usage["completion_tokens"]
            _take_usage(res, usage)
        else:
            res.tokens, res.estimated = clock.events, True

    return _post(target, "/chat/completions", body, timeout, res, t0, read)


def responses_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Chat-shaped ``--extra-body``/``--response-format``/``--tools`` fields as the Responses
    API spells them: ``response_format`` → ``text.format`` (flat), a tool's ``function`` → the
    flat tool, a named ``tool_choice`` → ``{"type": "function", "name"}``, ``max_tokens`` →
    ``max_output_tokens``."""
    out = dict(extra)
    fmt = out.pop("response_format", None)
    if isinstance(fmt, dict):
        flat = {"type": fmt.get("type"), **(fmt.get("json_schema") or {})}
        out["text"] = {"format": flat}
    tools = out.get("tools")
    if isinstance(tools, list):
        out["tools"] = [{"type": t.get("type"), **(t.get("function") or {})}
                        if isinstance(t, dict) and "function" in t else t for t in tools]
    choice = out.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out["tool_choice"] = {"type": "function", "name": choice["function"].get("name")}
    if "max_tokens" in out:
        out["max_output_tokens"] = out.pop("max_tokens")
    return out


_RESPONSE_DELTAS = ("response.output_text.delta", "response.reasoning_text.delta",
                    "response.function_call_arguments.delta")
_RESPONSE_ENDS = ("response.completed", "response.incomplete")


def responses_request(target: Target, messages: list[dict[str, str]], max_tokens: int,
                      extra: dict[str, Any], timeout: float) -> RequestResult:
    """``POST {url}/responses`` streamed (``store: false`` unless ``extra`` says otherwise):
    TTFT is the first output delta, the gaps are between deltas, the tokens are the final
    response's ``usage.output_tokens``. ``extra`` is in the Responses API's shape
    (:func:`responses_extra`)."""
    body = {"model": target.model, "input": messages, "max_output_tokens": max_tokens,
            "stream": True, "store": False, **extra}
    res = RequestResult()
    t0 = time.perf_counter()
    clock = _Clock(res, t0)

    def read(resp: http.client.HTTPResponse) -> None:
        usage, ended = None, False
        for payload in sse_payloads(resp, t0 + timeout):
            event = json.loads(payload)
            kind = event.get("type")
            if kind in ("error", "response.failed"):
                code = event.get("code") or "error"
                res.error = f"stream {code}"
                return
            if kind in _RESPONSE_DELTAS and event.get("delta"):
                clock.tick()
            if kind in _RESPONSE_ENDS:
                usage = (event.get("response") or {}).get("usage")
                ended = True
                break
        if not ended:
            res.error = "incomplete stream"
        elif isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int):
            res.tokens = usage["output_tokens"]
            if isinstance(usage.get("input_tokens"), int):
                res.prompt_tokens = usage["input_tokens"]
            details = usage.get("input_tokens_details") or {}
            if isinstance(details.get("cached_tokens"), int):
                res.cached_tokens = details["cached_tokens"]
        else:
            res.tokens, res.estimated = clock.events, True

    return _post(target, "/responses", body, timeout, res, t0, read)


def embeddings_request(target: Target, text: str, extra: dict[str, Any],
                       timeout: float) -> RequestResult:
    body = {"model": target.model, "input": [text], **extra}
    res = RequestResult()
    t0 = time.perf_counter()

    def read(resp: http.client.HTTPResponse) -> None:
        data = json.loads(resp.read())
        if len(data["data"]) != 1 or not data["data"][0]["embedding"]:
            res.error = "bad response"
            return
        usage = data.get("usage") or {}
        if isinstance(usage.get("prompt_tokens"), int):
            res.tokens = usage["prompt_tokens"]
            _take_usage(res, usage)
        else:
            res.tokens, res.estimated = max(1, len(text) // CHARS_PER_TOKEN), True

    return _post(target, "/embeddings", body, timeout, res, t0, read)


def list_models(target: Target, timeout: float) -> list[str]:
    conn = target.connection(timeout)
    try:
        conn.request("GET", target.path("/models"), headers=target.headers())
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            kind = error_kind(resp.status, resp.reason, raw)
            raise RuntimeError(f"GET {target.url}/models: {kind}")
        return [m["id"] for m in json.loads(raw)["data"]]
    finally:
        conn.close()


# ---- Anthropic's Messages API (``--api messages``) -------------------------------------------

ANTHROPIC_VERSION = "2023-06-01"  # the header Anthropic's SDKs send


def messages_request(target: Target, messages: list[dict[str, str]], max_tokens: int,
                     extra: dict[str, Any], timeout: float) -> RequestResult:
    """A streamed ``POST {url}/messages`` (Anthropic's Messages API) timed as a chat request
    is: TTFT to the first ``content_block_delta``, gaps between them. ``messages`` are chat's
    (a ``system`` one becomes the ``system`` field). Tokens from ``message_delta``'s usage;
    prompt tokens are ``message_start``'s ``input_tokens + cache_read_input_tokens``."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    body: dict[str, Any] = {"model": target.model, "max_tokens": max_tokens, "stream": True,
                            "messages": [m for m in messages if m["role"] != "system"],
                            **({"system": system} if system else {}), **extra}
    headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    if target.api_key:
        headers["x-api-key"] = target.api_key
    res = RequestResult()
    t0 = time.perf_counter()
    clock = _Clock(res, t0)

    def read(resp: http.client.HTTPResponse) -> None:
        stopped, output = False, None
        for payload in sse_payloads(resp, t0 + timeout):
            event = json.loads(payload)
            kind = event.get("type")
            if kind == "error":
                res.error = f"stream {event.get('error', {}).get('type') or 'error'}"
                return
            if kind == "message_start":
                usage = event["message"].get("usage") or {}
                cached = usage.get("cache_read_input_tokens") or 0
                if isinstance(usage.get("input_tokens"), int):
                    res.prompt_tokens = usage["input_tokens"] + cached
                    res.cached_tokens = cached
            elif kind == "content_block_delta":
                clock.tick()
            elif kind == "message_delta":
                output = (event.get("usage") or {}).get("output_tokens")
            elif kind == "message_stop":
                stopped = True
                break
        if not stopped:
            res.error = "incomplete stream"
        elif isinstance(output, int):
            res.tokens = output
        else:
            res.tokens, res.estimated = clock.events, True

    return _post(target, "/messages", body, timeout, res, t0, read, headers,
                 _anthropic_error_kind)


def _anthropic_error_kind(status: int, reason: str, body: bytes) -> str:
    """An error answer's kind from Anthropic's envelope (``error.type``), else the reason."""
    try:
        err = json.loads(body).get("error")
        kind = err.get("type") if isinstance(err, dict) else None
    except (ValueError, AttributeError):
        kind = None
    return f"{status} {kind or reason}".strip()
