"""The README documents every setting: its flag, env var and TOML key, in the settings table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hearth.tools.settings import OPTIONS, resolve

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TABLE = README[README.index("## Settings"):]
TABLE = TABLE[: TABLE.index("\n## ", 1)]


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_every_setting_is_in_the_settings_table(opt: object) -> None:
    for text in (opt.flag, opt.env, opt.toml_key):  # type: ignore[attr-defined]
        assert f"`{text}`" in TABLE, f"{text} is missing from the README's settings table"


TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.splitlines()[0][:30])
def test_every_toml_example_is_a_valid_config(block: str, tmp_path: Path) -> None:
    config = tmp_path / "hearth.toml"
    config.write_text(block.replace('"..."', '"{{ messages }}"'))
    resolve(None, {"HEARTH_CONFIG": str(config)})  # raises SettingsError if it is not
