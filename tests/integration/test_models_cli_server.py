"""``hearth models list`` against a real running server: the served model shows loaded=yes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import API_KEY, Server

pytestmark = pytest.mark.integration


def models_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_DATA_HOME"] = str(home / "data")
    return subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_list_shows_loaded(server: Server, tiny_models_dir: Path, tmp_path: Path) -> None:
    r = models_cli(tmp_path, "list", "--models-dir", str(tiny_models_dir),
                   "--url", server.base_url, "--api-key", API_KEY)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[-2:] == ["LOADED", "SOURCE"]
    (row,) = [line.split() for line in lines[1:] if line.startswith("tiny ")]
    assert row[3] == "llama" and row[-2] == "yes" and row[-1] == "-"
    assert "not running" not in r.stdout


def test_list_json_default_url_from_port(server: Server, tiny_models_dir: Path,
                                         tmp_path: Path) -> None:
    r = models_cli(tmp_path, "list", "--json", "--models-dir", str(tiny_models_dir),
                   "--port", str(server.port), "--api-key", API_KEY)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["server"] == {"url": server.base_url, "reachable": True, "note": None}
    (tiny,) = [m for m in doc["models"] if m["id"] == "tiny"]
    assert tiny["loaded"] is True and tiny["architecture"] == "llama"


def test_list_reads_saved_key_file(server: Server, tiny_models_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "config" / "hearth" / "api_key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(API_KEY + "\n")
    r = models_cli(tmp_path, "list", "--models-dir", str(tiny_models_dir),
                   "--url", server.base_url)
    assert r.returncode == 0, r.stderr
    (row,) = [line.split() for line in r.stdout.splitlines() if line.startswith("tiny ")]
    assert row[-2] == "yes"


def test_list_wrong_key(server: Server, tiny_models_dir: Path, tmp_path: Path) -> None:
    r = models_cli(tmp_path, "list", "--models-dir", str(tiny_models_dir),
                   "--url", server.base_url)  # no key given and no key file
    assert r.returncode == 0, r.stderr
    (row,) = [line.split() for line in r.stdout.splitlines() if line.startswith("tiny ")]
    assert row[-2] == "-"  # LOADED unknown
    assert "refused the API key" in r.stdout
    assert not (tmp_path / "config" / "hearth" / "api_key").exists()
