"""The HTTP side of ``hearth models pull``: its errors (and exit statuses), tokens, the hub's base
URL, and GETs that follow redirects by hand under :mod:`hearth.tools.cli.url_rules`.

Standard library only (urllib: proxies from the environment, TLS with the system's CAs). The
opener is built from the http(s) handlers alone - no ``file:``, ``ftp:`` or ``data:`` handler
exists in it - and no redirect handler: every 3xx comes back here, so that each hop is checked
(http or https only; plain http only to this machine), the hub's ``X-Linked-ETag`` on its 302 is
seen, and the token (``Authorization: Bearer``) goes only to ``token_origin``, never to a CDN
on another host.

Every failure is a :class:`PullError` with a :class:`PullErrorKind`, whose value is the exit
status of ``hearth models pull``. No message ever holds a token, a URL's query or user info.
"""

from __future__ import annotations

import enum
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from hearth.tools.cli.url_rules import redact_url, url_problem

__all__ = [
    "HttpClient",
    "Origin",
    "PullError",
    "PullErrorKind",
    "check_endpoint",
    "clean_token",
    "describe_host",
    "origin_of",
    "reason_of",
]

_MAX_REDIRECTS = 10
_TIMEOUT_S = 30.0  # connect and per-read: a stalled CDN fails instead of hanging forever
_REDIRECTS = (301, 302, 303, 307, 308)


class PullErrorKind(enum.Enum):
    """What went wrong; the value is the exit status (0 is success, 130 Ctrl-C)."""

    IO = 1  # a local file could not be written or read
    BAD_REF = 2  # a malformed reference, URL, HF_ENDPOINT or token; no (or several) files
    OFFLINE = 3  # no connection, a dropped one, a server error (5xx), a refused redirect
    NOT_FOUND = 4  # 404
    UNAUTHORISED = 5  # 401 / 403
    NO_SPACE = 6  # not enough free disk space
    HASH_MISMATCH = 7  # the sha256 differs from the source's
    NOT_GGUF = 8  # an HTML page, a truncated file, a wrong magic
    EXISTS = 9  # the model id is taken (--force replaces it), or another file has its name
    BUSY = 10  # another pull of the same model is running


