"""hearth.tools.cli.models: ``hearth models list|add|rm`` on temporary models directories with
tiny GGUFs (no server: "loaded" shows "-"; tests/integration/test_models_cli_server.py has one)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hearth.scheduler.placement import kv_bytes_per_token
from hearth.tools.cli import models as models_cli
from hearth.tools.cli.main import main
from hearth.tools.cli.model_removal import remove_model
from hearth.tools.cli.model_sources import read_sources, record_source
from hearth.tools.cli.models import (
    ModelsError,
    add_model,
    list_models,
    validate_id,
)
from hearth.tools.cli.server_client import ServerModels
from hearth.tools.cli.tiny_model import build_tiny_model
from hearth.tools.gguf_header import read_gguf_metadata


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("second") / "other.gguf", seed=7)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No HEARTH_* from the caller; config and data dirs inside tmp_path (so no key file)."""
    for name in list(os.environ):
        if name.startswith("HEARTH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return dict(os.environ)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


def cli(env: dict[str, str], *args: str,
        stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", *args],
                          env=env, input=stdin, capture_output=True, text=True, timeout=60)


def files(d: Path) -> list[str]:
    """The directory's files, but the record of sources and its lock."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".hearth-sources."))


# ---- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "a b", "tab\there", "a\\b", "x\x00"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(ModelsError):
        validate_id(bad)


def test_validate_id_accepts() -> None:
    assert validate_id("Qwen2.5-0.5B-Instruct.Q4_K_M") == "Qwen2.5-0.5B-Instruct.Q4_K_M"


# ---- list ---------------------------------------------------------------------------------


def test_list_shows_both_models(env: dict[str, str], models: Path, tiny_model_path: Path,
                                second_model: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    shutil.copy(second_model, models / "other.gguf")
    r = cli(env, "list", "--models-dir", str(models), "--url", _closed_port_url())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "SIZE", "ARCHITECTURE", "PARAMETERS", "QUANTIZATION",
                                "CONTEXT", "KV/SLOT", "LOADED", "SOURCE"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"tiny", "other"}
    for row in rows.values():
        assert row[3] == "llama"  # size is two words ("1.1 MiB")
        assert row[6].isdigit() and int(row[6]) > 0  # context
        assert row[9] == "(f16)"  # KV cache of one slot: "2.0 MiB (f16)"
        assert row[10] == "-"  # no server
        assert row[11] == "-"  # dropped in by hand: no recorded source
    assert "server not running" in r.stdout
    assert not (Path(env["XDG_CONFIG_HOME"]) / "hearth" / "api_key").exists()


def test_list_json(env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    r = cli(env, "list", "--json", "--models-dir", str(models), "--url", _closed_port_url())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["models_dir"] == str(models)
    assert doc["server"]["reachable"] is False
    (m,) = doc["models"]
    assert m["id"] == "tiny" and m["architecture"] == "llama" and m["loaded"] is None
    assert m["size_bytes"] == tiny_model_path.stat().st_size
    assert m["context_length"] > 0 and m["parameters"] > 0 and m["error"] is None
    assert m["source"] is None
    # one slot's KV cache at the default --ctx-size (4096) and cache types (f16)
    info = read_gguf_metadata(models / "tiny.gguf")
    assert (m["ctx_size"], m["kv_cache_type_k"], m["kv_cache_type_v"]) == (4096, "f16", "f16")
    assert m["kv_bytes_per_slot"] == kv_bytes_per_token(info) * 4096
    # with q8_0 keys and values (flags of `models list`) and a smaller context: 34/64 of f16
    r = cli(env, "list", "--json", "--models-dir", str(models), "--url", _closed_port_url(),
            "--ctx-size", "1024", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
    (m,) = json.loads(r.stdout)["models"]
    assert (m["kv_cache_type_k"], m["kv_cache_type_v"]) == ("q8_0", "q8_0")
    assert m["kv_bytes_per_slot"] == kv_bytes_per_token(info) * 1024 * 34 // 64
    r = cli(env, "list", "--models-dir", str(models), "--url", _closed_port_url(),
            "--cache-type-k", "q8_0", "--cache-type-v", "q4_0")
    assert "(q8_0/q4_0)" in r.stdout


def test_list_refuses_a_quantised_v_cache_with_flash_attention_off(
        env: dict[str, str], models: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    conf = tmp_path / "hearth.toml"
    conf.write_text('[models.tiny]\nflash_attn = false\ncache_type_v = "q8_0"\n')
    r = cli(env, "list", "--config", str(conf), "--models-dir", str(models),
            "--url", _closed_port_url())
    assert r.returncode == 2
    assert '[models."tiny"]: a quantised V cache (cache_type_v q8_0) needs flash attention' in \
        r.stderr


def test_list_models_dir_from_env_and_config(env: dict[str, str], models: Path, tmp_path: Path,
                                             tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    other = tmp_path / "elsewhere"
    other.mkdir()
    url = _closed_port_url()
    r = cli({**env, "HEARTH_MODELS_DIR": str(models)}, "list", "--url", url)
    assert r.returncode == 0 and r.stdout.startswith("ID"), r.stderr
    conf = tmp_path / "hearth.toml"
    conf.write_text(f'models_dir = "{models}"\n')
    r = cli(env, "list", "--config", str(conf), "--url", url)
    assert r.returncode == 0 and r.stdout.startswith("ID"), r.stderr
    # flag > env > file
    r = cli({**env, "HEARTH_MODELS_DIR": str(other)}, "list", "--config", str(conf),
            "--url", url)
    assert f"no models in {other}" in r.stdout
    r = cli({**env, "HEARTH_MODELS_DIR": str(other)}, "list", "--models-dir", str(models),
            "--url", url)
    assert r.stdout.startswith("ID")


def test_list_broken_files(models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    (models / "junk.gguf").write_bytes(b"not a model at all" * 10)
    (models / "gone.gguf").symlink_to(models / "missing.gguf")
    out = io.StringIO()
    assert list_models(models, ServerModels("u", None, "(server not running at u)"),
                       as_json=False, out=out) == 0
    text = out.getvalue()
    assert "junk" in text and "gone" in text and "tiny" in text
    assert "unreadable models:" in text
    assert "junk: " in text.split("unreadable models:")[1]
    assert "broken symlink" in text
    out = io.StringIO()
    list_models(models, None, as_json=True, out=out)
    by_id = {m["id"]: m for m in json.loads(out.getvalue())["models"]}
    assert by_id["junk"]["error"] and by_id["junk"]["architecture"] is None
    assert by_id["gone"]["error"] and by_id["tiny"]["error"] is None


def test_list_with_loaded_map(models: Path, tiny_model_path: Path, second_model: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    shutil.copy(second_model, models / "other.gguf")
    out = io.StringIO()
    list_models(models, ServerModels("u", {"tiny": True, "other": False}), as_json=False, out=out)
    rows = {line.split()[0]: line.split()[-2] for line in out.getvalue().splitlines()[1:]}
    assert rows == {"tiny": "yes", "other": "no"}  # LOADED, then SOURCE
    assert "not running" not in out.getvalue()


def test_list_empty(models: Path) -> None:
    out = io.StringIO()
    list_models(models / "absent", None, as_json=False, out=out)
    assert out.getvalue() == f"no models in {models / 'absent'}\n"


# ---- add ----------------------------------------------------------------------------------


def test_add_copies(env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    target = models / "sub"  # created on demand
    r = cli(env, "add", str(tiny_model_path), "--models-dir", str(target))
    assert r.returncode == 0, r.stderr
    assert files(target) == ["tiny.gguf"]  # no temp file left
    assert not (target / "tiny.gguf").is_symlink()
    assert (target / "tiny.gguf").read_bytes() == tiny_model_path.read_bytes()
    assert "model id: tiny" in r.stdout
    assert read_sources(target) == {"tiny": f"added:{tiny_model_path}"}
    # stderr is not a TTY: one start line and one end line, no carriage returns
    assert "\r" not in r.stderr
    err = r.stderr.splitlines()
    assert len(err) == 2 and err[0].startswith("copying tiny.gguf") and "done in" in err[1]


def test_add_link(env: dict[str, str], models: Path, tiny_model_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_model_path.parent)
    r = cli(env, "add", "--link", tiny_model_path.name, "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    link = models / "tiny.gguf"
    assert link.is_symlink()
    assert os.readlink(link) == str(tiny_model_path)  # absolute, although given relatively
    assert files(models) == ["tiny.gguf"]
    assert r.stderr == ""  # no progress bar for a link


def test_add_name(models: Path, tiny_model_path: Path) -> None:
    dest = add_model(models, tiny_model_path, name="my-model", err=io.StringIO())
    assert dest == models / "my-model.gguf" and files(models) == ["my-model.gguf"]
    dest = add_model(models, tiny_model_path, name="with-ext.gguf", err=io.StringIO())
    assert dest.name == "with-ext.gguf"


@pytest.mark.parametrize("name", ["a/b", ".hidden", "has space"])
def test_add_bad_name(env: dict[str, str], models: Path, tiny_model_path: Path,
                      name: str) -> None:
    r = cli(env, "add", str(tiny_model_path), "--name", name, "--models-dir", str(models))
    assert r.returncode == 2 and "invalid model id" in r.stderr
    assert files(models) == []


def test_add_stem_with_space_hints_name(models: Path, tiny_model_path: Path,
                                        tmp_path: Path) -> None:
    src = tmp_path / "my model.gguf"
    shutil.copy(tiny_model_path, src)
    with pytest.raises(ModelsError, match="--name"):
        add_model(models, src, err=io.StringIO())
    assert files(models) == []


def test_add_garbage_fails(env: dict[str, str], models: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a GGUF file, just some text\n" * 100)
    r = cli(env, "add", str(junk), "--models-dir", str(models))
    assert r.returncode == 2
    assert f"hearth: {junk} is not a valid GGUF model: not a GGUF file" in r.stderr
    assert files(models) == []


def test_add_truncated_fails(env: dict[str, str], models: Path, tmp_path: Path,
                             tiny_model_path: Path) -> None:
    data = tiny_model_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    r = cli(env, "add", str(cut), "--models-dir", str(models))
    assert r.returncode == 2
    assert "is not a valid GGUF model" in r.stderr and "truncated" in r.stderr
    assert files(models) == []
    r = cli(env, "add", "--link", str(cut), "--models-dir", str(models))
    assert r.returncode == 2 and files(models) == []


def test_add_missing_file(env: dict[str, str], models: Path, tmp_path: Path) -> None:
    r = cli(env, "add", str(tmp_path / "nope.gguf"), "--models-dir", str(models))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = cli(env, "add", str(tmp_path), "--models-dir", str(models), "--name", "d")
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_add_duplicate_refused_then_force(env: dict[str, str], models: Path,
                                          tiny_model_path: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "tiny.gguf", seed=3)  # same id, other bytes
    assert other.read_bytes() != tiny_model_path.read_bytes()
    assert cli(env, "add", str(tiny_model_path), "--models-dir", str(models)).returncode == 0
    r = cli(env, "add", str(other), "--models-dir", str(models))
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert (models / "tiny.gguf").read_bytes() == tiny_model_path.read_bytes()
    r = cli(env, "add", "--link", str(other), "--models-dir", str(models))
    assert r.returncode == 2 and not (models / "tiny.gguf").is_symlink()
    r = cli(env, "add", str(other), "--force", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert (models / "tiny.gguf").read_bytes() == other.read_bytes()
    assert files(models) == ["tiny.gguf"]
    # --force --link replaces the file with a link; --force copy replaces the link with a file
    r = cli(env, "add", "--link", "--force", str(tiny_model_path), "--models-dir", str(models))
    assert r.returncode == 0 and (models / "tiny.gguf").is_symlink()
    r = cli(env, "add", "--force", str(other), "--models-dir", str(models))
    assert r.returncode == 0 and not (models / "tiny.gguf").is_symlink()
    assert tiny_model_path.read_bytes() != other.read_bytes()  # the link's target untouched
    assert files(models) == ["tiny.gguf"]


def test_add_onto_itself_refused(models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    before = (models / "tiny.gguf").read_bytes()
    for link in (False, True):
        with pytest.raises(ModelsError, match="already is the model"):
            add_model(models, models / "tiny.gguf", link=link, force=True, err=io.StringIO())
    assert not (models / "tiny.gguf").is_symlink()
    assert (models / "tiny.gguf").read_bytes() == before


def test_add_progress_on_tty(models: Path, tiny_model_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = models_cli.copy_with_progress

    def small_chunks(src: Path, dest: Path, progress: Callable[[int], None] | None = None,
                     chunk: int = 0) -> int:
        return real(src, dest, progress, chunk=64 * 1024)

    monkeypatch.setattr(models_cli, "copy_with_progress", small_chunks)
    monkeypatch.setattr(models_cli, "_REDRAW_S", 0.0)
    err = TTY()
    add_model(models, tiny_model_path, err=err)
    text = err.getvalue()
    assert text.count("\r") > 2  # redrawn in place
    assert "[" + "#" * 30 + "] 100%" in text and "done in" in text and text.endswith("\n")


def test_add_interrupted_cleans_up(models: Path, tiny_model_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = models_cli.copy_with_progress
    seen: list[list[str]] = []

    def interrupted(src: Path, dest: Path, progress: Any = None, chunk: int = 0) -> int:
        def stop(done: int) -> None:
            seen.append(files(models))  # the hidden temp file exists while copying
            raise KeyboardInterrupt

        return real(src, dest, stop, chunk=4096)

    monkeypatch.setattr(models_cli, "copy_with_progress", interrupted)
    with pytest.raises(KeyboardInterrupt):
        add_model(models, tiny_model_path, err=io.StringIO())
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".tiny.gguf.") and seen[0][0].endswith(".part")
    assert files(models) == []


def test_add_interrupted_via_cli_exit_code(env: dict[str, str], models: Path,
                                           tiny_model_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def boom(*_a: Any, **_k: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(models_cli, "copy_with_progress", boom)
    assert main(["models", "add", str(tiny_model_path), "--models-dir", str(models)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert files(models) == []


def test_add_io_error_cleans_up(models: Path, tiny_model_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(src: Path, dest: Path, progress: Any = None, chunk: int = 0) -> int:
        dest.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models_cli, "copy_with_progress", disk_full)
    with pytest.raises(ModelsError, match="No space left") as info:
        add_model(models, tiny_model_path, err=io.StringIO())
    assert info.value.code == 1
    assert files(models) == []


# ---- rm -----------------------------------------------------------------------------------


def test_rm_removes_file(env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    r = cli(env, "rm", "tiny", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout and files(models) == []


def test_rm_link_keeps_target(env: dict[str, str], models: Path, tmp_path: Path,
                              tiny_model_path: Path) -> None:
    target = tmp_path / "keep.gguf"
    shutil.copy(tiny_model_path, target)
    (models / "keep.gguf").symlink_to(target)
    r = cli(env, "rm", "keep", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert files(models) == []
    assert target.read_bytes() == tiny_model_path.read_bytes()
    assert "target is kept" in r.stdout


def test_rm_broken_link(models: Path) -> None:
    (models / "gone.gguf").symlink_to(models / "missing.gguf")
    assert remove_model(models, "gone", yes=True) is not None
    assert files(models) == []


def test_rm_unknown_id(env: dict[str, str], models: Path) -> None:
    r = cli(env, "rm", "nope", "--yes", "--models-dir", str(models))
    assert r.returncode == 2 and "no model 'nope'" in r.stderr
    r = cli(env, "rm", "../etc", "--yes", "--models-dir", str(models))
    assert r.returncode == 2 and "invalid model id" in r.stderr


def test_rm_without_yes_on_non_tty_refuses(env: dict[str, str], models: Path,
                                           tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    r = cli(env, "rm", "tiny", "--models-dir", str(models), stdin="y\n")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert files(models) == ["tiny.gguf"]


def test_rm_asks_on_tty(models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    err = io.StringIO()
    assert remove_model(models, "tiny", stdin=TTY("n\n"), err=err) is None
    assert "[y/N]" in err.getvalue() and files(models) == ["tiny.gguf"]
    assert remove_model(models, "tiny", stdin=TTY(""), err=io.StringIO()) is None  # EOF = no
    assert files(models) == ["tiny.gguf"]
    assert remove_model(models, "tiny", stdin=TTY("y\n"), err=io.StringIO()) is not None
    assert files(models) == []


def test_settings_error_exit_2(env: dict[str, str], models: Path) -> None:
    r = cli({**env, "HEARTH_PORT": "notaport"}, "list", "--models-dir", str(models))
    assert r.returncode == 2 and "HEARTH_PORT" in r.stderr


# ---- sources and split models --------------------------------------------------------------


def test_rm_forgets_the_source(env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    record_source(models, "tiny", "url:https://example.org/tiny.gguf")
    record_source(models, "other", "hf:a/b/other.gguf")
    r = cli(env, "rm", "tiny", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert read_sources(models) == {"other": "hf:a/b/other.gguf"}


def test_rm_takes_the_unfinished_download_and_the_lock_with_it(
        env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    leftovers = [".tiny.gguf.part", ".tiny.gguf.part.json", ".tiny.gguf.lock",
                 ".tiny-00002-of-00002.gguf.part"]
    for n in [*leftovers, ".other.gguf.part"]:
        (models / n).write_bytes(b"x")
    r = cli(env, "rm", "tiny", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "removed the unfinished download of tiny"
    assert files(models) == [".other.gguf.part"]


def test_rm_of_an_unfinished_download_alone(env: dict[str, str], models: Path) -> None:
    (models / ".gone.gguf.part").write_bytes(b"x" * 10)
    (models / ".gone.gguf.part.json").write_text("{}")
    r = cli(env, "rm", "gone", "--models-dir", str(models))
    assert r.returncode == 2 and "--yes" in r.stderr  # it asks first, as for a model
    r = cli(env, "rm", "gone", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "removed the unfinished download of gone\n"
    assert files(models) == []


def test_list_shows_sources(env: dict[str, str], models: Path, tiny_model_path: Path) -> None:
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    record_source(models, "tiny", "hf:owner/repo/tiny.gguf")
    r = cli(env, "list", "--models-dir", str(models), "--url", _closed_port_url())
    assert r.returncode == 0, r.stderr
    (row,) = [line.split() for line in r.stdout.splitlines() if line.startswith("tiny ")]
    assert row[-1] == "hf:owner/repo/tiny.gguf"
    r = cli(env, "list", "--json", "--models-dir", str(models), "--url", _closed_port_url())
    assert json.loads(r.stdout)["models"][0]["source"] == "hf:owner/repo/tiny.gguf"
    # a record written before URLs were redacted is shown without its query and user info
    (models / ".hearth-sources.json").write_text(
        '{"tiny": "url:https://u:pw@h.example/tiny.gguf?X-Amz-Signature=s"}')
    r = cli(env, "list", "--models-dir", str(models), "--url", _closed_port_url())
    assert "url:https://h.example/tiny.gguf" in r.stdout and "pw" not in r.stdout
    assert "Signature" not in r.stdout


def test_split_model_listed_once_and_removed_whole(env: dict[str, str], models: Path,
                                                   tiny_model_path: Path) -> None:
    # the registry and rm go by names; real split files are in tests/unit/test_registry.py
    for i in (1, 2, 3):
        shutil.copy(tiny_model_path, models / f"big-{i:05d}-of-00003.gguf")
    r = cli(env, "list", "--json", "--models-dir", str(models), "--url", _closed_port_url())
    (m,) = json.loads(r.stdout)["models"]
    assert m["id"] == "big" and m["path"].endswith("big-00001-of-00003.gguf")
    assert m["size_bytes"] == 3 * tiny_model_path.stat().st_size
    r = cli(env, "rm", "big", "--yes", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert "3 parts" in r.stdout and files(models) == []
