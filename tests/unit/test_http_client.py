"""tools/cli/http_client.py: tokens, HF_ENDPOINT and redirect checks (no network: the checks
come before any connection)."""

from __future__ import annotations

import urllib.request

import pytest
from hearth.tools.cli.http_client import (
    HttpClient,
    PullError,
    PullErrorKind,
    check_endpoint,
    clean_token,
    describe_host,
)


def test_a_token_loses_surrounding_blanks() -> None:
    assert clean_token(" hf_abc\r\n", "HF_TOKEN") == "hf_abc"
    assert clean_token("  \n", "HF_TOKEN") is None
    assert clean_token(None, "HF_TOKEN") is None


@pytest.mark.parametrize("token", ["hf_a\rb", "hf_a b", "hf_sécret", "hf_\x00x", "hf_\u2028x"])
def test_a_token_that_cannot_be_a_header_is_refused_unshown(token: str) -> None:
    with pytest.raises(PullError) as info:
        clean_token(token, "--hf-token")
    assert info.value.kind is PullErrorKind.BAD_REF
    message = str(info.value)
    assert "--hf-token" in message and token.strip() not in message and "\n" not in message


def test_endpoint() -> None:
    assert check_endpoint("https://hf-mirror.example/ ") == "https://hf-mirror.example"
    assert check_endpoint("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    for bad in ("notaurl", "ftp://127.0.0.1", "http://example.org", "https://u:pw@h.example",
                "https://h.example/?x=1"):
        with pytest.raises(PullError) as info:
            check_endpoint(bad)
        assert info.value.kind is PullErrorKind.BAD_REF
        assert "HF_ENDPOINT=" in str(info.value) and ":pw" not in str(info.value)


@pytest.mark.parametrize(("location", "why"), [
    ("file:///etc/passwd", "a file: URL"), ("ftp://h.example/x", "a ftp: URL"),
    ("http://h.example/x.gguf", "plain http to h.example"),
    ("https://u:p@h.example/x", "a URL with a user name or password"),
])
def test_a_redirect_is_checked_like_the_first_url(location: str, why: str) -> None:
    with pytest.raises(PullError) as info:
        HttpClient._redirect("https://hub.example/a/resolve/main/x.gguf", location)
    assert info.value.kind is PullErrorKind.OFFLINE
    assert f"hub.example redirected to {why}" in str(info.value)
    assert HttpClient._redirect("http://127.0.0.1:5/a", "/b") == "http://127.0.0.1:5/b"


def test_the_opener_has_no_file_ftp_data_or_redirect_handler() -> None:
    kinds = {type(h) for h in HttpClient()._opener.handlers}
    for absent in (urllib.request.FileHandler, urllib.request.FTPHandler,
                   urllib.request.DataHandler, urllib.request.HTTPRedirectHandler,
                   urllib.request.UnknownHandler):
        assert absent not in kinds
    with pytest.raises(PullError) as info:
        HttpClient().open("file:///etc/passwd")
    assert info.value.kind is PullErrorKind.BAD_REF


def test_describe_host_never_shows_user_info() -> None:
    assert describe_host("https://u:pw@h.example:8443/x?sig=1") == "h.example:8443"
