"""How a command reaches a running hearth server: the flags' wording, the key it asks with, the
TLS trust for its own certificate, one plain GET, and what ``/models`` says is loaded.

Used by ``hearth models list`` and ``hearth status``; both only read, and both must work (or say
clearly why not) when no server is running. Proxies from the environment are ignored: hearth
runs on this machine or the LAN.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

from hearth.tools.settings import Settings
from hearth.tools.tls import pinned_client_context

__all__ = [
    "SERVER_CLIENT_HELPS",
    "TIMEOUT_S",
    "ServerModels",
    "Unreachable",
    "http_get",
    "query_server",
    "read_key_file",
    "server_key",
    "server_tls",
]

TIMEOUT_S = 3.0  # a local or LAN server answers well within this, even while it loads a model

# How ``serve``'s settings read for a command that talks to a running server.
SERVER_CLIENT_HELPS = {
    "host": "the server's address (for the default --url)",
    "port": "the server's port (for the default --url)",
    "api_key": "the API key to ask the server with (default: the configured key, else the "
               "saved generated key if there is one; none is created)",
    "tls_cert": "the server's certificate: the default --url is https and trusts it",
}


def read_key_file() -> str | None:
    """The generated key, only if its file exists (listing never creates one)."""
    from hearth.tools.cli.keys import key_path

    try:
        key = key_path().read_text().strip()
    except OSError:
        return None
    return key or None


def server_key(settings: Settings) -> str | None:
    """The key to ask with: the first configured one, else the saved generated key."""
    return settings.api_keys[0] if settings.api_keys else read_key_file()


def server_tls(settings: Settings, url_given: bool) -> ssl.SSLContext | None:
    """Our own server's certificate (tools/tls.py), trusted for the URL the settings build; a
    ``--url`` given by hand gets the system's trusted certificates. Raises TlsError when the
    configured certificate cannot be read."""
    if settings.tls_cert and not url_given:
        return pinned_client_context(settings.tls_cert)
    return None


class Unreachable(Exception):
    """No HTTP answer came back (refused, timed out, bad URL, TLS failure)."""


def http_get(url: str, *, key: str | None, accept: str, timeout: float = TIMEOUT_S,
             tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET ``url``: (status, body) for any HTTP answer, error statuses included; raises
    :class:`Unreachable` when there is none. ``tls``: the context for an https URL (None: the
    system's trusted certificates)."""
    headers = {"Accept": accept}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # an answer all the same: the caller reads the status
        try:
            return exc.code, exc.read()
        finally:
            exc.close()
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad URL
        raise Unreachable(str(exc)) from exc


@dataclass(frozen=True)
class ServerModels:
    """What a running server said about its models: ``loaded`` maps id -> loaded, or
    ``loaded`` is None and ``note`` says why (not running, key refused...)."""

    url: str
    loaded: dict[str, bool] | None
    note: str = ""


def query_server(url: str, api_key: str | None, timeout: float = TIMEOUT_S,
                 tls: ssl.SSLContext | None = None) -> ServerModels:
    """GET ``{url}/models`` and read each entry's ``hearth.loaded``. ``tls``: the context for
    an https URL (None: the system's trusted certificates)."""
    endpoint = url.rstrip("/") + "/models"
    try:
        status, raw = http_get(endpoint, key=api_key, accept="application/json",
                               timeout=timeout, tls=tls)
    except Unreachable:
        return ServerModels(url, None, f"(server not running at {url})")
    if status == 401:
        return ServerModels(url, None, "(the server refused the API key: pass --api-key)")
    if not 200 <= status < 300:
        return ServerModels(url, None, f"(the server answered HTTP {status})")
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON: not a hearth server (or not one we can read)
        return ServerModels(url, None, f"(server not running at {url})")
    loaded: dict[str, bool] = {}
    data = body.get("data") if isinstance(body, dict) else None
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            facts = item.get("hearth")
            loaded[item["id"]] = bool(isinstance(facts, dict) and facts.get("loaded"))
    return ServerModels(url, loaded)
