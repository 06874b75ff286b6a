"""The api process: a Tornado application on asyncio, bridged to the scheduler over ZeroMQ."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, NoReturn

import msgspec
import tornado.ioloop
import tornado.web
from hearth.api.access import CorsPolicy, HostCheck, KeyRing
from hearth.api.bridge import Bridge
from hearth.api.handlers.base import AppState, NotFoundHandler, body_backstop
from hearth.api.handlers.chat import ChatCompletionsHandler
from hearth.api.handlers.completions import CompletionsHandler
from hearth.api.handlers.embeddings import EmbeddingsHandler
from hearth.api.handlers.health import HealthHandler
from hearth.api.handlers.messages import CountTokensHandler, MessagesHandler
from hearth.api.handlers.metrics import MetricsHandler
from hearth.api.handlers.models import ModelsHandler
from hearth.api.handlers.openapi import OpenApiHandler
from hearth.api.handlers.responses import (
    InputItemsHandler,
    ResponsesHandler,
    StoredResponseHandler,
)
from hearth.api.handlers.tokenize import DetokenizeHandler, TokenizeHandler
from hearth.api.handlers.web import (
    AssetHandler,
    LiveHandler,
    PageHandler,
    SettingsViewHandler,
    WebHandler,
    load_assets,
)
from hearth.api.http_server import HEADER_BACKSTOP_BYTES, HttpServer
from hearth.api.key_watch import KeyFileWatch
from hearth.api.live_view import LiveSampler
from hearth.api.local_names import local_names
from hearth.api.metrics import Metrics
from hearth.api.request_log import RequestLog
from hearth.api.responses_store import ResponseStore
from hearth.scheduler.errors import ShuttingDown
from hearth.tools import key_file, logs
from hearth.tools.key_file import KeyFileError
from hearth.tools.proc import child_setup, parent_alive
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings
from hearth.tools.tls import TlsError, server_context

EXIT_CANNOT_LISTEN = 3
FAIL_WRITE_S = 2.0  # for handlers to write the error of requests cut off at shutdown


class ApiSpec(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    intake_endpoint: str
    events_endpoint: str
    listening_file: str = ""  # created once the port is bound (the supervisor waits for it)


def web_routes(state: AppState,
               sampler: LiveSampler | None) -> list[tuple[str, type[WebHandler], dict[str, Any]]]:
    """The web page's routes (api/handlers/web.py); none with --no-web."""
    if not state.settings.web:
        return []
    web = {"state": state, "assets": load_assets(state.settings.api_prefix),
           "sampler": sampler or LiveSampler(state.metrics.live)}
    return [(r"/", PageHandler, web), (r"/web/api/live", LiveHandler, web),
            (r"/web/api/settings", SettingsViewHandler, web), (r"/web/([^/]+)", AssetHandler, web)]


