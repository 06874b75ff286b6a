"""A model file replaced under a running ``hearth serve`` is served from its new weights.

Two tiny models built from different seeds give different greedy text. ``tiny`` is swapped for
the other seed's file, by hand with an atomic rename and then back with ``hearth models add
--force``; each time the next answer is the one the file now on disk gives (asked under a
second id, ``other``, in the same directory, to know it). Requests run one at a time, so batch
composition is the same (see DESIGN.md, Determinism).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, alive, named_pids
from hearth.tools.cli.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration

ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")


@pytest.fixture
def seeds(tmp_path: Path) -> tuple[Path, Path]:
    """The two seeds' files, outside the models directory."""
    return (build_tiny_model(tmp_path / "seeds" / "zero.gguf", seed=0),
            build_tiny_model(tmp_path / "seeds" / "one.gguf", seed=1))


@pytest.fixture
def live(tmp_path: Path, seeds: tuple[Path, Path]) -> Iterator[Server]:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(seeds[0], models / "tiny.gguf")
    shutil.copyfile(seeds[1], models / "other.gguf")
    # --max-loaded-models 2 with both loaded: the new tiny worker can only start once the old
    # one has exited (its memory counts until then), so the swap waits rather than evicting
    srv = Server(models, "tiny", tmp_path / "home", args=(*ARGS, "--max-loaded-models", "2"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def answer(server: Server, model: str) -> str:
    r = server.chat({"model": model, "temperature": 0, "max_tokens": 8,
                     "messages": [{"role": "user", "content": "Tell me a story."}]})
    assert r.status == 200, r.body
    body = r.json()
    assert body["model"] == model
    text = body["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    return text


def loaded(server: Server, model: str) -> bool:
    """/v1/models' flag, once the scheduler's status (sent beside the answers, on another
    connection) has caught up with a load that is done (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        flag = server.request("GET", f"/v1/models/{model}").json()["hearth"]["loaded"]
        if flag or time.monotonic() > deadline:
            return bool(flag)
        time.sleep(0.05)


def add_force(server: Server, source: Path, name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(server.home / "config")
    env["XDG_DATA_HOME"] = str(server.home / "data")
    r = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "add", str(source),
                        "--name", name, "--force", "--models-dir", str(server.models_dir)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_replaced_model_file_is_served_from_its_new_weights(
        live: Server, seeds: tuple[Path, Path]) -> None:
    before = answer(live, "tiny")
    other = answer(live, "other")
    assert before != other  # else the swap could not be seen
    assert loaded(live, "tiny") and loaded(live, "other")
    (old_worker,) = named_pids(live, "hearth-w-tiny")

    staged = live.models_dir / ".tiny.gguf.swap"  # hidden: not a model of its own
    shutil.copyfile(seeds[1], staged)
    os.replace(staged, live.models_dir / "tiny.gguf")
    assert answer(live, "tiny") == other
    assert not alive(old_worker)  # the old weights' process is gone, not kept beside
    assert loaded(live, "tiny")
    assert answer(live, "other") == other  # the other model kept serving throughout

    add_force(live, seeds[0], "tiny")  # and back, the way `hearth models add --force` does it
    assert answer(live, "tiny") == before
