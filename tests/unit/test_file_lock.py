"""tools/cli/file_lock.py: one model's lock, across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hearth.tools.cli.file_lock import Busy, flocked, model_lock_path

HOLD = """
import sys, time
from pathlib import Path
from hearth.tools.cli.file_lock import flocked
with flocked(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_another_process_holding_it_is_busy_or_waited_for(tmp_path: Path) -> None:
    lock = model_lock_path(tmp_path, "m")
    assert lock == tmp_path / ".m.gguf.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(Busy), flocked(lock, wait=False):
            pass
        waited: list[bool] = []

        def release() -> None:  # called just before blocking: let the holder go
            waited.append(True)
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()

        with flocked(lock, on_wait=release):
            assert waited == [True]
    finally:
        holder.kill()
        holder.communicate()  # closes its pipes
    with flocked(lock, wait=False):  # free again, and the file stays
        assert lock.exists()


def test_an_unwritable_place_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError), flocked(tmp_path / "missing" / "x.lock"):
        pass


HOLD_THEN_DELETE = """
import sys
from pathlib import Path
from hearth.tools.cli.file_lock import flocked
path = Path(sys.argv[1])
with flocked(path):
    print("held", flush=True)
    sys.stdin.readline()
    path.unlink()  # as `hearth models rm` does, holding the lock
"""


def test_a_lock_deleted_by_its_holder_is_not_held_twice(tmp_path: Path) -> None:
    """A waiter on a file that its holder deletes ends up holding the file now at the path,
    so that a third process cannot lock a new file beside it."""
    lock = model_lock_path(tmp_path, "m")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THEN_DELETE, str(lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        def release() -> None:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()

        with flocked(lock, on_wait=release):
            assert lock.exists()  # the file we hold is the one at the path
            third = subprocess.run([sys.executable, "-c", (
                "import sys; from pathlib import Path; from hearth.tools.cli.file_lock import "
                "Busy, flocked\ntry:\n    with flocked(Path(sys.argv[1]), wait=False): pass\n"
                "except Busy:\n    sys.exit(10)"), str(lock)], timeout=60)
            assert third.returncode == 10
    finally:
        holder.kill()
        holder.communicate()
