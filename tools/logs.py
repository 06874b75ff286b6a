"""How hearth's processes write log lines: ``--log-format text`` or ``json``, and redaction.

Every hearth process that logs calls :func:`configure` once at start-up; after that it logs
through the standard ``logging`` module. A record may carry two extras:

* ``fields``: a dict of structured values. The json format puts them in the line's object
  (after ``time``, ``level``, ``logger``, ``message``, which they never replace); the text
  format shows only the message, which should already say the same thing.
* ``details``: (label, text) pairs, e.g. request and response bodies. Text: each on its own
  indented line below the message; json: a ``label_with_underscores`` field.

Anything that may hold an API key goes through :class:`Redactor` before it is logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

BODY_LIMIT = 4096  # characters of a body kept in a log line
REDACTED = "[redacted]"

_CORE = ("time", "level", "logger", "message")
# C0 controls and DEL shown escaped, so one record stays one line and a client cannot write
# terminal escape sequences into an operator's log.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def one_line(text: str) -> str:
    return text.translate(_CONTROLS)


def clip(text: str, limit: int = BODY_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated: {len(text)} characters in all]"


class Redactor:
    """Replaces every configured API key in a text with ``[redacted]``: as written, and as a
    JSON encoder may escape it (``\\"``, ``\\\\``, ``\\/``). Redact *before* clipping, so a key
    cut in half at the limit cannot leave its first half behind."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            escaped = json.dumps(secret)[1:-1]
            forms.update((secret, escaped, escaped.replace("/", "\\/")))
        # longest first: a key that contains another key is replaced whole
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


def _iso_utc(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``HH:MM:SS logger message``, details indented below."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for label, text in getattr(record, "details", ()):
            line += f"\n    {label}: {one_line(text)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the record's
    ``fields`` and ``details``, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": _iso_utc(record.created), "level": record.levelname.lower(),
            "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update((k, v) for k, v in fields.items() if k not in _CORE)
        for label, text in getattr(record, "details", ()):
            doc[label.replace(" ", "_")] = text
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: no raw control or non-ASCII character can end up in the line
        return json.dumps(doc, default=str)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send this process's log records to stderr in ``log_format`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
