"""Which URLs ``hearth models pull`` may fetch, and how a URL is shown or recorded.

Pure functions, no network. The rules hold for the URL a user types, ``HF_ENDPOINT`` and every
redirect a server answers with (:mod:`hearth.tools.cli.http_client` checks each hop):

* only ``http`` and ``https`` (never ``file:``, ``ftp:``, ``data:``...);
* plain ``http`` only to this machine (``localhost``, ``127.0.0.0/8``, ``::1``): elsewhere a
  token, or the bytes of the model, would cross the network unprotected;
* no ``user:password@`` in the URL: it would end up in the sources record and the listing.

A URL is shown and recorded without its query, fragment and user info (:func:`redact_url`):
a signed CDN or S3 URL carries its credentials in the query (``X-Amz-Signature=...``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse

__all__ = ["is_loopback", "redact_url", "url_problem"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without brackets) is this machine."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """``url`` without user info, query and fragment: what may be printed or recorded.
    ``https://u:p@h/x.gguf?sig=1`` -> ``https://h/x.gguf``. A string that does not parse as a
    URL comes back cut at its first ``?``, ``#`` or ``@``-before-the-path."""
    try:
        p = urllib.parse.urlsplit(url)
        netloc = p.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be fetched (one phrase that never holds its user info or query), or
    None when it may."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        has_userinfo = "@" in p.netloc
        p.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a valid URL"
    scheme = p.scheme.lower()
    if scheme not in ("http", "https"):
        return f"a {scheme}: URL (only http and https are fetched)" if scheme else (
            "not an http(s) URL")
    if not host:
        return "a URL without a host"
    if has_userinfo:
        return "a URL with a user name or password in it (it would be recorded and shown)"
    if scheme == "http" and not is_loopback(host):
        return f"plain http to {host} (http only to this machine; use https)"
    return None
