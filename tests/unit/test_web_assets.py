"""api/handlers/web.py's start-up read of the page's files: names, types, versions, the page's
placeholders filled in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hearth.api.handlers.web import STATIC_DIR, load_assets
from hearth.api.page_headers import CSP


def test_the_package_s_files_are_read_with_their_versions() -> None:
    assets = load_assets("/v1")
    assert set(assets) == {"index.html", "app.js", "markdown.js", "reference.js", "app.css"}
    page = assets["index.html"].body.decode()
    assert "{{" not in page  # every placeholder filled
    for name in ("app.js", "markdown.js", "reference.js", "app.css"):
        body = (STATIC_DIR / name).read_bytes()
        assert assets[name].body == body
        assert assets[name].version == hashlib.sha256(body).hexdigest()[:12]
        assert f"/web/{name}?v={assets[name].version}" in page
    assert assets["app.js"].content_type == "text/javascript; charset=utf-8"
    assert assets["app.css"].content_type == "text/css; charset=utf-8"


def test_the_prefix_is_escaped_into_the_page(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<meta content="{{api_prefix}}">{{v:a.js}}')
    (tmp_path / "a.js").write_text("x")
    (tmp_path / "notes.txt").write_text("not served")  # not a type the page uses
    assets = load_assets('/a"b<', tmp_path)
    assert set(assets) == {"index.html", "a.js"}
    assert assets["index.html"].body.decode() == \
        '<meta content="/a&quot;b&lt;">' + hashlib.sha256(b"x").hexdigest()[:12]


def test_a_broken_install_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_assets("/v1", tmp_path)


def test_the_policy_allows_nothing_inline_nor_foreign() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert all("unsafe" not in v and "*" not in v and "http" not in v
               for v in directives.values())


def test_the_static_folder_ships_as_a_package_of_its_own() -> None:
    """setuptools warns ("would be ignored") about a folder Python can import that is not in
    ``packages``; the page's files are a data-only package, listed with its package data."""
    import tomllib
    config = tomllib.loads((STATIC_DIR.parents[1] / "pyproject.toml").read_text("utf-8"))
    setuptools = config["tool"]["setuptools"]
    assert "hearth.api.static" in setuptools["packages"]
    shipped = setuptools["package-data"]["hearth.api.static"]
    assert {Path(p).suffix for p in shipped} >= {p.suffix for p in STATIC_DIR.iterdir()}
