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