def responses_routes(init: dict[str, Any], p: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """The Responses API's routes (api/handlers/responses.py)."""
    return [(rf"{p}/responses", ResponsesHandler, init),
            (rf"{p}/responses/([^/]+)", StoredResponseHandler, init),
            (rf"{p}/responses/([^/]+)/input_items", InputItemsHandler, init)]


def messages_routes(state: AppState) -> list[tuple[str, type[MessagesHandler | CountTokensHandler],
                                                    dict[str, Any]]]:
    """Anthropic's Messages API (api/handlers/messages.py)."""
    p, init = state.settings.api_prefix, {"state": state}
    return [(rf"{p}/messages", MessagesHandler, init),
            (rf"{p}/messages/count_tokens", CountTokensHandler, init)]


def make_app(state: AppState, sampler: LiveSampler | None = None) -> tornado.web.Application:
    """The api's routes. ``sampler``: the live view's (started by ``serve`` so its history
    begins with the server); one is made if None."""
    p = state.settings.api_prefix
    init = {"state": state}
    # The API's routes come first: Tornado takes the first match, so with ``--api-prefix /web``
    # ``/web/models`` is the API's and ``/web/<file>`` (no API path is one segment named like a
    # page file) is still the page's.
    return tornado.web.Application(
        [
            (r"/health", HealthHandler, init),
            (rf"{p}/health", HealthHandler, init),
            (r"/metrics", MetricsHandler, init),
            (rf"{p}/models", ModelsHandler, init),
            (rf"{p}/models/([^/]+)", ModelsHandler, init),
            (rf"{p}/chat/completions", ChatCompletionsHandler, init),
            (rf"{p}/completions", CompletionsHandler, init),
            (rf"{p}/embeddings", EmbeddingsHandler, init),
            (rf"{p}/tokenize", TokenizeHandler, init),
            (rf"{p}/detokenize", DetokenizeHandler, init),
            (rf"{p}/openapi.json", OpenApiHandler, init),
            *responses_routes(init, p),
            *messages_routes(state),
            *web_routes(state, sampler),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=init,
        compress_response=False,
        # one line per request (api.request_log)
        log_function=RequestLog(state.settings, state.keys),
    )


def _fail(message: str) -> NoReturn:
    print(f"hearth: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_CANNOT_LISTEN)


async def serve(spec: ApiSpec, ppid: int) -> None:
    s = spec.settings
    tls = None
    if s.tls_cert:  # checked by `hearth serve` already; the files may have changed since
        try:
            tls = server_context(s.tls_cert, s.tls_key)
        except TlsError as exc:
            _fail(str(exc))
    fixed = s.key_ring()
    keys = KeyRing(fixed)
    watch = None
    if s.keys_file:  # checked by `hearth serve` too; read again: it may have changed since
        taken = key_file.taken_names(s)
        try:
            loaded = key_file.read(s.keys_file, taken)
        except KeyFileError as exc:
            _fail(str(exc))
        keys.replace(fixed + loaded.keys)
        watch = KeyFileWatch(s.keys_file, fixed, taken, keys, loaded)
    bridge = Bridge(spec.intake_endpoint, spec.events_endpoint)
    bridge.start()
    state = AppState(settings=s, hosts=HostCheck(s.trusted_hosts, local_names(s.host)),
                     cors=CorsPolicy(s.cors, s.cors_origins), keys=keys,
                     bridge=bridge, registry=ModelRegistry(s.models_dir, s.aliases()),
                     responses=ResponseStore(s.responses_store_max, s.responses_store_bytes),
                     # names at scrape time: the key file may change them
                     metrics=Metrics(bridge.fresh_status, lambda: keys.names,
                                     bridge.in_flight_by_key))
    # Tornado's own limits are backstops far above ours: handlers read and drop an oversized
    # body and answer 413 themselves (see BaseHandler.data_received), and HttpServer answers
    # headers over MAX_HEADER_BYTES with 431. Tornado's idle_connection_timeout is the time a
    # request's headers may take (and a kept-alive connection may wait for one); the body
    # timeout is BaseHandler's, between two reads (Tornado's body_timeout bounds the whole body).
    sampler = LiveSampler(state.metrics.live)
    if s.web:  # one reading a second from the start, for the live view's chart
        tornado.ioloop.PeriodicCallback(sampler.tick, 1000).start()
    server = HttpServer(make_app(state, sampler), max_body_size=body_backstop(s.max_body),
                        max_header_size=HEADER_BACKSTOP_BYTES,
                        idle_connection_timeout=s.header_timeout or None,
                        xheaders=False, ssl_options=tls)
    try:
        server.listen(s.port, address=s.host)
    except OSError as exc:
        bridge.close()
        _fail(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}")
    if spec.listening_file:
        open(spec.listening_file, "x").close()
    watching = asyncio.create_task(watch.run()) if watch else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            if not parent_alive(ppid):
                break
    # Drain: new requests get 503 shutting_down (BaseHandler.prepare); requests in flight may
    # finish within --shutdown-grace; then the port closes.
    state.draining = True
    if watching:
        watching.cancel()
    deadline = loop.time() + s.shutdown_grace
    while bridge.in_flight() and loop.time() < deadline and parent_alive(ppid):
        await asyncio.sleep(0.05)
    if bridge.in_flight():  # out of time: they end with an error (a stream's error event)
        bridge.fail_in_flight(ShuttingDown("The server is shutting down: the request did not "
                                           "finish within its shutdown grace period."))
        deadline = loop.time() + FAIL_WRITE_S
        while bridge.in_flight() and loop.time() < deadline:
            await asyncio.sleep(0.02)
    server.stop()  # answers the connections already waiting to be accepted, then closes
    await asyncio.sleep(0.2)  # let the last writes go out
    bridge.close()


def api_main(spec_bytes: bytes) -> None:
    """Process entry point (spawned by ``hearth serve``)."""
    spec = msgspec.msgpack.decode(spec_bytes, type=ApiSpec)
    ppid = os.getppid()
    child_setup("hearth-api")
    logs.configure(spec.settings.log_format)
    asyncio.run(serve(spec, ppid))
