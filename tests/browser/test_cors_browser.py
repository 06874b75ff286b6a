"""hearth's CORS rules as a real browser applies them: Debian's headless Chromium loads a page
from a small static server on one port, and the page's script streams a chat completion from a
real ``hearth serve`` on another port.

The page reports what it could read by POSTing it back to its own server (same origin, so that
report is never the thing CORS blocks); the test waits for that report, then stops Chromium.
(``--dump-dom`` was tried first: it returns before an async fetch has read a stream, or not,
depending on timing.) ``--host-resolver-rules`` serves the same page under a foreign host name.

Chromium must be installed (``scripts/ensure-chromium``, which ``./run-tests`` calls). Without
it these tests fail, unless HEARTH_SKIP_BROWSER=1 is set: then they are skipped.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cdp import find_chromium, stop_process
from harness import API_KEY, Server
from sdk_headers import SDK_PREFLIGHT_HEADERS

pytestmark = pytest.mark.browser

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")
FOREIGN = "foreign.example"  # Chromium resolves it to 127.0.0.1 (--host-resolver-rules)
MAX_TOKENS = 8

# The page: POST a streamed chat completion to hearth with a key, a JSON body and any EXTRA
# headers (so the browser sends a preflight first), read the body to its end with a stream
# reader, parse the SSE events, and report what it read — or the error the browser gave it —
# to /report.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hearth CORS check</title></head><body>
<script>
const API = %(api)s, KEY = %(key)s, MAX_TOKENS = %(max_tokens)d, EXTRA = %(extra)s;
const report = (outcome) => fetch("/report", {method: "POST", body: JSON.stringify(outcome)});
(async () => {
  let raw = "";
  try {
    const response = await fetch(API + "/chat/completions", {
      method: "POST",
      headers: Object.assign({"Authorization": "Bearer " + KEY,
                              "Content-Type": "application/json"}, EXTRA),
      body: JSON.stringify({model: "tiny", stream: true, max_tokens: MAX_TOKENS,
                            stream_options: {include_usage: true},
                            messages: [{role: "user", content: "Hello from a browser"}]}),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      raw += decoder.decode(value, {stream: true});
    }
    raw += decoder.decode();
    let content = "", done = false, finish = null, usage = null, chunks = 0;
    for (const event of raw.split("\\n\\n")) {
      if (!event.startsWith("data: ")) continue;
      const data = event.slice("data: ".length);
      if (data === "[DONE]") { done = true; continue; }
      const chunk = JSON.parse(data);
      chunks += 1;
      for (const choice of chunk.choices) {
        content += choice.delta.content || "";
        finish = choice.finish_reason || finish;
      }
      usage = chunk.usage || usage;
    }
    await report({read: true, status: response.status,
                  type: response.headers.get("content-type"),
                  content, done, finish, usage, chunks, bytes: raw.length});
  } catch (e) {
    await report({read: false, error: e.name + ": " + e.message, bytes: raw.length});
  }
})();
</script></body></html>
"""


# ---- chromium ---------------------------------------------------------------------------------


# find_chromium: tests/browser/cdp.py (shared with the web page's tests)


# ---- the page's server ------------------------------------------------------------------------


class PageServer:
    """Serves PAGE on GET / (any Host) and collects the page's POST /report outcomes."""

    def __init__(self) -> None:
        self.page = b""
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls do_<METHOD>
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(outer.page)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(outer.page)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()
                if self.path == "/report":
                    outer.reports.put(json.loads(body))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    srv = PageServer()
    yield srv
    srv.close()


