"""An asyncio HTTP/1.1 client for the load tests: raw streams, so a test controls exactly when
a connection closes (before the answer, after its headers, after k events), and reads every
server-sent event of a streamed chat completion.

Each request opens its own connection (``Connection: close``). Streamed answers arrive with
chunked transfer encoding; the chunks are reassembled and split into SSE events here, and each
event must be one ``data: …`` line. :func:`check_stream` then says whether a stream ended as an
OpenAI stream must (and why not, if not).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Token ids of the tiny model (hearth.tools.cli.tiny_model) whose piece is not complete text on its
# own: <unk>, <s>, the 256 byte-fallback tokens (a byte >= 0x80 is an incomplete UTF-8 piece:
# the worker holds it back until the character is complete) and <|im_start|>. Biased away, every
# generated token is one content chunk. </s> and <|im_end|> stay allowed: they end the stream
# with finish_reason "stop" and are not counted as completion tokens.
NOT_TEXT_TOKENS = {str(t): -100 for t in (0, 1, *range(3, 259), 259)}
# </s> and <|im_end|>: rare (about one 3000-token generation in 16 meets one), biased away where a
# stream must not end before max_tokens.
END_TOKENS = {"2": -100, "260": -100}


class HttpError(Exception):
    """The connection broke or the server answered something that is not HTTP."""


class Connection:
    """One HTTP request on its own TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunked = False
        self._length: int | None = None

    @classmethod
    async def open(cls, port: int, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None, *,
                   partial: bool = False) -> Connection:
        """Connect and send the request; ``partial`` sends only half of the body."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                 f"Content-Length: {len(data)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if partial:
            data = data[: len(data) // 2]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        return cls(reader, writer)

    async def read_head(self) -> None:
        line = await self.reader.readline()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP status line: {line!r}")
        self.status = int(parts[1])
        while True:
            line = await self.reader.readline()
            if not line:
                raise HttpError("connection closed inside the headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if "content-length" in self.headers:
            self._length = int(self.headers["content-length"])

    async def body_parts(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked encoding undone). Ends at the body's proper end;
        raises HttpError if the connection closes before it."""
        if self._chunked:
            while True:
                size_line = await self.reader.readline()
                if not size_line:
                    raise HttpError("connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readline()  # the empty trailer
                    return
                try:
                    chunk = await self.reader.readexactly(size + 2)
                except asyncio.IncompleteReadError as exc:
                    raise HttpError("connection closed inside a chunk") from exc
                yield chunk[:-2]
        elif self._length is not None:
            try:
                yield await self.reader.readexactly(self._length)
            except asyncio.IncompleteReadError as exc:
                raise HttpError("connection closed inside the body") from exc
        else:
            while data := await self.reader.read(65536):
                yield data

    async def body(self) -> bytes:
        return b"".join([part async for part in self.body_parts()])

    async def events(self) -> AsyncIterator[bytes]:
        """Each SSE event's ``data:`` payload. Every event must be exactly one ``data:`` line
        (that is what hearth sends); anything else raises HttpError."""
        buf = b""
        async for part in self.body_parts():
            buf += part
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                if not raw.startswith(b"data: ") or b"\n" in raw:
                    raise HttpError(f"not a single data line: {raw[:200]!r}")
                yield raw[len(b"data: "):]
        if buf.strip():
            raise HttpError(f"the stream ended inside an event: {buf[:200]!r}")

    def close(self, abort: bool = False) -> None:
        """Close the connection: ``abort`` resets it (RST) instead of a normal close (FIN)."""
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


async def request_json(port: int, method: str, path: str, body: Any = None,
                       headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = await Connection.open(port, method, path, body, headers)
    try:
        await conn.read_head()
        raw = await conn.body()
    finally:
        conn.close()
    try:
        return conn.status, conn.headers, json.loads(raw)
    except ValueError:
        return conn.status, conn.headers, raw.decode("utf-8", "replace")


@dataclass
class StreamResult:
    """What one streamed chat completion delivered."""

    status: int = 0
    payloads: list[bytes] = field(default_factory=list)  # every data: payload, [DONE] included
    body: Any = None  # the JSON body of a non-200 answer
    broken: str = ""  # the connection broke (or timed out) before the stream's proper end
    content_at: list[float] = field(default_factory=list)  # monotonic time of content chunks

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads if p != b"[DONE]"]


async def stream_chat(port: int, body: dict[str, Any], headers: dict[str, str],
                      timeout: float, out: StreamResult | None = None) -> StreamResult:
    """POST a streamed chat completion and read it to its end (or break, or timeout). ``out``
    (filled as events arrive) lets a caller watch the stream's progress."""
    out = StreamResult() if out is None else out
    conn: Connection | None = None

    async def run() -> None:
        nonlocal conn
        conn = await Connection.open(port, "POST", "/v1/chat/completions", body, headers)
        await conn.read_head()
        out.status = conn.status
        if conn.status != 200:
            raw = await conn.body()
            out.body = json.loads(raw) if raw else None
            return
        async for payload in conn.events():
            out.payloads.append(payload)
            if b'"content":"' in payload and b'"content":""' not in payload:
                out.content_at.append(time.monotonic())

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        out.broken = f"no end within {timeout:.0f}s"
    except (OSError, HttpError, ValueError) as exc:
        out.broken = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()
    return out


@dataclass
class Checked:
    """A stream that ended properly: its text and what its usage chunk said."""

    text: str
    content_chunks: int
    finish_reason: str
    usage: dict[str, Any]
    request_id: str


def check_stream(res: StreamResult, model: str, max_tokens: int, *,
                 every_token_is_text: bool, stops: tuple[str, ...] = ()) -> Checked:
    """Raise AssertionError unless ``res`` is a complete stream with usage (requested with
    ``stream_options.include_usage``): 200; a role chunk first; content chunks; exactly one
    chunk with a finish_reason; then one usage chunk (``choices: []``) whose completion_tokens
    matches the deltas; then ``[DONE]`` and the body's proper end.

    How tokens map to chunks (engine.slots + api.handlers.chat): each generated token is one
    Delta counting one token; a Delta whose text is empty is not sent (a piece that is an
    incomplete UTF-8 sequence, or text held back because it may begin a stop string); held text
    is released with a later token's Delta, or by one last Delta counting no token when the
    generation ends. So content chunks <= completion_tokens + 1 always, and == completion_tokens
    when every token is complete text and there are no stop strings (``every_token_is_text``:
    the request biased away the tiny model's non-text tokens, NOT_TEXT_TOKENS)."""
    assert not res.broken, f"broken: {res.broken}"
    assert res.status == 200, (res.status, res.body)
    assert res.payloads and res.payloads[-1] == b"[DONE]", res.payloads[-3:]
    assert res.payloads.count(b"[DONE]") == 1
    chunks = res.chunks
    assert not any("error" in c for c in chunks), chunks[-1]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1, ids  # never another stream's chunk
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == model for c in chunks)
    first, *rest = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}, first
    assert rest and rest[-1]["choices"] == [], "the last chunk must be the usage chunk"
    usage = rest[-1]["usage"]
    choices = [c["choices"][0] for c in rest[:-1]]
    assert all(len(c["choices"]) == 1 for c in rest[:-1])
    finishes = [c["finish_reason"] for c in choices if c["finish_reason"] is not None]
    assert len(finishes) == 1 and choices[-1]["finish_reason"] is not None, finishes
    assert all("usage" not in c or c["usage"] is None for c in chunks[:-1])
    pieces = [c["delta"].get("content") for c in choices[:-1]]
    assert all(isinstance(p, str) and p for p in pieces), pieces
    assert choices[-1]["delta"] == {}, choices[-1]
    text = "".join(pieces)
    completion = usage["completion_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + completion, usage
    assert usage["prompt_tokens"] > 0
    assert 0 <= usage["prompt_tokens_details"]["cached_tokens"] <= usage["prompt_tokens"]
    reason = finishes[0]
    assert reason in ("stop", "length"), reason
    if reason == "length":
        assert completion == max_tokens, (completion, max_tokens)
    else:  # end of turn, or a stop string (which may come with the last allowed token)
        assert completion <= max_tokens, (completion, max_tokens)
    if every_token_is_text:
        assert len(pieces) == completion, (len(pieces), usage)
    else:
        assert len(pieces) <= completion + 1, (len(pieces), usage)
    for stop in stops:
        assert stop not in text, (stop, text)
    return Checked(text, len(pieces), reason, usage, ids.pop())


def worker_died_error(res: StreamResult) -> dict[str, Any] | None:
    """The error of a stream that was cut by its worker's death: a 200 stream whose last events
    are ``data: {"error": …}`` then ``[DONE]``. None if the stream did not end that way."""
    if res.broken or res.status != 200 or len(res.payloads) < 2 or res.payloads[-1] != b"[DONE]":
        return None
    last = json.loads(res.payloads[-2])
    err = last.get("error")
    if not isinstance(err, dict) or err.get("code") != "worker_died":
        return None
    return err


# ---- what the server says about itself ----------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int, key: str) -> Samples:
    """GET /metrics, parsed: (sample name, labels) -> value."""
    status, _, text = await request_json(port, "GET", "/metrics",
                                         headers={"Authorization": f"Bearer {key}"})
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(str(text)):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series that does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def health(port: int) -> dict[str, Any]:
    status, _, body = await request_json(port, "GET", "/health")
    assert isinstance(body, dict), (status, body)
    return body


async def settled(port: int, key: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the scheduler reports no busy slot and nothing queued, in /health and in
    /metrics (hearth_slots_busy, hearth_queue_depth); the last /health body. AssertionError
    (with what it last said) if that does not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        body = await health(port)
        samples = await scrape(port, key)
        busy = sum(v for (n, _), v in samples.items() if n == "hearth_slots_busy")
        queued = sum(v for (n, _), v in samples.items() if n == "hearth_queue_depth")
        if body.get("slots", {}).get("busy") == 0 and body.get("queued") == 0 \
                and busy == 0 and queued == 0:
            return body
        assert time.monotonic() < deadline, ("not settled", body, busy, queued)
        await asyncio.sleep(0.05)
