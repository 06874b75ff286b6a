"""tools/logs.py and the request line's value quoting: redaction, clipping, text and json."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from hearth.api.request_log import shown
from hearth.tools.logs import (
    REDACTED,
    JsonFormatter,
    Redactor,
    TextFormatter,
    clip,
    configure,
    one_line,
)


def record(msg: str = "hello %s", args: tuple[object, ...] = ("world",),
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("hearth.api", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_redactor_replaces_every_key_as_written_and_json_escaped() -> None:
    redact = Redactor(["k-alice", 'k"q\\uote/x', ""])
    text = 'a k-alice b k"q\\uote/x c k\\"q\\\\uote/x d k\\"q\\\\uote\\/x e'
    out = redact(text)
    assert "k-alice" not in out and "uote" not in out
    assert out == f"a {REDACTED} b {REDACTED} c {REDACTED} d {REDACTED} e"


def test_redactor_replaces_a_longer_key_whole() -> None:
    # "secret" is inside "secret-2": the longer one goes first, so nothing of it is left
    assert Redactor(["secret", "secret-2"])("x secret-2 y secret") == \
        f"x {REDACTED} y {REDACTED}"


def test_redactor_without_keys_changes_nothing() -> None:
    assert Redactor([])("anything at all") == "anything at all"


def test_clip_marks_what_it_cut() -> None:
    assert clip("short", 10) == "short"
    cut = clip("x" * 5000, 4096)
    assert cut.startswith("x" * 4096) and cut.endswith("[truncated: 5000 characters in all]")
    assert "x" * 4097 not in cut


def test_one_line_escapes_controls() -> None:
    assert one_line("a\nb\r\tc\x1b[31m\x7f") == "a\\nb\\r\\tc\\x1b[31m\\x7f"


def test_json_formatter_fields() -> None:
    rec = record(fields={"event": "request", "status": 200, "model": None,
                         "message": "cannot override", "level": "nor this"},
                 details=[("request body", '{"a":1}')])
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"]), doc["time"]
    assert (doc["level"], doc["logger"], doc["message"]) == ("info", "hearth.api", "hello world")
    assert (doc["event"], doc["status"], doc["model"]) == ("request", 200, None)
    assert doc["request_body"] == '{"a":1}'


def test_json_formatter_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        rec = logging.LogRecord("tornado.application", logging.ERROR, __file__, 1,
                                "Uncaught exception", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "error" and "ValueError: boom" in doc["exc"]


def test_text_formatter_details_on_indented_lines() -> None:
    rec = record("200 GET /x", (), details=[("request body", "a\nb"), ("response body", "c")])
    lines = TextFormatter().format(rec).split("\n")
    assert re.fullmatch(r"\d\d:\d\d:\d\d hearth.api 200 GET /x", lines[0]), lines[0]
    assert lines[1:] == ["    request body: a\\nb", "    response body: c"]


def test_configure_json_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("json")
        logging.getLogger("hearth.test").warning("careful %d", 3)
        doc = json.loads(capsys.readouterr().err.strip())
        assert (doc["logger"], doc["level"], doc["message"]) == \
            ("hearth.test", "warning", "careful 3")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


@pytest.mark.parametrize(("value", "text"), [
    (None, "-"), ("", "-"), (12, "12"), ("tiny", "tiny"), ("/v1/models", "/v1/models"),
    ("my model", '"my model"'), ("-", '"-"'), ("a\nkey=evil", '"a\\nkey=evil"'),
    ("\x1b[2J", '"\\u001b[2J"'),
])
def test_request_line_values_stay_one_word(value: str | int | None, text: str) -> None:
    assert shown(value) == text