class PullError(Exception):
    """A failed pull; ``str()`` is one line for the user (never holding a token)."""

    def __init__(self, kind: PullErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url``, lowercase, with the scheme's default port."""
    p = urllib.parse.urlsplit(url)
    scheme = p.scheme.lower()
    port = p.port or (443 if scheme == "https" else 80)
    return scheme, (p.hostname or "").lower(), port


def clean_token(raw: str | None, where: str) -> str | None:
    """The token to send, from ``raw`` as given in ``where`` (``HF_TOKEN``/``--hf-token``):
    surrounding blanks dropped (``HF_TOKEN=$(cat tok.txt)`` keeps a file's CR), None if empty.
    A token with spaces, control or non-ASCII characters inside cannot go in an HTTP header:
    BAD_REF, with a message that does not show it."""
    token = (raw or "").strip()
    if not token:
        return None
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise PullError(PullErrorKind.BAD_REF,
                        f"the token in {where} holds spaces, control or non-ASCII characters "
                        f"(not shown here); set it again from the token itself")
    return token


def check_endpoint(value: str) -> str:
    """``HF_ENDPOINT``'s value as a base URL without a trailing '/'. Raises BAD_REF for one that
    is not an http(s) URL, is plain http to another machine (the token would cross the network
    in clear) or carries a query or user info."""
    endpoint = value.strip().rstrip("/")
    problem = url_problem(endpoint)
    if problem is None and ("?" in endpoint or "#" in endpoint):
        problem = "a query or fragment does not belong in a base URL"
    if problem is not None:
        raise PullError(PullErrorKind.BAD_REF, f"HF_ENDPOINT={redact_url(endpoint)!r} cannot "
                                               f"be used: {problem}")
    return endpoint


def describe_host(url: str) -> str:
    """``host[:port]`` of ``url`` for messages (never its user info)."""
    try:
        p = urllib.parse.urlsplit(url)
        return p.netloc.rpartition("@")[2] or redact_url(url)
    except ValueError:
        return redact_url(url)


def reason_of(exc: BaseException) -> str:
    """A few words for a network error."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.IncompleteRead):
        return "the connection closed early"
    return str(getattr(reason, "strerror", None) or reason) or type(reason).__name__


def _opener() -> urllib.request.OpenerDirector:
    # OpenerDirector, not build_opener: build_opener adds the file, ftp, data and redirect
    # handlers, which is how a redirect to file:///etc/passwd used to be followed
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


@dataclass
class HttpClient:
    """GETs with hand-followed, checked redirects. ``token`` goes as ``Authorization: Bearer``
    to URLs of ``token_origin`` only. ``hops`` of the last :meth:`open`: each response's
    headers, in order (the redirects', then the final one's)."""

    token: str | None = None
    token_origin: Origin | None = None
    timeout: float = _TIMEOUT_S
    user_agent: str = "hearth-models-pull/1"
    hops: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._opener = _opener()

    def _is_token_host(self, url: str) -> bool:
        return self.token_origin is not None and origin_of(url) == self.token_origin

    def open(self, url: str, headers: dict[str, str] | None = None,
             ok_statuses: tuple[int, ...] = ()) -> http.client.HTTPResponse:
        """The final response to GET ``url`` (status 2xx, or one of ``ok_statuses``, returned
        open with its headers). The caller closes it. Raises :class:`PullError` (OFFLINE,
        NOT_FOUND, UNAUTHORISED; OFFLINE too for a redirect the rules refuse)."""
        self.hops = []
        if (problem := url_problem(url)) is not None:  # the callers check first; a backstop
            raise PullError(PullErrorKind.BAD_REF, f"{redact_url(url)}: {problem}")
        for _ in range(_MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, headers={
                "User-Agent": self.user_agent, "Accept-Encoding": "identity", **(headers or {})})
            if self.token and self._is_token_host(url):
                req.add_unredirected_header("Authorization", f"Bearer {self.token}")
            try:
                resp: http.client.HTTPResponse = self._opener.open(req, timeout=self.timeout)
                self.hops.append(resp.headers)
                return resp
            except urllib.error.HTTPError as exc:
                self.hops.append(exc.headers)
                status = exc.code
                if status in ok_statuses:
                    return exc  # type: ignore[return-value]  # an HTTPError is a response
                location = exc.headers.get("Location")
                exc.close()
                if status in _REDIRECTS and location:
                    url = self._redirect(url, location)
                    continue
                raise self._status_error(status, url, exc.headers) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise PullError(PullErrorKind.OFFLINE, f"cannot reach {describe_host(url)}: "
                                f"{reason_of(exc)} (offline?)") from None
        raise PullError(PullErrorKind.OFFLINE, f"too many redirects from {redact_url(url)}")

    @staticmethod
    def _redirect(url: str, location: str) -> str:
        target = urllib.parse.urljoin(url, location)
        problem = url_problem(target)
        if problem is not None:
            raise PullError(PullErrorKind.OFFLINE, f"{describe_host(url)} redirected to "
                                                   f"{problem}; refused")
        return target

    def get_json(self, url: str) -> tuple[Any, Message]:
        """GET ``url`` as JSON; returns the document and the final response's headers."""
        with self.open(url, {"Accept": "application/json"}) as resp:
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise PullError(PullErrorKind.OFFLINE, f"connection to {describe_host(url)} "
                                                       f"lost: {reason_of(exc)}") from None
            headers = resp.headers
        try:
            return json.loads(body), headers
        except ValueError:
            raise PullError(PullErrorKind.OFFLINE,
                            f"{redact_url(url)} did not answer with JSON") from None

    def _status_error(self, status: int, url: str, headers: Message) -> PullError:
        code = headers.get("X-Error-Code", "")
        shown = redact_url(url)
        if status in (401, 403) and code == "RepoNotFound":
            # the hub answers 401 for a repo that does not exist *or* that this token may not see
            hint = "" if self.token else "; if it is private, set HF_TOKEN or pass --hf-token"
            return PullError(PullErrorKind.NOT_FOUND, f"repository not found: {shown}{hint}")
        if status in (401, 403):
            if not self._is_token_host(url):
                return PullError(PullErrorKind.UNAUTHORISED,
                                 f"access refused ({status}) by {describe_host(url)}: {shown}")
            if not self.token:
                return PullError(PullErrorKind.UNAUTHORISED,
                                 f"access refused ({status}) to {shown}: set HF_TOKEN or "
                                 f"pass --hf-token (a Hugging Face token with access to it)")
            gated = " (a gated model: accept its terms on its hub page)" if (
                code == "GatedRepo") else ""
            return PullError(PullErrorKind.UNAUTHORISED,
                             f"access refused ({status}) to {shown}: the token in HF_TOKEN"
                             f"/--hf-token was refused or has no access{gated}")
        if status == 404:
            return PullError(PullErrorKind.NOT_FOUND, f"not found (404): {shown}")
        return PullError(PullErrorKind.OFFLINE, f"{describe_host(url)} answered {status} for "
                                                f"{shown}")
