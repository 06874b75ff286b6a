"""The web page at ``/`` in headless Chromium, driven over CDP (tests/browser/cdp.py) against a
real ``hearth serve`` on the tiny model: the key prompt, a streamed reply, Stop, a second turn,
the live view, the settings view, the API reference, and that an untrusted reply cannot run
script. Every request the browser makes is recorded: none leaves the server's origin.

Screenshots of each view go to ``build/screenshots/`` (or ``$HEARTH_SCREENSHOTS``) as
``web-*-tiny.png``; the README's images come from test_web_page_screenshots.py (the default
instruct model).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cdp import Browser, find_chromium
from harness import API_KEY, Server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("HEARTH_SCREENSHOTS") or ROOT / "build" / "screenshots")
# Long enough that a reply is still streaming when the test looks (and stops it).
LONG_ARGS = ("--parallel", "2", "--ctx-size", "100000", "--threads", "1")
# After Stop, /health must show the slot free. Issue 19 measures it against one second; how long
# it took is printed (timings are not asserted: a loaded machine is slow, not wrong), and the
# test waits this long at most for the cancel to arrive at all.
FREED_WAIT_S = 30.0

REPLY = "#messages .message.assistant:last-of-type"


@pytest.fixture
def start_hearth(tmp_path: Path, tiny_model_path: Path) -> Iterator[Callable[..., Server]]:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    started: list[Server] = []

    def start(*args: str) -> Server:
        srv = Server(models, "tiny", tmp_path / f"home{len(started)}", args=(*LONG_ARGS, *args))
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        assert srv.stop() == 0, "".join(srv.stderr)
        assert srv.orphans() == []


def origin(hearth: Server) -> str:
    return f"http://127.0.0.1:{hearth.port}"


def open_page(browser: Browser, hearth: Server) -> None:
    browser.navigate(origin(hearth) + "/")
    browser.wait_for("document.readyState === 'complete' && window.hearthMarkdown !== undefined")


def enter_key(browser: Browser, key: str) -> None:
    browser.wait_for("!document.getElementById('key-panel').hidden")
    browser.evaluate("document.getElementById('key-input').value = ''")
    browser.type_into("#key-input", key)
    browser.click("#key-save")


def set_field(browser: Browser, selector: str, value: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}")


def send_prompt(browser: Browser, text: str) -> None:
    browser.type_into("#prompt", text)
    browser.click("#send")


def reply_text(browser: Browser) -> str:
    return str(browser.evaluate(
        f"(document.querySelector({json.dumps(REPLY + ' .body')}) || {{}}).textContent || ''"))


def reply_finish(browser: Browser) -> str:
    return str(browser.evaluate(
        f"(document.querySelector({json.dumps(REPLY)}) || {{dataset: {{}}}}).dataset.finish"
        " || ''"))


def chat_bodies(browser: Browser) -> list[dict[str, Any]]:
    """The JSON bodies of the page's chat completion requests, in order."""
    out = []
    for req in browser.requests():
        if req["url"].endswith("/v1/chat/completions") and req["method"] == "POST":
            post = req.get("postData")
            if post is None and req.get("postDataEntries"):
                post = "".join(base64.b64decode(e["bytes"]).decode()
                               for e in req["postDataEntries"])
            out.append(json.loads(post))
    return out


def assert_same_origin(browser: Browser, hearth: Server) -> None:
    """No request left the server's origin, the page broke no CSP rule and threw nothing."""
    urls = [r["url"] for r in browser.requests()]
    assert urls, "the browser made no request"
    foreign = [u for u in urls if not (u.startswith(origin(hearth) + "/") or u.startswith("data:"))]
    assert foreign == [], foreign
    assert browser.csp_violations() == []
    assert browser.exceptions() == []


def health_busy(hearth: Server) -> int:
    return int(hearth.health().json()["slots"]["busy"])


# ---- the checks -------------------------------------------------------------------------------


