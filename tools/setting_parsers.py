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


def parse_routing(text: str) -> str:
    value = text.strip().lower()
    if value not in ("prefix", "even"):
        raise ValueError(f"must be prefix or even, got {text!r}")
    return value


def parse_draft_policy(text: str) -> str:
    value = text.strip().lower()
    if value not in ("cost", "always"):
        raise ValueError(f"must be cost or always, got {text!r}")
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


Z85_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         ".-:+=^!/*?&<>()[]{}@%$#")  # ZeroMQ RFC 32


def curve_public_key(text: str, what: str = "a CURVE public key") -> str:
    """A Z85-encoded Curve25519 key (40 characters: 32 bytes), stripped; ValueError naming
    ``what`` (never the text: a secret key pasted by mistake stays out of logs)."""
    key = text.strip()
    if len(key) != 40:
        raise ValueError(f"{what} is 40 Z85 characters; this one has {len(key)}")
    if not set(key) <= Z85_ALPHABET:
        raise ValueError(f"{what} is not Z85 text")
    return key


def tcp_endpoint(text: str) -> str:
    """A ZeroMQ tcp endpoint ``tcp://ADDR:PORT`` (ADDR an address or ``*``; an IPv6 one in
    brackets), stripped."""
    value = text.strip()
    host, sep, port = value.removeprefix("tcp://").rpartition(":")
    if not value.startswith("tcp://") or not sep or not host:
        raise ValueError(f"expected tcp://ADDRESS:PORT, got {value!r}")
    tcp_port(port)
    return value
