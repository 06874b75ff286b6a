"""The web page: ``GET /`` (the page), ``GET /web/<file>`` (its script and style sheet), and the
two key-protected JSON bodies its views read, ``GET /web/api/live`` and ``GET /web/api/settings``.
All of them are off with ``--no-web`` (then ``/`` is the JSON 404 it is without the page).

The page's files are read once at start-up from ``api/static`` inside the installed package
into memory; only those names are served, so there is no directory listing and no path to
traverse (``/web/../x`` and its encoded forms are a 404). Every answer of these routes —
errors included — carries the page's security headers (:data:`PAGE_HEADERS`); the Host check,
CORS and the key check are BaseHandler's, as for the API.

Caching: the page itself is ``no-cache`` (revalidated with its ETag every load); it names its
files with ``?v=<sha256 prefix>`` of their content, and a request carrying the current ``v`` is
cached for a year (``immutable``); any other is ``no-cache``.
"""

from __future__ import annotations

import hashlib
import html
import time
from dataclasses import dataclass
from pathlib import Path

from hearth.api import errors as mapper
from hearth.api.handlers.base import AppState, BaseHandler
from hearth.api.live_view import LiveSampler, live_view, read_series
from hearth.api.page_headers import PAGE_HEADERS
from hearth.api.settings_view import settings_view

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE = "index.html"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}

YEAR_S = 365 * 24 * 3600
SAMPLE_EVERY_S = 1.0


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # the first 12 hex digits of the body's sha256


def load_assets(prefix: str, directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """The page's files by name. ``index.html``'s ``{{api_prefix}}`` is replaced by the API
    prefix and each ``{{v:NAME}}`` by NAME's version, so the page asks for the files it was
    built with. Raises FileNotFoundError if the package lacks them (a broken install)."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in TYPES and path.name != PAGE:
            body = path.read_bytes()
            assets[path.name] = Asset(body, TYPES[path.suffix],
                                      hashlib.sha256(body).hexdigest()[:12])
    text = (directory / PAGE).read_text("utf-8")
    text = text.replace("{{api_prefix}}", html.escape(prefix, quote=True))
    for name, asset in assets.items():
        text = text.replace("{{v:" + name + "}}", asset.version)
    body = text.encode()
    assets[PAGE] = Asset(body, TYPES[".html"], hashlib.sha256(body).hexdigest()[:12])
    return assets


class WebHandler(BaseHandler):
    """A route of the page: its security headers on every answer, errors included."""

    endpoint = "web"

    def initialize(self, state: AppState, assets: dict[str, Asset] | None = None,
                   sampler: LiveSampler | None = None) -> None:
        super().initialize(state)
        self.assets = assets or {}
        self.sampler = sampler

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)

    def write_json(self, obj: object, status: int = 200) -> None:
        self.set_header("Cache-Control", "no-store")
        super().write_json(obj, status)


class FileHandler(WebHandler):
    """Answers with one of the page's files (no key: they hold nothing secret; the page asks
    for the key itself)."""

    public = True

    def _check_access(self) -> None:
        super()._check_access()
        # A name that is not one of the page's files is the API's 404 whatever the method
        # (not a 405: with --api-prefix /web, ``POST /web/nothing`` is an unknown API path).
        name = self.path_args[0] if self.path_args else PAGE
        if name not in self.assets or (self.path_args and name == PAGE):
            raise mapper.NotFound.unknown_path(self.request.method or "GET", self.request.path,
                                               self.state.settings.api_prefix)

    def _send(self, name: str) -> None:
        asset = self.assets.get(name)
        if asset is None:
            raise mapper.NotFound.unknown_path(self.request.method or "GET", self.request.path,
                                               self.state.settings.api_prefix)
        self.set_header("Content-Type", asset.content_type)
        if name != PAGE and self.get_query_argument("v", "") == asset.version:
            self.set_header("Cache-Control", f"public, max-age={YEAR_S}, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")
        # Tornado adds the ETag and answers If-None-Match with 304 (RequestHandler.finish)
        self.finish(asset.body)


class PageHandler(FileHandler):
    """GET /: the page."""

    def get(self) -> None:
        self._send(PAGE)

    def head(self) -> None:
        self._send(PAGE)


class AssetHandler(FileHandler):
    """GET /web/<name>: one of the page's files, by exact name (the page itself is at / only)."""

    def get(self, name: str) -> None:
        self._send(name)

    def head(self, name: str) -> None:
        self._send(name)


class LiveHandler(WebHandler):
    """GET /web/api/live (key): the live view's numbers, from the /metrics series."""

    def get(self) -> None:
        assert self.sampler is not None
        sampler = self.sampler
        if not sampler.samples or sampler.clock() - sampler.samples[-1].at >= SAMPLE_EVERY_S:
            series = sampler.sample()
        else:
            series = read_series(sampler.registry)
        files = [(e.id, e.size) for e in self.state.registry.scan().values()]
        status = self.state.bridge.fresh_status()
        default = status.default_model if status else self.state.settings.model
        body = live_view(sampler, series, files, default)
        body["time"] = time.time()
        self.write_json(body)


class SettingsViewHandler(WebHandler):
    """GET /web/api/settings (key): the effective settings and their sources; key names only."""

    def get(self) -> None:
        self.write_json(settings_view(self.state.settings, self.state.keys.names))
