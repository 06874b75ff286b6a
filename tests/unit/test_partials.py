"""tools/cli/partials.py: the records of unfinished downloads, and finding and removing them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hearth.tools.cli.file_lock import model_lock_path
from hearth.tools.cli.partials import (
    PartRecord,
    discard,
    leftovers,
    read_record,
    record_path,
    remove_leftovers,
    write_record,
)


def test_a_record_round_trips_and_a_bad_one_reads_as_none(tmp_path: Path) -> None:
    part = tmp_path / ".m.gguf.part"
    assert read_record(part) is None
    rec = PartRecord("https://h.example/m.gguf", 10, '"abc"', "Wed, 01 Jan 2025 00:00:00 GMT")
    write_record(part, rec)
    assert record_path(part) == tmp_path / ".m.gguf.part.json"
    assert read_record(part) == rec and rec.validator == '"abc"'
    record_path(part).write_text("{not json")
    assert read_record(part) is None
    record_path(part).write_text('{"size": 3}')  # no url
    assert read_record(part) is None


def test_the_validator_is_a_strong_etag_else_last_modified() -> None:
    assert PartRecord("u", etag='W/"x"', last_modified="LM").validator == "LM"
    assert PartRecord("u", etag='W/"x"').validator is None
    assert PartRecord("u").validator is None


def test_leftovers_are_one_models_only(tmp_path: Path) -> None:
    names = [".m.gguf.part", ".m.gguf.part.json", ".m-00001-of-00002.gguf.part",
             ".m-00002-of-00002.gguf.part.json", "m.gguf.part",
             # not m's: another model, a finished model, add's temporary copy, the lock
             ".mm.gguf.part", ".m-x.gguf.part", "m.gguf", ".m.gguf.lock", ".m.gguf.1a2b.part"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in leftovers(tmp_path, "m")] == sorted(names[:5])
    discard(tmp_path / ".m.gguf.part")
    assert not (tmp_path / ".m.gguf.part").exists()
    assert not (tmp_path / ".m.gguf.part.json").exists()


HOLD = """
import sys
from pathlib import Path
from hearth.tools.cli.file_lock import flocked
with flocked(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_remove_leftovers_only_when_no_one_holds_the_lock(tmp_path: Path) -> None:
    (tmp_path / ".m.gguf.part").write_bytes(b"x")
    lock = model_lock_path(tmp_path, "m")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert remove_leftovers(tmp_path, "m") is None
        assert (tmp_path / ".m.gguf.part").exists() and lock.exists()
    finally:
        holder.kill()
        holder.communicate()
    assert remove_leftovers(tmp_path, "m") == [tmp_path / ".m.gguf.part"]
    assert sorted(tmp_path.iterdir()) == []  # the lock file too
    assert remove_leftovers(tmp_path, "m") == []
    assert not lock.exists()  # nothing to remove: no lock file made either
