"""How the text of a flag or ``HEARTH_*`` env var becomes a setting's value (tools/settings.py
names one of these in each declaration). Each raises ValueError saying what is wrong; the
caller adds which flag, env var or TOML key held it."""

from __future__ import annotations

import os
from collections.abc import Callable


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def url_prefix(text: str) -> str:
    text = "/" + text.strip().strip("/")
    return "" if text == "/" else text


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"must be text or json, got {text!r}")
    return value


def user_path(text: str) -> str:
    return os.path.expanduser(text.strip())


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def tcp_port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"not a TCP port: {value}")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    return parse
