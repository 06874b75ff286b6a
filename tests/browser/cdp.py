"""Drive Debian's headless Chromium over the Chrome DevTools Protocol (CDP), for the browser
tests: no second browser stack, only a WebSocket to the browser the tests already use.

:class:`Browser` starts chromium with ``--remote-debugging-port=0`` in its own profile, reads
the port it chose from the profile's ``DevToolsActivePort`` file, and attaches to its page.
Commands are answered in order of their ids; every event is kept (``events``) so a test can
look at what happened afterwards: each request the page made (``Network.requestWillBeSent``),
each dialog it tried to open (``Page.javascriptDialogOpening``; dismissed at once).
The protocol: https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import alive, descendants
from websockets.sync.client import ClientConnection, connect

Event = dict[str, Any]


def find_chromium() -> str:
    """The chromium binary. Without one the calling test fails with what to do (it is called
    first thing in the test, so this is a failure, not a set-up error) or, with
    HEARTH_SKIP_BROWSER=1, is skipped."""
    if os.environ.get("HEARTH_SKIP_BROWSER") == "1":
        pytest.skip("HEARTH_SKIP_BROWSER=1: the headless-browser tests are skipped")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/ensure-chromium (as root it installs "
                    "Debian's chromium; ./run-tests does this), or set HEARTH_SKIP_BROWSER=1 to "
                    "skip the browser tests", pytrace=False)
    return path


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop chromium started in a session of its own, and anything that left its group."""
    children = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pid in children:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless chromium with one page, driven over CDP. Use as a context manager."""

    def __init__(self, chromium: str, profile: Path, width: int = 1200, height: int = 800,
                 extra_args: tuple[str, ...] = ()) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / f"{profile.name}.log"
        with self.log.open("wb") as err:
            # A session of its own, so its renderer/zygote children go with it.
            self.proc = subprocess.Popen([
                chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--no-proxy-server",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--force-color-profile=srgb",
                f"--window-size={width},{height}", "--remote-debugging-port=0",
                "--remote-allow-origins=*", f"--user-data-dir={profile}", *extra_args,
                "about:blank",
            ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        self.events: list[Event] = []
        self._results: dict[int, Event] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self._closed = False
        self._failure: Exception | None = None
        try:
            port = self._port(profile / "DevToolsActivePort")
            # entered as a context manager, as websockets 15+ asks (closed in close())
            self.ws = connect(self._page_url(port), max_size=None, open_timeout=30).__enter__()
        except BaseException:
            stop_process(self.proc)
            raise
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._set_up(width, height)
        except BaseException:  # no chromium left behind by a failed start
            self.close()
            raise

    def _set_up(self, width: int, height: int) -> None:
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        # every Content-Security-Policy violation of every page, for csp_violations()
        self.send("Page.addScriptToEvaluateOnNewDocument", source=(
            "window.__cspViolations = [];"
            "document.addEventListener('securitypolicyviolation', (e) => "
            "window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"))

    # ---- connection ----------------------------------------------------------------------

    def _port(self, active: Path, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if active.exists():
                text = active.read_text().split("\n")
                if text and text[0].strip().isdigit():
                    return int(text[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise CdpError(f"chromium did not open its DevTools port; its log:\n"
                       f"{self.log.read_text(errors='replace')[-3000:]}")

    @staticmethod
    def _page_url(port: int) -> str:
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise CdpError("chromium has no page target")
            time.sleep(0.05)

    def _read(self) -> None:
        conn: ClientConnection = self.ws
        try:
            for raw in conn:
                msg = json.loads(raw)
                if msg.get("method") == "Page.javascriptDialogOpening":
                    # Dismissed at once (a dialog blocks the page); the test sees the event.
                    self._send_nowait("Page.handleJavaScriptDialog", accept=False)
                with self._cond:
                    if "id" in msg:
                        self._results[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()
        except Exception as exc:  # the connection closed: waiters are told why
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    def _send_nowait(self, method: str, **params: Any) -> int:
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        return msg_id

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Run one CDP command; its result, or CdpError with the browser's error."""
        msg_id = self._send_nowait(method, **params)
        with self._cond:
            if not self._cond.wait_for(
                    lambda: msg_id in self._results or self._failure is not None, timeout):
                raise CdpError(f"{method}: no answer within {timeout} s")
            if msg_id not in self._results:
                raise CdpError(f"{method}: the DevTools connection failed: {self._failure!r}")
            msg = self._results.pop(msg_id)
        if "error" in msg:
            raise CdpError(f"{method}: {msg['error']}")
        return dict(msg.get("result", {}))

    # ---- helpers -------------------------------------------------------------------------

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its load event."""
        seen = len(self.events)
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout=timeout, since=seen)

    def wait_event(self, method: str, predicate: Callable[[Event], bool] = lambda e: True,
                   timeout: float = 30.0, since: int = 0) -> Event:
        def found() -> Event | None:
            return next((e for e in self.events[since:]
                         if e.get("method") == method and predicate(e)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise CdpError(f"no {method} event within {timeout} s")
            event = found()
        assert event is not None
        return event

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"{expression!r} still falsy after {timeout} s")
            time.sleep(interval)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as keyboard input (Input.insertText)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def requests(self) -> list[dict[str, Any]]:
        """Every request the page made so far (``Network.requestWillBeSent``'s ``request``)."""
        return [e["params"]["request"] for e in list(self.events)
                if e.get("method") == "Network.requestWillBeSent"]

    def csp_violations(self) -> list[str]:
        """The page's Content-Security-Policy violations so far (directive, blocked URI)."""
        return list(self.evaluate("window.__cspViolations || []"))

    def exceptions(self) -> list[str]:
        """Uncaught script exceptions so far (Runtime.exceptionThrown)."""
        return [str(e["params"]["exceptionDetails"]) for e in list(self.events)
                if e.get("method") == "Runtime.exceptionThrown"]

    def dialogs(self) -> list[Event]:
        return [e for e in list(self.events) if e.get("method") == "Page.javascriptDialogOpening"]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.ws.__exit__(None, None, None)
        finally:
            stop_process(self.proc)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