def open_page(chromium: str, pages: PageServer, profile: Path, host: str,
              hearth: Server, extra_headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Load the page at http://{host}:{pages.port}/ in headless Chromium, pointed at ``hearth``,
    its fetch sending ``extra_headers`` too; return the page's report."""
    pages.page = (PAGE % {"api": json.dumps(hearth.base_url), "key": json.dumps(API_KEY),
                          "max_tokens": MAX_TOKENS,
                          "extra": json.dumps(extra_headers or {})}).encode()
    while not pages.reports.empty():
        pages.reports.get_nowait()
    profile.mkdir(parents=True, exist_ok=True)
    log = profile.parent / f"{profile.name}.log"
    with log.open("wb") as err:
        # A session of its own, so its renderer/zygote children go with it.
        proc = subprocess.Popen([
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--no-proxy-server",
            "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={profile}", f"--host-resolver-rules=MAP {FOREIGN} 127.0.0.1",
            f"http://{host}:{pages.port}/",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True)
    try:
        return pages.reports.get(timeout=60)
    except queue.Empty:
        pytest.fail(f"the page sent no report within 60 s; chromium's stderr:\n"
                    f"{log.read_text(errors='replace')[-3000:]}")
    finally:
        stop_process(proc)


# ---- hearth -----------------------------------------------------------------------------------


@pytest.fixture
def start_hearth(tmp_path: Path, tiny_model_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``hearth serve`` on the tiny model with extra flags; stopped cleanly at the end."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    started: list[Server] = []

    def start(*args: str) -> Server:
        srv = Server(models, "tiny", tmp_path / f"home{len(started)}",
                     args=(*TINY_ARGS, *args))
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        assert srv.stop() == 0, "".join(srv.stderr)
        assert srv.orphans() == []


def chat_counts(hearth: Server) -> tuple[float, float]:
    """(preflights answered, keyed chat requests answered 200) from hearth's /metrics."""
    text = hearth.request("GET", "/metrics").body.decode()
    preflights = posts = 0.0
    for labels, value in re.findall(r'^hearth_requests_total\{(.*)\} (\S+)$', text, re.M):
        if 'endpoint="chat.completions"' not in labels:
            continue
        if 'status="204"' in labels:
            preflights += float(value)
        elif 'status="200"' in labels:
            posts += float(value)
    return preflights, posts


def assert_read_the_stream(outcome: dict[str, Any]) -> None:
    assert outcome["read"] is True, outcome
    assert outcome["status"] == 200
    assert outcome["type"].startswith("text/event-stream")
    assert outcome["done"] is True, "the page did not read up to data: [DONE]"
    assert outcome["finish"] == "length"
    assert outcome["usage"]["completion_tokens"] == MAX_TOKENS
    assert isinstance(outcome["content"], str)
    assert outcome["chunks"] >= 3  # role, content..., usage


def assert_blocked_at_preflight(hearth: Server, run_page: Callable[[], dict[str, Any]]) -> None:
    """The page's fetch fails, and hearth saw why: the browser asked (a preflight) and, not
    allowed, never sent the keyed request."""
    preflights, posts = chat_counts(hearth)
    outcome = run_page()
    assert outcome["read"] is False, outcome
    assert outcome["error"].startswith("TypeError"), outcome  # fetch's network/CORS error
    assert outcome["bytes"] == 0
    assert chat_counts(hearth) == (preflights + 1, posts)


# ---- the checks -------------------------------------------------------------------------------


def test_a_localhost_page_reads_a_stream_and_a_foreign_page_cannot(
        pages: PageServer, start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth()
    assert_read_the_stream(open_page(chromium, pages, tmp_path / "local", "localhost", hearth))

    assert_blocked_at_preflight(
        hearth, lambda: open_page(chromium, pages, tmp_path / "foreign", FOREIGN, hearth))

    # hearth goes on serving, plain clients and the allowed page alike
    assert hearth.chat({"model": "tiny", "max_tokens": 2,
                        "messages": [{"role": "user", "content": "Hi"}]}).status == 200
    assert_read_the_stream(open_page(chromium, pages, tmp_path / "again", "localhost", hearth))


def test_cors_origins_lets_a_foreign_page_read(
        pages: PageServer, start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth("--cors-origins", f"http://{FOREIGN}:{pages.port}")
    assert_read_the_stream(open_page(chromium, pages, tmp_path / "foreign", FOREIGN, hearth))


def test_no_cors_blocks_even_a_localhost_page(
        pages: PageServer, start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth("--no-cors")
    assert_blocked_at_preflight(
        hearth, lambda: open_page(chromium, pages, tmp_path / "local", "localhost", hearth))
    # and a plain client still gets its answer
    assert hearth.chat({"model": "tiny", "max_tokens": 2,
                        "messages": [{"role": "user", "content": "Hi"}]}).status == 200


# An SDK's headers as a page sends them: openai-node 4's set (User-Agent included: Firefox and
# Safari put it in the preflight; Chromium drops it from fetch), Anthropic's, and a
# x-stainless-* name no SDK sends yet: each is a header the browser must ask about first.
SDK_HEADERS = {
    name: ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
           if name == "user-agent" else "1")
    for name in (*SDK_PREFLIGHT_HEADERS["openai-node-4"],
                 *SDK_PREFLIGHT_HEADERS["anthropic-sdk-typescript"], "x-stainless-brand-new")
    if name not in ("authorization", "content-type", "x-api-key")  # the page sets its own
}


def test_a_page_sending_an_sdk_s_headers_reads_a_stream(
        pages: PageServer, start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth()
    preflights, posts = chat_counts(hearth)
    assert_read_the_stream(open_page(chromium, pages, tmp_path / "sdk", "localhost", hearth,
                                     SDK_HEADERS))
    # the browser asked first (its preflight named the headers), then sent the request
    assert chat_counts(hearth) == (preflights + 1, posts + 1)