def test_chat_streams_stops_and_sends_the_history(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth()
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        # the page asks for the key first; a wrong one is refused with the server's message
        enter_key(browser, "not-the-key")
        browser.wait_for("document.getElementById('key-error').textContent"
                         ".includes('Incorrect API key provided')")
        browser.screenshot(SHOTS / "web-key.png")
        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('key-panel').hidden")
        # the key is in sessionStorage, nowhere else
        assert browser.evaluate("sessionStorage.getItem('hearth.apiKey')") == API_KEY
        assert browser.evaluate("document.cookie") == ""
        assert browser.evaluate("localStorage.length") == 0
        # the model picker, from /v1/models, says which are loaded
        assert browser.wait_for("document.getElementById('model').options.length > 0 && "
                                "document.getElementById('model').options[0].textContent") \
            == "tiny (loaded)"

        # a long reply streams in: seen growing several times before it ends
        set_field(browser, "#system", "You are terse.")
        set_field(browser, "#max-tokens", "90000")
        send_prompt(browser, "Tell me a long story")
        lengths = []
        deadline = time.monotonic() + 60
        while len(set(lengths)) < 4 and time.monotonic() < deadline:
            text = reply_text(browser)
            if text and (not lengths or len(text) > lengths[-1]):
                lengths.append(len(text))
            time.sleep(0.02)
        assert len(set(lengths)) >= 4, lengths
        assert reply_finish(browser) == "", "the reply ended before it could be stopped"
        assert health_busy(hearth) == 1

        # Stop cancels it: the page says so and the slot is free at once
        browser.click("#stop")
        stopped = time.monotonic()
        browser.wait_for(f"document.querySelector({json.dumps(REPLY)}).dataset.finish"
                         " === 'stopped'")
        while health_busy(hearth) != 0 and time.monotonic() - stopped < FREED_WAIT_S:
            time.sleep(0.02)
        assert health_busy(hearth) == 0, "Stop did not free the slot"
        print(f"slot free {time.monotonic() - stopped:.3f} s after Stop")
        first_reply = reply_text(browser)
        assert first_reply

        # a second turn sends the whole history: system, user, the (stopped) reply, user
        set_field(browser, "#max-tokens", "6")
        send_prompt(browser, "And then?")
        browser.wait_for(f"document.querySelector({json.dumps(REPLY)}).dataset.finish"
                         " === 'length'")
        bodies = chat_bodies(browser)
        assert len(bodies) == 2
        first, second = bodies
        assert first["stream"] is True and first["max_tokens"] == 90000
        assert [m["role"] for m in second["messages"]] == \
            ["system", "user", "assistant", "user"]
        assert second["messages"][0]["content"] == "You are terse."
        assert second["messages"][2]["content"]  # what the model said before Stop
        assert second["messages"][3]["content"] == "And then?"
        # the reply's usage and speed are shown
        stats = browser.evaluate(f"document.querySelector({json.dumps(REPLY + ' .stats')})"
                                 ".textContent")
        assert "completion tokens" in stats and "tokens/s" in stats and "length" in stats

        # an error is the server's own OpenAI error message
        set_field(browser, "#temperature", "7")
        send_prompt(browser, "Hi")
        error = browser.wait_for(f"(document.querySelector({json.dumps(REPLY + ' .error')})"
                                 " || {}).textContent")
        assert "temperature" in error
        set_field(browser, "#temperature", "0.7")
        browser.screenshot(SHOTS / "web-chat-tiny.png")

        assert browser.dialogs() == []
        assert_same_origin(browser, hearth)
        # the key never went into a URL
        assert not [r["url"] for r in browser.requests() if API_KEY in r["url"]]


def option_labels(browser: Browser) -> list[str]:
    return list(browser.evaluate(
        "Array.from(document.getElementById('model').options).map(o => o.textContent)"))


def test_enter_while_composing_the_picker_s_marks_and_paints_at_most_every_100_ms(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    """Enter that confirms an input method's composition does not send; the model picker's
    "(loaded)" marks follow models loading (on focus, after a reply) and keep the choice; a
    streamed reply is rendered again at most every 100 ms."""
    chromium = find_chromium()
    for name in ("tiny2", "tiny3"):  # two more models, not loaded at start
        shutil.copy(tmp_path / "models" / "tiny.gguf", tmp_path / "models" / f"{name}.gguf")
    # two models at once: loading tiny3 unloads another (which one is the scheduler's call)
    hearth = start_hearth("--ctx-size", "20000", "--max-loaded-models", "2")
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('model').options.length === 3")
        assert option_labels(browser) == ["tiny (loaded)", "tiny2", "tiny3"]

        # Enter during a composition (isComposing, or keyCode 229): nothing is sent
        browser.type_into("#prompt", "日本語")
        composing = browser.evaluate("""(() => {
            const prompt = document.getElementById('prompt');
            const events = [new KeyboardEvent('keydown', {key: 'Enter', isComposing: true,
                                                          bubbles: true, cancelable: true}),
                            new KeyboardEvent('keydown', {key: 'Enter', keyCode: 229,
                                                          bubbles: true, cancelable: true})];
            for (const ev of events) prompt.dispatchEvent(ev);
            return events.map(ev => [ev.isComposing, ev.keyCode, ev.defaultPrevented]);
        })()""")
        assert composing == [[True, 0, False], [False, 229, False]]
        time.sleep(0.2)
        assert browser.evaluate("document.getElementById('prompt').value") == "日本語"
        assert browser.evaluate("document.querySelectorAll('#messages .message').length") == 0
        assert chat_bodies(browser) == []

        # the choice is tiny3; tiny2 loads behind the page's back: focus shows it, choice kept
        set_field(browser, "#model", "tiny3")
        r = hearth.chat({"model": "tiny2", "max_tokens": 1,
                         "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status == 200, r.body
        browser.evaluate("document.getElementById('prompt').focus()")
        browser.evaluate("document.getElementById('model').focus()")
        browser.wait_for("document.getElementById('model').options[1].textContent"
                         " === 'tiny2 (loaded)'")
        assert browser.evaluate("document.getElementById('model').value") == "tiny3"

        # a plain Enter sends (to tiny3, which loads for it, unloading another): after the
        # reply the marks say what the server says
        set_field(browser, "#max-tokens", "3")
        browser.evaluate("document.getElementById('prompt').dispatchEvent(new KeyboardEvent("
                         "'keydown', {key: 'Enter', bubbles: true, cancelable: true}))")
        wait_finish(browser, "length")
        assert chat_bodies(browser)[-1]["messages"] == [{"role": "user", "content": "日本語"}]
        assert chat_bodies(browser)[-1]["model"] == "tiny3"
        browser.wait_for("document.getElementById('model').options[2].textContent"
                         " === 'tiny3 (loaded)'")
        listed = hearth.request("GET", "/v1/models").json()["data"]
        labels = option_labels(browser)
        assert labels == [m["id"] + (" (loaded)" if m["hearth"]["loaded"] else "")
                          for m in listed]
        assert labels[:2] != ["tiny (loaded)", "tiny2 (loaded)"]  # a mark went away
        assert browser.evaluate("document.getElementById('model').value") == "tiny3"

        # a long reply: each render holds more of the reply than the one before, and the last
        # holds the whole reply (the gaps between renders — at least 100 ms by design — are
        # printed, not asserted: timings belong in benchmarks)
        browser.evaluate("""(() => {
            window.__renders = [];
            const markdown = window.hearthMarkdown;  // frozen: wrapped in a new object
            window.hearthMarkdown = {...markdown, render: (text) => {
                window.__renders.push([performance.now(), text.length]);
                return markdown.render(text);
            }};
        })()""")
        set_field(browser, "#model", "tiny")
        set_field(browser, "#max-tokens", "90000")
        send_prompt(browser, "Tell me a long story")
        browser.wait_for("window.__renders.length >= 8")
        browser.click("#stop")
        wait_finish(browser, "stopped")
        renders = browser.evaluate("window.__renders")
        gaps = [b[0] - a[0] for a, b in zip(renders[:-2], renders[1:-1], strict=True)]
        print(f"render gaps while streaming: min {min(gaps):.0f} ms over {len(gaps)}")
        lengths = [n for _, n in renders]
        assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)
        stopped = chat_bodies(browser)  # the stopped reply goes into the next turn's history
        set_field(browser, "#max-tokens", "2")
        send_prompt(browser, "More")
        wait_finish(browser, "length")
        history = chat_bodies(browser)[len(stopped)]["messages"]
        assert len(history[-2]["content"]) == renders[-1][1]
        assert browser.dialogs() == []
        assert_same_origin(browser, hearth)


def wait_finish(browser: Browser, finish: str) -> None:
    browser.wait_for(f"document.querySelector({json.dumps(REPLY)}).dataset.finish"
                     f" === {json.dumps(finish)}")


def test_new_chat_and_turns_without_a_reply_leave_the_history_clean(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    """New chat mid-stream drops the old reply; a turn that got no reply (an error, or stopped
    before any token) is not sent again: no two user messages in a row."""
    chromium = find_chromium()
    hearth = start_hearth()
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('model').options.length > 0")
        set_field(browser, "#system", "Be brief.")

        # New chat while a reply streams: the old reply does not come back into the history
        set_field(browser, "#max-tokens", "90000")
        send_prompt(browser, "Tell me a long story")
        browser.wait_for(f"(document.querySelector({json.dumps(REPLY + ' .body')}) || {{}})"
                         ".textContent")
        browser.click("#new-chat")
        browser.wait_for("document.getElementById('stop').disabled")  # the old send() ended
        assert browser.evaluate("document.querySelectorAll('#messages .message').length") == 0
        set_field(browser, "#max-tokens", "3")
        send_prompt(browser, "Second")
        wait_finish(browser, "length")
        fresh = chat_bodies(browser)[-1]["messages"]
        assert fresh == [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Second"}]
        assert reply_text(browser)

        # an error: the question is not sent again
        set_field(browser, "#temperature", "7")
        send_prompt(browser, "Refused")
        browser.wait_for(f"(document.querySelector({json.dumps(REPLY + ' .error')})"
                         " || {}).textContent")
        set_field(browser, "#temperature", "0.7")

        # stopped before any token (the browser holds the request): not sent again either
        browser.send("Fetch.enable", patterns=[{"urlPattern": "*/v1/chat/completions",
                                                "requestStage": "Request"}])
        seen = len(browser.events)
        send_prompt(browser, "Held")
        browser.wait_event("Fetch.requestPaused", since=seen)
        browser.click("#stop")
        wait_finish(browser, "stopped")
        browser.send("Fetch.disable")
        dropped = browser.evaluate("Array.from(document.querySelectorAll("
                                   "'#messages .message.user[data-dropped]')).map("
                                   "m => m.querySelector('.body').textContent)")
        assert dropped == ["Refused", "Held"]

        send_prompt(browser, "Last")
        wait_finish(browser, "length")
        last = chat_bodies(browser)[-1]["messages"]
        assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
        assert [m["content"] for m in last[:2]] == ["Be brief.", "Second"]
        assert last[2]["content"] and last[3]["content"] == "Last"
        assert browser.dialogs() == []
        assert_same_origin(browser, hearth)


def test_a_key_no_header_can_carry_and_a_model_list_that_fails_are_shown(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth()
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        # fetch() cannot send a header with "ключ" in it: the page says so instead of nothing
        enter_key(browser, "ключ-123")
        error = browser.wait_for("document.getElementById('key-error').textContent")
        assert '"к"' in error and "HTTP header" in error
        assert browser.evaluate("sessionStorage.getItem('hearth.apiKey')") is None
        assert browser.evaluate("document.getElementById('key-panel').hidden") is False

        # the model list fails (the browser answers GET /v1/models with a 503): said, not hidden
        browser.send("Fetch.enable", patterns=[{"urlPattern": "*/v1/models",
                                                "requestStage": "Request"}])
        seen = len(browser.events)
        enter_key(browser, API_KEY)
        paused = browser.wait_event("Fetch.requestPaused", since=seen)
        failure = {"error": {"message": "models are unavailable", "type": "server_error",
                             "param": None, "code": None}}
        browser.send("Fetch.fulfillRequest", requestId=paused["params"]["requestId"],
                     responseCode=503,
                     responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
                     body=base64.b64encode(json.dumps(failure).encode()).decode())
        shown = browser.wait_for("document.getElementById('model-error').hidden === false && "
                                 "document.getElementById('model-error').textContent")
        assert shown == "The model list could not be loaded: models are unavailable"
        browser.send("Fetch.disable")
        assert browser.dialogs() == []
        assert_same_origin(browser, hearth)


def test_live_view_shows_a_busy_slot_then_idle(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth()
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('model').options.length > 0")
        set_field(browser, "#max-tokens", "90000")
        send_prompt(browser, "Keep going")
        browser.wait_for("document.getElementById('stop').disabled === false")

        browser.click("#tabs [data-view=live]")
        busy = "(document.querySelector('#live-models tr[data-model=tiny]') || " \
               "{dataset: {}}).dataset.busy"
        browser.wait_for(f"{busy} === '1'")
        row = browser.evaluate("document.querySelector('#live-models tr[data-model=tiny]')"
                               ".textContent")
        assert "yes" in row and "1 / 2" in row
        # the key's name (never the key) with its request in flight
        keys = browser.wait_for("document.querySelector('#live-keys tbody').textContent")
        assert "key1" in keys and API_KEY not in keys
        browser.wait_for("parseFloat(document.getElementById('live-tps').textContent) > 0")
        browser.screenshot(SHOTS / "web-live-tiny.png")

        browser.click("#tabs [data-view=chat]")
        browser.click("#stop")
        browser.click("#tabs [data-view=live]")
        browser.wait_for(f"{busy} === '0'")
        assert_same_origin(browser, hearth)


def test_settings_view_and_api_reference(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    chromium = find_chromium()
    config = tmp_path / "hearth.toml"
    config.write_text('[models."tiny"]\nctx_size = 1024\ntemperature = 0.5\n'
                      'chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"\n')
    hearth = start_hearth("--cors-origins", "http://app.example:8080", "--config", str(config))
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        enter_key(browser, API_KEY)
        browser.click("#tabs [data-view=settings]")
        rows = browser.wait_for(
            "Array.from(document.querySelectorAll('#settings-table tbody tr')).map("
            "tr => Array.from(tr.cells).map(td => td.textContent))")
        table = {r[0]: r[1:] for r in rows}
        assert table["port"] == [str(hearth.port), "flag", "--port", "HEARTH_PORT"]
        assert table["host"][:2] == ["127.0.0.1", "default"]
        assert table["cors_origins"][:2] == ["http://app.example:8080", "flag"]
        assert table["parallel"][:2] == ["2", "flag"]
        assert table["api_key (names)"][:2] == ["key1", "flag"]
        for name in ("api_prefix", "trusted_hosts", "cors", "verbose", "tls", "models_dir",
                     "max_queue"):
            assert name in table, name
        # the model's own table, read-only like the rest, with the global flag each overrides
        per_model = browser.wait_for(
            "Array.from(document.querySelectorAll('#settings-models tbody tr')).map("
            "tr => Array.from(tr.cells).map(td => td.textContent))")
        by_name = {r[1]: r for r in per_model}
        assert by_name["ctx_size"] == ["tiny", "ctx_size", "1024", "config file", "--ctx-size"]
        assert by_name["temperature"][2:4] == ["0.5", "config file"]
        assert by_name["parallel"] == ["tiny", "parallel", "2", "global setting (flag)",
                                       "--parallel"]
        assert by_name["chat_template"][2:4] == [
            "{% for m in messages %}{{ m.content }}{% endfor %}", "config file"]
        assert browser.evaluate("document.getElementById('settings-models-none').hidden")
        assert browser.evaluate("document.querySelectorAll('#view-settings :is(input, select, "
                                "textarea, button)').length") == 0  # nothing to change
        text = browser.evaluate("document.body.textContent")
        assert API_KEY not in text
        browser.screenshot(SHOTS / "web-settings-tiny.png")

        browser.click("#tabs [data-view=reference]")
        browser.wait_for("document.querySelectorAll('#reference .endpoint').length > 0")
        doc = hearth.request("GET", "/v1/openapi.json").json()
        shown = browser.evaluate("Array.from(document.querySelectorAll('#reference .endpoint'))"
                                 ".map(s => s.dataset.path)")
        assert sorted(set(shown)) == sorted(doc["paths"])
        chat = browser.evaluate(
            "Array.from(document.querySelectorAll('#reference .endpoint'))"
            ".find(s => s.dataset.path === '/v1/chat/completions').textContent")
        base = origin(hearth)
        assert f"curl -X POST '{base}/v1/chat/completions'" in chat
        assert "client.chat.completions.create(" in chat and '"tiny"' in chat
        assert f'base_url="{base}/v1"' in chat and "$HEARTH_API_KEY" in chat
        browser.screenshot(SHOTS / "web-reference-tiny.png")
        assert browser.evaluate("document.body.textContent").count(API_KEY) == 0
        check_examples_quote_the_model(browser, doc, base)
        assert_same_origin(browser, hearth)


# A model id that would run commands if pasted unquoted into a shell.
NASTY_MODEL = "x';id;'a b#c\"$(id)`id`"
URL_SAFE = "!'()*"  # what encodeURIComponent leaves as it is, besides quote()'s own -._~


def check_examples_quote_the_model(browser: Browser, doc: dict[str, Any], base: str) -> None:
    """Every curl example for NASTY_MODEL is, to a POSIX shell, exactly the intended argv."""
    curls = browser.evaluate(f"""(() => {{
        const box = document.createElement("div");
        box.append(window.hearthReference.render({json.dumps(doc)},
            {{origin: location.origin, prefix: "/v1", model: {json.dumps(NASTY_MODEL)}}}));
        return Array.from(box.querySelectorAll(".endpoint")).map(
            s => [s.dataset.path, s.querySelector("pre code").textContent]);
    }})()""")
    assert len(curls) == sum(len(item) for item in doc["paths"].values())
    auth = ["-H", "Authorization: Bearer $HEARTH_API_KEY"]
    by_path: dict[str, list[str]] = {}
    for path, text in curls:
        argv = shlex.split(text.replace(" \\\n", " "))
        assert argv[0] == "curl" and ";" not in argv and "id" not in argv, argv
        by_path[path] = argv
    model_url = f"{base}/v1/models/{quote(NASTY_MODEL, safe=URL_SAFE)}"
    assert by_path["/v1/models/{model}"] == ["curl", model_url, *auth]
    argv = by_path["/v1/chat/completions"]
    assert argv[:8] == ["curl", "-X", "POST", f"{base}/v1/chat/completions", *auth,
                        "-H", "Content-Type: application/json"]
    assert argv[8] == "-d" and len(argv) == 10
    assert json.loads(argv[9]) == {"model": NASTY_MODEL,
                                    "messages": [{"role": "user", "content": "Hello!"}]}


UNTRUSTED = ("Look: <img src=x onerror=alert(1)> and [click me](javascript:alert(2)) "
             "<script>alert(3)</script> **bold** `code` [ok](https://example.com/)\n\n"
             "```html\n<img src=x onerror=alert(4)>\n```\n"
             "- [a](JaVaScRiPt:alert(5)) **[b](javascript:alert(6))**\n"
             "- [c](data:text/html,<script>alert(7)</script>) [d](//evil.example/x)\n"
             "- ![e](http://evil.example/pixel.png) <svg onload=alert(8)> <a href=x>f</a>\n")


def sse(content: str) -> bytes:
    chunks = [{"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
               "model": "tiny", "choices": [{"index": 0, "delta": {"content": part},
                                             "finish_reason": None}]}
              for part in (content[:40], content[40:])]
    chunks.append({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                   "model": "tiny", "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 30, "total_tokens": 33}})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


def test_an_untrusted_reply_is_shown_as_text_and_runs_nothing(
        start_hearth: Callable[..., Server], tmp_path: Path) -> None:
    """The model's reply is untrusted: here the browser itself answers the page's chat request
    (CDP's Fetch domain) with a reply holding HTML and a javascript: link."""
    chromium = find_chromium()
    hearth = start_hearth()
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        document = next(e for e in browser.events
                        if e.get("method") == "Network.responseReceived"
                        and e["params"]["type"] == "Document")
        headers = {k.lower(): v for k, v in document["params"]["response"]["headers"].items()}
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"

        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('model').options.length > 0")
        browser.send("Fetch.enable", patterns=[{"urlPattern": "*/v1/chat/completions",
                                                "requestStage": "Request"}])
        seen = len(browser.events)
        send_prompt(browser, "Say something nasty")
        paused = browser.wait_event("Fetch.requestPaused", since=seen)
        browser.send("Fetch.fulfillRequest", requestId=paused["params"]["requestId"],
                     responseCode=200,
                     responseHeaders=[{"name": "Content-Type", "value": "text/event-stream"}],
                     body=base64.b64encode(sse(UNTRUSTED)).decode())
        browser.wait_for(f"document.querySelector({json.dumps(REPLY)}).dataset.finish"
                         " === 'stop'")
        body = REPLY + " .body"
        text = reply_text(browser)
        assert "<img src=x onerror=alert(1)>" in text  # shown as text
        assert "<script>alert(3)</script>" in text
        assert browser.evaluate(f"document.querySelectorAll({json.dumps(body + ' img')})"
                                ".length + document.querySelectorAll("
                                f"{json.dumps(body + ' script')}).length") == 0
        hrefs = browser.evaluate(f"Array.from(document.querySelectorAll({json.dumps(body)} + "
                                 "' a')).map(a => a.href)")
        # only absolute http(s) links are anchors; the image is a link, never loaded
        assert hrefs == ["https://example.com/", "http://evil.example/pixel.png"]
        assert browser.evaluate(f"document.querySelectorAll({json.dumps(body + ' *')}).length")\
            == browser.evaluate(f"document.querySelectorAll({json.dumps(body)} + ' p, ' + "
                                f"{json.dumps(body)} + ' :is(pre, code, strong, em, ul, li, a, "
                                "span.inert-link, br)').length")
        assert browser.evaluate(f"document.querySelectorAll({json.dumps(body + ' .inert-link')})"
                                ".length") == 5
        # the javascript: link is inert text; clicking it does nothing
        browser.click(REPLY + " .inert-link")
        assert browser.evaluate(f"document.querySelector({json.dumps(body + ' strong')})"
                                ".textContent") == "bold"
        assert browser.evaluate(f"document.querySelector({json.dumps(body + ' pre code')})"
                                ".textContent") == "<img src=x onerror=alert(4)>"
        time.sleep(0.3)  # give any injected handler a chance to fire (it must not)
        assert browser.dialogs() == []
        assert browser.evaluate("typeof window.__pwned") == "undefined"
        browser.screenshot(SHOTS / "web-untrusted.png")
        assert_same_origin(browser, hearth)


def test_no_web_and_a_foreign_host(start_hearth: Callable[..., Server],
                                   tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = start_hearth("--no-web")
    with Browser(chromium, tmp_path / "profile",
                 extra_args=("--host-resolver-rules=MAP rebind.example 127.0.0.1",)) as browser:
        seen = len(browser.events)
        browser.navigate(origin(hearth) + "/")
        response = browser.wait_event("Network.responseReceived",
                                      lambda e: e["params"]["type"] == "Document", since=seen)
        assert response["params"]["response"]["status"] == 404
    hearth2 = start_hearth()
    with Browser(chromium, tmp_path / "profile2",
                 extra_args=("--host-resolver-rules=MAP rebind.example 127.0.0.1",)) as browser:
        seen = len(browser.events)
        browser.navigate(f"http://rebind.example:{hearth2.port}/")
        response = browser.wait_event("Network.responseReceived",
                                      lambda e: e["params"]["type"] == "Document", since=seen)
        assert response["params"]["response"]["status"] == 403
        assert browser.evaluate("typeof window.hearthMarkdown") == "undefined"
