"""Process hygiene shared by every hearth child process (api, scheduler, workers).

Children are started with the ``spawn`` method by their parent. Each child:
* ignores SIGINT: Ctrl-C reaches the whole process group, and only ``hearth serve`` decides how
  to stop (it tells the scheduler, which tells the workers);
* asks Linux to SIGTERM it when its parent dies, so a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import multiprocessing
import multiprocessing.process
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def child_setup(title: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME: shows in `ps -o comm`
        except OSError:
            pass


def parent_alive(ppid: int) -> bool:
    """True while the process that started us is still our parent."""
    return os.getppid() == ppid


def _run_entry(target: str, arg: bytes) -> None:
    module, _, func = target.partition(":")
    getattr(importlib.import_module(module), func)(arg)


def spawn_process(target: str, arg: bytes, *, name: str) -> multiprocessing.process.BaseProcess:
    """Start ``module:function(arg)`` in a fresh interpreter (``spawn``, never ``fork``: parents
    hold ZeroMQ sockets). The parent imports nothing of the target's module."""
    proc = multiprocessing.get_context("spawn").Process(
        target=_run_entry, args=(target, arg), name=name, daemon=False)
    proc.start()
    return proc
