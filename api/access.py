"""Who may talk to the api: the Host header (DNS rebinding), CORS origins, and API keys.

Pure functions over settings and header values, so they are unit-tested without a server.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from hearth.tools.logs import Redactor

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def split_host(host: str) -> str:
    """The host name of a Host header value, lower-cased, without port or IPv6 brackets.

    Anything but ``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` (port: digits) comes back
    whole, so it cannot match a trusted name ("[::1].evil.com" is not "::1").
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1 or not _is_port_suffix(host[end + 1:]):
            return host
        return host[1:end]
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name if _is_port(port) else host
    return host


def _is_port_suffix(rest: str) -> bool:
    return rest == "" or (rest[0] == ":" and _is_port(rest[1:]))


def _is_port(text: str) -> bool:
    return text == "" or (text.isascii() and text.isdigit())  # RFC 9110: port = *DIGIT


class HostCheck:
    """Which Host header values are accepted: loopback names always, ``trusted``, and
    ``local`` — the machine's own names and addresses when it serves the LAN
    (``api.local_names``). ``*`` in ``trusted`` accepts anything."""

    def __init__(self, trusted: list[str], local: set[str] | None = None) -> None:
        self.trust_all = "*" in trusted
        self._names = ({split_host(h) for h in trusted if h != "*"} | set(LOOPBACK_NAMES)
                       | {split_host(h) for h in (local or set())})

    def allowed(self, host_header: str | None) -> bool:
        if self.trust_all:
            return True
        if not host_header:
            return False
        return split_host(host_header) in self._names


class CorsPolicy:
    """Which browser pages may call the api (``allowed``) and what a preflight answers them.

    Origins are checked; request headers are not: a preflight's ``Access-Control-Allow-Headers``
    echoes every header name the browser asks for. The SDKs' header sets change between
    versions and runtimes (openai-node sends ``User-Agent`` from Firefox and Safari; Chromium
    drops it; new ``x-stainless-*`` names come and go; Anthropic's SDK adds ``anthropic-*``),
    so any fixed list blocks some browser. Allowing a header grants nothing here: the api key
    is checked on the request itself, and credentials (cookies) are never allowed. ``*`` is
    not used because it does not cover ``Authorization`` (Fetch standard, "CORS-unsafe
    request-header names") and Safari before 13 ignores it.
    """

    ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
    # always named, so a preflight that asks for nothing still learns how to authenticate
    ALLOW_HEADERS = "authorization, content-type, x-api-key"
    # an echo has bounds: a browser asks for a dozen names of ~30 characters; more than this is
    # not a real client, and is answered with the names that fit
    MAX_ECHOED_HEADERS = 64
    MAX_ECHOED_CHARS = 2048
    MAX_AGE = "600"

    def allow_headers(self, requested: str | None) -> str:
        """Access-Control-Allow-Headers for a preflight whose Access-Control-Request-Headers is
        ``requested`` (comma-separated names, any case, or None): ours, then each requested
        name, lower-cased, that is an RFC 9110 token, up to MAX_ECHOED_HEADERS names and
        MAX_ECHOED_CHARS characters in all. Names that are not tokens are left out (they
        cannot be real header names and must not reach a response header)."""
        names = [h.strip() for h in self.ALLOW_HEADERS.split(",")]
        size = sum(len(n) for n in names)
        for header in (requested or "").split(","):
            header = header.strip().lower()
            if not header or header in names or not _token(header):
                continue
            if len(names) >= self.MAX_ECHOED_HEADERS or \
                    size + len(header) > self.MAX_ECHOED_CHARS:
                break
            names.append(header)
            size += len(header)
        return ", ".join(names)

    def __init__(self, enabled: bool, origins: list[str]) -> None:
        self.enabled = enabled
        self.any_origin = "*" in origins
        self._origins = {o.rstrip("/").lower() for o in origins if o != "*"}

    def allowed(self, origin: str | None) -> bool:
        if not self.enabled or not origin:
            return False
        origin = origin.rstrip("/").lower()
        if self.any_origin or origin in self._origins:
            return True
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and hostname in LOOPBACK_NAMES


class KeyRing:
    """Configured API keys. ``match`` compares the candidate against every key in constant time
    and returns the matching key's name (never the key itself).

    One per api process, used on its event loop only; ``replace`` swaps the whole set when the
    key file changes (api.key_watch), so a request sees the old keys or the new, never a mix."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        """``keys``: (name, key) pairs (``Settings.key_ring()``, then the key file's)."""
        self._held: dict[str, None] = {}  # every key ever held, in order: redacted in logs
        self._keys: list[tuple[str, bytes]] = []
        self.replace(keys)

    def replace(self, keys: list[tuple[str, str]]) -> None:
        self._keys = [(name, k.encode()) for name, k in keys]
        before = len(self._held)
        self._held.update(dict.fromkeys(k for _, k in keys))
        if len(self._held) != before or before == 0:
            # a revoked key is still somebody's secret: it stays redacted
            self._redactor = Redactor(self._held)

    def redact(self, text: str) -> str:
        """``text`` with every key this ring holds or has held replaced by ``[redacted]``."""
        return self._redactor(text)

    @property
    def names(self) -> list[str]:
        """The keys' names, in configuration order."""
        return [name for name, _ in self._keys]

    def match(self, candidate: str | None) -> str | None:
        if candidate is None:
            return None
        cand = candidate.encode("utf-8", "surrogateescape")
        found = None
        for name, key in self._keys:
            if hmac.compare_digest(cand, key) and found is None:
                found = name
        return found


def bearer_token(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key:
        return x_api_key.strip()
    return None


def _token(name: str) -> bool:
    """An RFC 9110 ``token`` (a header field name): nothing else is echoed back."""
    return bool(name) and all(c in _TCHAR for c in name)


_TCHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-.^_`|~")
