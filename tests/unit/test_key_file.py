"""tools/key_file.py (the --keys-file format) and api/key_watch.py (re-reading it when it
changes), on real files. Error messages name the file and line and never hold a key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import pytest
from hearth.api.access import KeyRing
from hearth.api.key_watch import KeyFileWatch
from hearth.tools import key_file
from hearth.tools.key_file import KeyFileError
from hearth.tools.settings import Settings, SettingsError, build_parser, resolve

SECRET = "k-very-secret-0123"


def parse_error(text: str, taken: dict[str, str] | None = None) -> str:
    with pytest.raises(KeyFileError) as info:
        key_file.parse(text, "/etc/hearth/keys", taken)
    message = str(info.value)
    assert "/etc/hearth/keys" in message
    assert SECRET not in message and "very-secret" not in message
    return message


# ---- the format -------------------------------------------------------------------------------


def test_good_lines_comments_and_blank_lines() -> None:
    text = ("# team keys\n"
            "\n"
            "alice = k-alice\n"
            "   # indented comment\n"
            "bob=k-bob==\n"                    # a key may hold '=' (base64 padding)
            "ci.bot_2 =  k#not-a-comment  \r\n"  # '#' inside a key is part of it; CRLF is fine
            "   \t\n")
    assert key_file.parse(text, "keys") == [
        ("alice", "k-alice"), ("bob", "k-bob=="), ("ci.bot_2", "k#not-a-comment")]


def test_an_empty_file_holds_no_keys() -> None:
    assert key_file.parse("", "keys") == []
    assert key_file.parse("# nobody yet\n\n", "keys") == []


@pytest.mark.parametrize(("text", "line", "says"), [
    (f"alice = k-a\n{SECRET}\n", 2, "expected 'name = key'"),           # a key on its own
    (f"# c\n\nalice: {SECRET}\n", 3, "expected 'name = key'"),          # the other syntax
    (f"{SECRET} x = y\n", 1, "name may hold only"),                     # a key as the name
    (f"= {SECRET}\n", 1, "name may hold only"),
    (f"{'n' * 65} = {SECRET}\n", 1, "at most 64"),
    ("alice =\n", 1, "(alice): an API key may not be empty"),
    ("alice = clé-secret\n", 1, "(alice): an API key must be printable ASCII"),
    (f'alice = "{SECRET}"\n', 1, "(alice): write the key without quotes"),
    (f"alice = '{SECRET}'\n", 1, "without quotes"),
])
def test_bad_lines_name_the_line_not_the_key(text: str, line: int, says: str) -> None:
    message = parse_error(text)
    assert f"line {line}:" in message or f"line {line} (" in message
    assert says in message


def test_a_name_given_twice() -> None:
    message = parse_error(f"alice = k-1\nbob = k-2\nalice = {SECRET}\n")
    assert "line 3" in message and "'alice' is given twice (also on line 1)" in message


def test_a_name_taken_by_the_keys_table_or_an_api_key() -> None:
    settings = Settings(named_keys={"alice": "k-a"}, api_keys=["k-flag"])
    taken = key_file.taken_names(settings)
    assert set(taken) == {"alice", "key1"}
    message = parse_error(f"bob = k-b\nalice = {SECRET}\n", taken)
    assert "line 2" in message and "'alice'" in message and "[keys] table" in message
    message = parse_error(f"key1 = {SECRET}\n", taken)
    assert "'key1'" in message and "--api-key" in message


# ---- reading the file -------------------------------------------------------------------------


def test_read_gives_the_keys_and_a_stamp(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("\ufeffalice = k-a\n", encoding="utf-8")  # a BOM is ignored
    got = key_file.read(str(path))
    assert got.keys == [("alice", "k-a")]
    assert got.stamp == key_file.stamp_of(os.stat(path))


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(KeyFileError, match=f"cannot read the key file {missing}: No such file"):
        key_file.read(str(missing))
    with pytest.raises(KeyFileError, match="cannot read the key file .*"):
        key_file.read(str(tmp_path))  # a directory
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KeyFileError, match="not a regular file"):
        key_file.read(str(fifo))  # refused, not waited on


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"alice = k-a\n# caf\xe9\nbob = k-b\n")
    with pytest.raises(KeyFileError, match=r"line 2: not UTF-8 text"):
        key_file.read(str(path))


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"#" * (key_file.MAX_BYTES + 1))
    with pytest.raises(KeyFileError, match="larger than"):
        key_file.read(str(path))


def test_loose_permissions_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alice = k-a\n")
    path.chmod(0o600)
    assert key_file.loose_permissions(str(path)) is None
    path.chmod(0o640)
    warning = key_file.loose_permissions(str(path))
    assert warning is not None and "mode 640" in warning and f"chmod 600 {path}" in warning


def test_the_setting(tmp_path: Path) -> None:
    parser = build_parser(argparse.ArgumentParser())
    assert resolve(parser.parse_args([]), {}).keys_file == ""
    assert resolve(parser.parse_args(["--keys-file", "~/k"]), {}).keys_file == \
        os.path.expanduser("~/k")
    env = {"HEARTH_KEYS_FILE": "/a/keys"}
    assert resolve(parser.parse_args([]), env).keys_file == "/a/keys"
    config = tmp_path / "hearth.toml"
    config.write_text('keys_file = "/b/keys"\n')
    assert resolve(parser.parse_args([]), {"HEARTH_CONFIG": str(config)}).keys_file == "/b/keys"
    config.write_text("keys_file = true\n")
    with pytest.raises(SettingsError, match="keys_file"):
        resolve(parser.parse_args([]), {"HEARTH_CONFIG": str(config)})


# ---- re-reading it (api/key_watch.py) ---------------------------------------------------------


class Watched:
    """A key file, the ring an api would build from it, and its watcher."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.path = tmp_path / "keys"
        self.write(text)
        self.fixed = [("admin", "k-admin")]
        taken = {"admin": "the config's [keys] table"}
        loaded = key_file.read(str(self.path), taken)
        self.ring = KeyRing(self.fixed + loaded.keys)
        self.watch = KeyFileWatch(str(self.path), self.fixed, taken, self.ring, loaded)

    def write(self, text: str) -> None:
        # write a new file and rename it over the old one, as editors do: the stamp always
        # changes (new inode), even within one mtime tick
        tmp = self.path.with_name("keys.tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def check(self) -> None:
        asyncio.run(self.watch.check())


def test_a_changed_file_swaps_the_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = Watched(tmp_path, "alice = k-alice\nbob = k-bob\n")
    assert w.ring.names == ["admin", "alice", "bob"]
    w.check()  # unchanged: nothing happens
    assert not caplog.records
    w.write(f"alice = k-alice\ncarol = {SECRET}\n")
    with caplog.at_level(logging.INFO, "hearth.api"):
        w.check()
    assert w.ring.match(SECRET) == "carol"
    assert w.ring.match("k-bob") is None           # revoked
    assert w.ring.match("k-admin") == "admin"      # the [keys] table's stay
    assert w.ring.names == ["admin", "alice", "carol"]
    [record] = caplog.records
    assert "added carol" in record.getMessage() and "removed bob" in record.getMessage()
    assert SECRET not in record.getMessage()
    # a revoked key stays redacted in --verbose logs
    assert w.ring.redact("x k-bob y k-alice") == "x [redacted] y [redacted]"


def test_an_invalid_file_keeps_the_keys_and_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = Watched(tmp_path, "alice = k-alice\n")
    w.write(f"alice = k-alice\n{SECRET}\n")
    with caplog.at_level(logging.INFO, "hearth.api"):
        w.check()
        w.check()
        w.check()
    assert w.ring.match("k-alice") == "alice"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    message = caplog.records[0].getMessage()
    assert "line 2" in message and str(w.path) in message and SECRET not in message
    # a name the [keys] table has is refused the same way
    caplog.clear()
    w.write("admin = k-other\n")
    with caplog.at_level(logging.INFO, "hearth.api"):
        w.check()
    assert "'admin' is already used" in caplog.records[0].getMessage()
    assert w.ring.match("k-admin") == "admin" and w.ring.match("k-other") is None
    # fixed again: read at once
    w.write("alice = k-alice\ndave = k-dave\n")
    w.check()
    assert w.ring.match("k-dave") == "dave"


def test_a_deleted_file_keeps_the_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = Watched(tmp_path, "alice = k-alice\n")
    w.path.unlink()
    with caplog.at_level(logging.INFO, "hearth.api"):
        w.check()
        w.check()
    assert w.ring.match("k-alice") == "alice"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "No such file" in caplog.records[0].getMessage()
    w.write("bob = k-bob\n")  # back: read again
    w.check()
    assert w.ring.match("k-bob") == "bob" and w.ring.match("k-alice") is None


def test_the_watch_task_runs_until_cancelled(tmp_path: Path) -> None:
    w = Watched(tmp_path, "alice = k-alice\n")
    w.watch.interval = 0.01

    async def scenario() -> None:
        task = asyncio.create_task(w.watch.run())
        w.write("bob = k-bob\n")
        for _ in range(500):  # a generous timeout, polled
            if w.ring.match("k-bob") == "bob":
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert w.ring.match("k-bob") == "bob"
