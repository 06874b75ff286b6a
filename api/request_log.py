"""The request log: one line per request, Tornado's ``log_function`` (see ``api.app``).

Text:  ``200 POST /v1/chat/completions key=alice model=tiny prompt_tokens=12
completion_tokens=2 35.1ms`` (after the time and logger name); json: the same as fields
(``key``, ``method``, ``path``, ``status``, ``model``, ``prompt_tokens``, ``completion_tokens``,
``latency_ms``; null where the text says ``-``). The key is its *name*, never the key. A stream
cut by an error after its 200 is logged with that error's status and ``error=<code>`` (json:
``error``), e.g. ``502 ... error=worker_died``.

With --verbose the line also carries the request body and the response body (a stream: its
text joined, its finish_reason and any error, not each chunk), JSON bodies re-encoded compactly
so that escapes like ``\\u0061`` cannot hide a key from the redactor, every configured API key
replaced by ``[redacted]``, then cut to ``BODY_LIMIT`` characters. Headers are never logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import tornado.web
from hearth.api.access import KeyRing
from hearth.api.handlers.base import BaseHandler
from hearth.tools.logs import clip
from hearth.tools.settings import Settings

log = logging.getLogger("hearth.api")

FIELD_LIMIT = 200  # characters of a client-chosen value (path, model) kept in the line
QUIET_PATHS = ("/health", "/metrics")  # polls and scrapes: logged only with --verbose


def _body_text(raw: bytes) -> str:
    try:
        return msgspec.json.encode(msgspec.json.decode(raw)).decode()
    except (msgspec.DecodeError, msgspec.EncodeError, RecursionError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def shown(value: str | int | None) -> str:
    """How the text line shows a value: ``-`` for none; quoted (JSON) when it has spaces or
    unprintable characters, so that each field stays one word and the line one line."""
    if value is None or value == "":
        return "-"
    text = str(value)
    if text.isprintable() and not any(c.isspace() for c in text) and text != "-":
        return text
    return json.dumps(text)


class RequestLog:
    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self.verbose = settings.verbose
        self.redact = keys.redact  # every key the api holds or held (the key file may change)

    def _value(self, text: str | None) -> str | None:
        """A client-chosen value, redacted and bounded (None stays None)."""
        return None if text is None else clip(self.redact(text), FIELD_LIMIT)

    def __call__(self, handler: tornado.web.RequestHandler) -> None:
        req = handler.request
        if req.path in QUIET_PATHS and not self.verbose:
            return
        base = handler if isinstance(handler, BaseHandler) else None
        status = base.outcome_status() if base else handler.get_status()
        key = base.key_name if base else None
        fields: dict[str, Any] = {
            "event": "request", "key": key, "method": self._value(req.method),
            "path": self._value(req.path), "status": status,
            "model": self._value(base.log_model if base else None),
            "prompt_tokens": base.prompt_tokens if base else None,
            "completion_tokens": base.completion_tokens if base else None,
            "latency_ms": round(1000.0 * req.request_time(), 1)}
        error = base.error_code() if base else None
        if error is not None:  # a stream cut by an error after its 200 (status: the error's)
            fields["error"] = error
        text = (f"{status} {shown(fields['method'])} {shown(fields['path'])} "
                f"key={shown(key)} model={shown(fields['model'])} "
                f"prompt_tokens={shown(fields['prompt_tokens'])} "
                f"completion_tokens={shown(fields['completion_tokens'])} "
                f"{fields['latency_ms']:.1f}ms" + (f" error={shown(error)}" if error else ""))
        details: list[tuple[str, str]] = []
        if self.verbose and base is not None:
            body = base.request_body_for_log()
            if body is None:
                details.append(("request body", "(over --max-body: not kept)"))
            elif body:
                details.append(("request body", clip(self.redact(_body_text(body)))))
            answer = base.response_body_for_log()
            if answer:
                # our own encoder's output: only ", \ and controls are escaped (Redactor knows)
                details.append(("response body",
                                clip(self.redact(answer.decode("utf-8", "replace")))))
        log.info("%s", text, extra={"fields": fields, "details": details})
