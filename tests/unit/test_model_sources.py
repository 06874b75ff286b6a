"""hearth.tools.cli.model_sources: the models dir's record of where each model came from."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from hearth.tools.cli.model_sources import (
    SOURCES_FILE,
    forget_source,
    read_sources,
    record_source,
)


def test_record_read_forget(tmp_path: Path) -> None:
    assert read_sources(tmp_path) == {}
    record_source(tmp_path, "a", "hf:o/r/a.gguf")
    record_source(tmp_path, "b", "url:https://example.org/b.gguf")
    record_source(tmp_path, "a", "added:/x/a.gguf")  # replaced
    assert read_sources(tmp_path) == {"a": "added:/x/a.gguf",
                                      "b": "url:https://example.org/b.gguf"}
    forget_source(tmp_path, "a")
    forget_source(tmp_path, "never-there")
    assert json.loads((tmp_path / SOURCES_FILE).read_text()) == {
        "b": "url:https://example.org/b.gguf"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_bad_file_reads_as_no_sources(tmp_path: Path) -> None:
    (tmp_path / SOURCES_FILE).write_text("{not json")
    assert read_sources(tmp_path) == {}
    (tmp_path / SOURCES_FILE).write_text('["a list"]')
    assert read_sources(tmp_path) == {}
    (tmp_path / SOURCES_FILE).write_text('{"a": "catalogue:a", "b": 3}')
    assert read_sources(tmp_path) == {"a": "catalogue:a"}
    record_source(tmp_path, "c", "catalogue:c")  # a bad file is replaced, not a crash
    assert read_sources(tmp_path) == {"a": "catalogue:a", "c": "catalogue:c"}


def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    threads = [threading.Thread(target=record_source, args=(tmp_path, f"m{i}", f"catalogue:{i}"))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_sources(tmp_path) == {f"m{i}": f"catalogue:{i}" for i in range(16)}
