"""The README documents every setting: its flag, env var and TOML key, in the settings table."""

from __future__ import annotations

from pathlib import Path

import pytest
from hearth.tools.settings import OPTIONS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TABLE = README[README.index("## Settings"):]
TABLE = TABLE[: TABLE.index("\n## ", 1)]


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_every_setting_is_in_the_settings_table(opt: object) -> None:
    for text in (opt.flag, opt.env, opt.toml_key):  # type: ignore[attr-defined]
        assert f"`{text}`" in TABLE, f"{text} is missing from the README's settings table"
