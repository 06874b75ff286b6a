"""tools/cli/url_rules.py: which URLs a pull fetches, and how they are shown."""

from __future__ import annotations

import pytest
from hearth.tools.cli.url_rules import is_loopback, redact_url, url_problem


@pytest.mark.parametrize("url", ["https://huggingface.co/a/b.gguf", "http://127.0.0.1:8/x.gguf",
                                 "http://localhost/x", "http://[::1]:80/x", "HTTPS://H.example/x",
                                 "http://127.1.2.3/x"])
def test_allowed(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "a file: URL"),
    ("ftp://127.0.0.1/x.gguf", "a ftp: URL"),
    ("data:application/octet-stream;base64,R0dVRg==", "a data: URL"),
    ("notaurl", "not an http(s) URL"),
    ("http://example.org/x.gguf", "plain http to example.org"),
    ("http://10.0.0.1/x.gguf", "plain http to 10.0.0.1"),
    ("https:///x.gguf", "without a host"),
    ("https://u:pa55@h.example/x.gguf", "user name or password"),
    ("https://h.example:port/x", "not a valid URL"),
])
def test_refused(url: str, why: str) -> None:
    problem = url_problem(url)
    assert problem is not None and why in problem and "pa55" not in problem


def test_redact_drops_user_info_query_and_fragment() -> None:
    assert redact_url("https://u:p@h.example:8443/a/b.gguf?X-Amz-Signature=s#f") == (
        "https://h.example:8443/a/b.gguf")
    assert redact_url("http://h/x.gguf") == "http://h/x.gguf"


def test_loopback() -> None:
    assert is_loopback("localhost") and is_loopback("LOCALHOST.") and is_loopback("::1")
    assert not is_loopback("localhost.example.org") and not is_loopback("192.168.1.2")
