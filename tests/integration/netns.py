"""Network namespaces for the remote-worker tests: boxes made by the test itself (``ip netns
add`` and a veth pair each, deleted at the end) and ``hearth worker`` run inside one.

Used by test_remote_workers.py and test_remote_affinity.py. Needs root; ``boxes`` skips with
the reason when ``ip netns`` is not permitted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Server, free_port


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass
class Box:
    """A network namespace joined to this one by a veth pair: ``host_if`` (here, ``host_ip``)
    and its peer inside the namespace (``box_ip``)."""

    ns: str
    host_if: str
    host_ip: str
    box_ip: str


def make_box(tag: str, net: str) -> Box:
    b = Box(f"hearth-t{tag}", f"h{tag}a", f"{net}.1", f"{net}.2")
    ip("netns", "add", b.ns)
    ip("link", "add", b.host_if, "type", "veth", "peer", "name", f"h{tag}b")
    ip("link", "set", f"h{tag}b", "netns", b.ns)
    ip("addr", "add", f"{b.host_ip}/30", "dev", b.host_if)
    ip("link", "set", b.host_if, "up")
    ip("-n", b.ns, "addr", "add", f"{b.box_ip}/30", "dev", f"h{tag}b")
    ip("-n", b.ns, "link", "set", f"h{tag}b", "up")
    ip("-n", b.ns, "link", "set", "lo", "up")
    return b


def two_boxes(tag: str) -> Iterator[list[Box]]:
    """Two boxes (for a module-scoped fixture: yields once, deletes them after). A server
    listens on the first one's link; the second reaches that address through its own link (a
    host route), so cutting the first one's link cuts only the first box. ``tag``: a digit
    or two that keeps the names of different modules' boxes apart."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    pid = os.getpid() % 10000
    made: list[Box] = []
    try:
        try:
            for i in range(2):
                made.append(make_box(f"{pid}{tag}{i}",
                                     f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            if not made:
                pytest.skip(f"ip netns add is not permitted here: {exc}")
            raise
        ip("-n", made[1].ns, "route", "add", f"{made[0].host_ip}/32", "via", made[1].host_ip)
        yield made
    finally:
        for b in made:
            subprocess.run(["ip", "link", "del", b.host_if], capture_output=True, timeout=20)
            subprocess.run(["ip", "netns", "del", b.ns], capture_output=True, timeout=20)


class Worker:
    """``hearth worker`` run inside the box's namespace; its stderr collected."""

    def __init__(self, box: Box, home: Path, models_dir: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env["XDG_CONFIG_HOME"] = str(home / "config")
        env["XDG_DATA_HOME"] = str(home / "data")
        self.log = home / f"worker-{free_port()}.log"
        with self.log.open("w") as sink:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", box.ns, sys.executable, "-m", "hearth.tools.cli",
                 "worker", "--models-dir", str(models_dir), *args],
                stdout=subprocess.DEVNULL, stderr=sink, env=env)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def print_key(home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    out = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "worker", "--print-key"],
                         capture_output=True, text=True, env=env, check=True, timeout=60)
    return out.stdout.strip()


def server_key(srv: Server) -> str:
    out = srv.wait_for_stdout("--server-key")
    return out.split("--server-key '", 1)[1].split("'", 1)[0]


def models(srv: Server) -> dict[str, list[str]]:
    """model id -> where it is loaded (``hearth.workers``)."""
    resp = srv.request("GET", "/v1/models")
    assert resp.status == 200
    return {m["id"]: m["hearth"].get("workers", []) for m in resp.json()["data"]}
