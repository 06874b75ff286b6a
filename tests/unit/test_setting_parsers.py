"""tools/setting_parsers.py: the text of a flag or env var to a setting's value, or ValueError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hearth.tools.setting_parsers import (
    comma_list,
    non_negative,
    parse_bool,
    parse_log_format,
    positive,
    tcp_port,
    url_prefix,
    user_path,
)


@pytest.mark.parametrize(("parse", "text", "value"), [
    (parse_bool, " Yes ", True), (parse_bool, "on", True), (parse_bool, "1", True),
    (parse_bool, "OFF", False), (parse_bool, "no", False), (parse_bool, "0", False),
    (comma_list, " a, ,b,, c ", ["a", "b", "c"]), (comma_list, "", []),
    (url_prefix, "v1/", "/v1"), (url_prefix, " / ", ""), (url_prefix, "/a/b/", "/a/b"),
    (parse_log_format, " JSON ", "json"), (parse_log_format, "text", "text"),
    (positive, "1", 1), (non_negative, "0", 0), (tcp_port, "0", 0), (tcp_port, "65535", 65535),
])
def test_good_text(parse: Callable[[str], Any], text: str, value: Any) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(("parse", "text"), [
    (parse_bool, "maybe"), (parse_bool, ""), (parse_log_format, "xml"), (positive, "0"),
    (positive, "one"), (non_negative, "-1"), (tcp_port, "65536"), (tcp_port, "-1"),
])
def test_bad_text_is_a_value_error(parse: Callable[[str], Any], text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)


def test_user_path_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert user_path(" ~/certs/c.pem ") == "/home/someone/certs/c.pem"
    assert user_path("/etc/x") == "/etc/x"
