"""``hearth serve``: bootstrap, then start and supervise the api and scheduler processes.

The api and the scheduler are spawned here; the scheduler spawns the workers. Ctrl-C or SIGTERM
stops the scheduler first (it stops its workers), then the api. If either child dies on its own
the whole server stops with an error: a half-running server is worse than none.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TextIO

import msgspec
from hearth.api.app import ApiSpec
from hearth.scheduler.core import SchedulerSpec
from hearth.tools import key_file
from hearth.tools.cli.bootstrap import default_model_ids, ensure_default_models
from hearth.tools.cli.catalogue import CatalogueError
from hearth.tools.cli.keys import key_path, load_or_create_key
from hearth.tools.curve_keys import SCHEDULER_KEY, CurveKeyError
from hearth.tools.curve_keys import key_path as curve_key_path
from hearth.tools.curve_keys import load_or_create as load_or_create_curve
from hearth.tools.key_file import KeyFileError
from hearth.tools.proc import spawn_process
from hearth.tools.settings import Settings
from hearth.tools.tls import TlsError, pinned_client_context
from hearth.tools.tls import check as check_tls

STOP_GRACE_S = 15.0


def _say(msg: str) -> None:
    _tell(f"hearth: {msg}", sys.stderr)


def _tell(line: str, stream: TextIO) -> None:
    """Print one line, and carry on if nobody reads it any more: with a closed terminal or a
    reader that went away (``hearth serve | head``, a launcher that died), the write fails
    with EPIPE, and letting that escape would skip stopping the children — the interpreter
    would then wait for them at exit, for ever (found: SIGTERM was ignored that way). The
    stream then goes to /dev/null, as Python's documentation advises for EPIPE, so that what is
    still buffered does not fail again at exit (which would make the exit status 120)."""
    try:
        print(line, file=stream, flush=True)
    except OSError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no file descriptor behind it: nothing more to do
            pass


def _health(settings: Settings, tls: ssl.SSLContext | None) -> tuple[int, bytes] | None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    conn = (http.client.HTTPSConnection(host, settings.port, timeout=2, context=tls) if tls
            else http.client.HTTPConnection(host, settings.port, timeout=2))
    try:
        conn.request("GET", "/health", headers={"Host": "localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return None
    finally:
        conn.close()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = False
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="hearth-"))  # 0700: private sockets

        def ep(name: str) -> str:
            return f"ipc://{self.runtime_dir / name}"

        self.intake, self.control, self.events = ep("intake"), ep("control"), ep("events")
        # Our api creates this once it has bound the port: until then a /health answer on that
        # port would come from someone else (say, another hearth already running there).
        self.listening = self.runtime_dir / "listening"
        # With TLS, our own /health wait trusts exactly the configured certificate
        # (tools/tls.py says why the host name need not match).
        self.tls = pinned_client_context(settings.tls_cert) if settings.tls_cert else None
        self.api: BaseProcess | None = None
        self.scheduler: BaseProcess | None = None

    def start(self) -> None:
        s = self.settings
        self.api = spawn_process("hearth.api.app:api_main", msgspec.msgpack.encode(ApiSpec(
            settings=s, intake_endpoint=self.intake, events_endpoint=self.events,
            listening_file=str(self.listening))), name="hearth-api")
        self.scheduler = spawn_process(
            "hearth.scheduler.server:scheduler_main", msgspec.msgpack.encode(SchedulerSpec(
                settings=s, intake_endpoint=self.intake, control_endpoint=self.control,
                events_endpoint=self.events,
                curve_key_file=str(curve_key_path(SCHEDULER_KEY)))), name="hearth-scheduler")

    def children_alive(self) -> bool:
        return all(p is not None and p.exitcode is None for p in (self.api, self.scheduler))

    def wait_ready(self) -> bool:
        """Block until /health says the default model serves. False if the server died or the
        default model failed to load (the reason is printed)."""
        said_loading = False
        while not self.stopping:
            if not self.children_alive():
                return False
            if not self.listening.exists():
                time.sleep(0.05)
                continue
            got = _health(self.settings, self.tls)
            if got is not None:
                status, body = got
                if status == 200:
                    return True
                try:
                    info = msgspec.json.decode(body)
                except msgspec.DecodeError:
                    info = {}
                state = info.get("status") if isinstance(info, dict) else None
                if state == "error":
                    _say(str(info.get("reason")))
                    return False
                if state == "loading" and not said_loading:
                    _say(str(info.get("reason")))
                    said_loading = True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """The api first: it answers new requests 503 and waits (up to --shutdown-grace) for
        those in flight, which the scheduler and workers keep serving; then the scheduler, which
        stops its workers."""
        self.stopping = True
        grace = self.settings.shutdown_grace
        for proc, wait in ((self.api, grace + STOP_GRACE_S), (self.scheduler, STOP_GRACE_S)):
            if proc is not None and proc.exitcode is None:
                proc.terminate()
            if proc is not None:
                proc.join(wait)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(5)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """``spawn`` starts multiprocessing's resource-tracker helper process; it would otherwise
    outlive us by a moment. Stop it so that nothing of ours is left when ``serve`` returns."""
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)
    if callable(stop):
        try:
            stop()
        except Exception:
            pass


def serve(settings: Settings) -> int:
    try:  # before any download or process: a bad certificate is a one-line error
        check_tls(settings)
    except TlsError as exc:
        _say(str(exc))
        return 2
    file_keys: list[tuple[str, str]] = []
    if settings.keys_file:  # the same: a missing file or a bad line is one line, exit 2
        try:
            file_keys = key_file.read(settings.keys_file, key_file.taken_names(settings)).keys
        except KeyFileError as exc:
            _say(str(exc))
            return 2
        if not file_keys and not settings.key_ring():
            _say(f"the key file {settings.keys_file} holds no keys and no other API key is "
                 "configured, so no request could get in: add a line 'name = key'")
            return 2
        loose = key_file.loose_permissions(settings.keys_file)
        if loose:
            _say(f"warning: {loose}")
    models_dir = Path(settings.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if settings.model in default_model_ids():
        try:
            ensure_default_models(models_dir)
        except CatalogueError as exc:
            _say(str(exc))
            return 3
    elif not (models_dir / f"{settings.model}.gguf").is_file():
        _say(f"the model '{settings.model}' is not in {models_dir} (expected "
             f"{settings.model}.gguf)")
        return 2
    curve_public = ""
    if settings.worker_listen:
        try:
            curve_public, _secret = load_or_create_curve(curve_key_path(SCHEDULER_KEY))
        except CurveKeyError as exc:
            _say(str(exc))
            return 2
        if not settings.worker_keys and not settings.worker_keys_file:
            _say("warning: --worker-listen is set but no worker key is listed ([workers] or "
                 "--worker-keys-file): every remote worker will be refused")
    generated = False
    if not settings.key_ring() and not settings.keys_file:
        settings = msgspec.structs.replace(settings, api_keys=[load_or_create_key()],
                                           sources={**settings.sources, "api_keys": "generated"})
        generated = True

    sup = Supervisor(settings)
    got_signal = {"sig": 0}

    def on_signal(signum: int, _frame: object) -> None:
        got_signal["sig"] = signum
        sup.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if "*" in settings.trusted_hosts:
        _say("warning: --trusted-hosts '*' accepts any Host header, which lets web pages on "
             "other sites reach this server through DNS rebinding; list the names instead")
    _say(f"starting: model '{settings.model}', {settings.parallel} slots x "
         f"{settings.ctx_size} tokens, {settings.effective_threads()} threads")
    sup.start()
    try:
        if not sup.wait_ready():
            if got_signal["sig"]:
                return 0
            _say("the server could not start")
            return 1
        key_note = f"  (saved in {key_path()})" if generated else ""
        _tell(f"hearth is ready at {settings.base_url}", sys.stdout)
        if generated:
            _tell(f"API key: {settings.api_keys[0]}{key_note}", sys.stdout)
        else:
            names = ", ".join(name for name, _ in settings.key_ring() + file_keys)
            watched = (f"; {settings.keys_file} is re-read when it changes"
                       if settings.keys_file else "")
            _tell(f"API keys: the configured ones ({names}){watched}", sys.stdout)
        if settings.worker_listen:
            _tell(f"remote workers join at {settings.worker_listen} with: hearth worker "
                  f"--join {settings.worker_listen} --server-key '{curve_public}'", sys.stdout)
        if settings.web:
            origin = settings.base_url.removesuffix(settings.api_prefix)
            _tell(f"web page: {origin}/ (--no-web turns it off)", sys.stdout)
        while not sup.stopping:
            if not sup.children_alive():
                _say("a server process died unexpectedly; stopping")
                return 1
            time.sleep(0.25)
        return 0
    finally:
        try:
            _say("stopping")
        finally:
            sup.stop()
