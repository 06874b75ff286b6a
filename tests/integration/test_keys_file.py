"""--keys-file on a real server: its keys work under their names, edits take effect without a
restart, a broken file stops `hearth serve` before anything starts, and no key is ever printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Server, free_port

pytestmark = pytest.mark.integration

ARGS = ("--parallel", "1", "--ctx-size", "256", "--threads", "1")
SECRETS = {"admin": "k-admin-from-table", "alice": "k-alice-from-file",
           "bob": "k-bob-from-file", "carol": "k-carol-added-later"}


def status_with(srv: Server, key: str) -> int:
    return srv.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"}).status


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` passes (False): no timing asserted."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_keys_from_the_file_work_and_follow_its_edits(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("home")
    config = home / "hearth.toml"
    config.write_text(f'[keys]\nadmin = "{SECRETS["admin"]}"\n')
    keys = home / "keys"
    keys.write_text(f"# the team\nalice = {SECRETS['alice']}\nbob = {SECRETS['bob']}\n")
    keys.chmod(0o640)  # group-readable: a warning, and it still serves
    srv = Server(tiny_models_dir, "tiny", home, api_key=None,
                 args=(*ARGS, "--config", str(config), "--keys-file", str(keys))).start()
    try:
        assert "(admin, alice, bob)" in srv.wait_for_stdout("API keys:")
        assert eventually(lambda: "chmod 600" in "".join(srv.stderr))
        assert not (home / "config" / "hearth" / "api_key").exists()  # none generated

        assert status_with(srv, SECRETS["alice"]) == 200
        assert status_with(srv, SECRETS["admin"]) == 200
        assert status_with(srv, SECRETS["carol"]) == 401

        # add carol and revoke bob, editing the file in place
        keys.write_text(f"alice = {SECRETS['alice']}\ncarol = {SECRETS['carol']}\n")
        assert eventually(lambda: status_with(srv, SECRETS["carol"]) == 200)
        assert eventually(lambda: status_with(srv, SECRETS["bob"]) == 401)
        assert status_with(srv, SECRETS["alice"]) == 200
        metrics = srv.request("GET", "/metrics", headers={
            "Authorization": f"Bearer {SECRETS['carol']}"}).body.decode()
        assert 'hearth_queue_depth{key="carol"}' in metrics
        assert 'hearth_queue_depth{key="bob"}' not in metrics

        # a broken line: the keys stay as they were, with a warning naming the line
        keys.write_text(f"alice = {SECRETS['alice']}\n{SECRETS['carol']}\n")
        assert eventually(lambda: "line 2: expected 'name = key'" in "".join(srv.stderr))
        assert status_with(srv, SECRETS["carol"]) == 200
        # a deleted file: the same
        keys.unlink()
        assert eventually(lambda: "No such file" in "".join(srv.stderr))
        assert status_with(srv, SECRETS["carol"]) == 200
        assert status_with(srv, SECRETS["admin"]) == 200
        time.sleep(0.2)  # let the last request lines reach the log
    finally:
        assert srv.stop() == 0
    assert srv.orphans() == []
    log = "".join(srv.stdout) + "".join(srv.stderr)
    assert "key=alice" in log and "key=carol" in log and "key=admin" in log
    # (an edit in place may be read half-done first: the final state is what counts)
    assert re.search(r"re-read: .*added [^;]*carol", log)
    assert re.search(r"re-read: .*removed [^;]*bob", log)
    for secret in SECRETS.values():
        assert secret not in log


@pytest.mark.parametrize(("content", "says"), [
    ("alice = k-fine\nbob = k-secret-one\nk-secret-two\n", "line 3: expected 'name = key'"),
    ("alice = k-secret-one\nalice = k-secret-two\n", "line 2: the name 'alice' is given twice"),
    ("admin = k-secret-one\n", "line 1: the name 'admin' is already used by the config's"),
    (None, "cannot read the key file"),
])
def test_a_broken_key_file_stops_serve_at_once(tmp_path: Path, content: str | None,
                                               says: str) -> None:
    keys = tmp_path / "keys"
    if content is not None:
        keys.write_text(content)
        keys.chmod(0o600)
    config = tmp_path / "hearth.toml"
    config.write_text('[keys]\nadmin = "k-secret-admin"\n')
    proc = serve_at_once(tmp_path, "--config", str(config), "--keys-file", str(keys))
    assert str(keys) in proc.stderr and says in proc.stderr
    assert "k-secret" not in proc.stderr


def test_no_key_at_all_stops_serve(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# nobody yet\n")
    keys.chmod(0o600)
    proc = serve_at_once(tmp_path, "--keys-file", str(keys))
    assert f"the key file {keys} holds no keys and no other API key is configured" in proc.stderr
    assert not (tmp_path / "config" / "hearth" / "api_key").exists()  # none generated


def serve_at_once(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hearth serve` that must stop at once with one `hearth: ` line and exit status 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(tmp_path),
         "--model", "tiny", "--port", str(free_port()), *args],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hearth: "), proc.stderr
    return proc
