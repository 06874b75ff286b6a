"""The README's screenshots of the web page, taken in headless Chromium against ``hearth serve``
with the default instruct model (smollm2-135m-instruct, from the test model cache like the e2e
tests): a real question answered in the chat view, the live view after some seconds of traffic
(so its chart has a line) with a reply streaming, the settings view and the API reference.

They go to ``build/screenshots/`` (or ``$HEARTH_SCREENSHOTS``) as ``web-chat.png``,
``web-live.png``, ``web-settings.png`` and ``web-reference.png``; ``docs/`` holds copies of
them quantized to 256 colours (see the README's "Web page" section). The test also checks what
it shows: the model's answer, the busy slot, the chart's traffic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Browser, find_chromium
from harness import API_KEY, Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID
from test_web_page_browser import (
    REPLY,
    SHOTS,
    assert_same_origin,
    chat_bodies,
    enter_key,
    open_page,
    reply_text,
    send_prompt,
    set_field,
)

pytestmark = pytest.mark.browser

TRAFFIC_S = 60.0  # at most; it stops once the chart shows it
CHART_POINTS_WITH_TRAFFIC = 3  # chart points (5 s each) with tokens before the live screenshot


@pytest.fixture
def instruct(default_models_dir: Path, tmp_path: Path) -> Iterator[Server]:
    srv = Server(default_models_dir, DEFAULT_MODEL_ID, tmp_path / "home",
                 args=("--parallel", "2", "--ctx-size", "2048"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def wait_reply_done(browser: Browser) -> str:
    return str(browser.wait_for(f"document.querySelector({json.dumps(REPLY)}).dataset.finish",
                                timeout=300))


def traffic(hearth: Server, stop: threading.Event) -> None:
    """Short chat completions, one after another, until ``stop``."""
    while not stop.is_set():
        r = hearth.chat({"model": DEFAULT_MODEL_ID, "max_tokens": 16, "temperature": 0.7,
                         "messages": [{"role": "user", "content": "Name a colour."}]})
        assert r.status == 200, r.body


# A real model on a shared machine: about 300 tokens in all, at 2 tokens/s under a load of 10
# on 2 cores (measured), besides the traffic phase; the suite's 300 s is too short then.
@pytest.mark.timeout(900)
def test_the_readme_screenshots_with_the_default_instruct_model(instruct: Server,
                                                                tmp_path: Path) -> None:
    chromium = find_chromium()
    hearth = instruct
    with Browser(chromium, tmp_path / "profile") as browser:
        open_page(browser, hearth)
        enter_key(browser, API_KEY)
        browser.wait_for("document.getElementById('model').value === "
                         f"{json.dumps(DEFAULT_MODEL_ID)}")

        # the chat view: a question the model knows, then one whose answer is a Markdown list
        set_field(browser, "#system", "You are a helpful assistant.")
        set_field(browser, "#temperature", "0")
        set_field(browser, "#max-tokens", "160")
        send_prompt(browser, "What is the capital of France?")
        wait_reply_done(browser)
        assert "Paris" in reply_text(browser)
        send_prompt(browser, "Give me three short tips for learning Python, as a list.")
        wait_reply_done(browser)
        assert reply_text(browser)
        assert [m["role"] for m in chat_bodies(browser)[-1]["messages"]] == \
            ["system", "user", "assistant", "user"]
        browser.screenshot(SHOTS / "web-chat.png")

        # the live view: traffic until the chart has a line, and a reply streaming meanwhile
        stop = threading.Event()
        senders = [threading.Thread(target=traffic, args=(hearth, stop)) for _ in range(2)]
        for t in senders:
            t.start()
        try:
            deadline = time.monotonic() + TRAFFIC_S
            while time.monotonic() < deadline:
                live = hearth.request("GET", "/web/api/live",
                                      headers={"Authorization": f"Bearer {API_KEY}"}).json()
                if sum(v > 0 for _, v in live["chart"]["points"]) >= CHART_POINTS_WITH_TRAFFIC:
                    break
                time.sleep(0.5)
            set_field(browser, "#max-tokens", "1000")
            set_field(browser, "#temperature", "0.7")
            send_prompt(browser, "Tell me a long story about a lighthouse keeper.")
            browser.wait_for(f"(document.querySelector({json.dumps(REPLY + ' .body')}) || {{}})"
                             ".textContent", timeout=120)
            browser.click("#tabs [data-view=live]")
            row = f"document.querySelector('#live-models tr[data-model={DEFAULT_MODEL_ID}]')"
            browser.wait_for(f"{row} && {row}.dataset.busy !== '0'")
            browser.wait_for("parseFloat(document.getElementById('live-tps').textContent) > 0")
            time.sleep(1.2)  # one more reading, so the chart has the latest point
            browser.screenshot(SHOTS / "web-live.png")
        finally:
            stop.set()
            for t in senders:
                t.join(timeout=120)
        assert live["chart"]["points"] and max(v for _, v in live["chart"]["points"]) > 0
        browser.click("#tabs [data-view=chat]")
        browser.click("#stop")
        wait_reply_done(browser)

        browser.click("#tabs [data-view=settings]")
        browser.wait_for("document.querySelectorAll('#settings-table tbody tr').length > 0")
        browser.screenshot(SHOTS / "web-settings.png")
        browser.click("#tabs [data-view=reference]")
        browser.wait_for("document.querySelectorAll('#reference .endpoint').length > 0")
        assert DEFAULT_MODEL_ID in browser.evaluate("document.getElementById('reference')"
                                                    ".textContent")
        browser.screenshot(SHOTS / "web-reference.png")
        assert browser.dialogs() == []
        assert_same_origin(browser, hearth)
