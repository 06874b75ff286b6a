"""api/settings_view.py: every effective setting with its source and flag; keys by name only."""

from __future__ import annotations

import argparse
import json

from hearth.api.settings_view import settings_view
from hearth.tools.settings import OPTIONS, Settings, build_parser, resolve

SECRET = "sk-secret-0123456789"


def resolved(argv: list[str], env: dict[str, str]) -> Settings:
    return resolve(build_parser(argparse.ArgumentParser()).parse_args(argv), environ=env)


def rows(s: Settings, names: list[str]) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in settings_view(s, names)["settings"]}


def test_each_setting_has_its_value_source_and_flag() -> None:
    s = resolved(["--port", "9000", "--api-key", SECRET, "--cors-origins", "http://a.example",
                  "--no-cors"], {"HEARTH_PARALLEL": "3"})
    table = rows(s, ["key1"])
    assert table["port"] == {"name": "port", "value": 9000, "source": "flag", "flag": "--port",
                             "env": "HEARTH_PORT", "toml_key": "port"}
    assert (table["parallel"]["value"], table["parallel"]["source"]) == (3, "environment")
    assert (table["host"]["value"], table["host"]["source"]) == ("127.0.0.1", "default")
    assert (table["cors"]["value"], table["cors"]["source"]) == ("off", "flag")
    assert table["cors_origins"]["value"] == "http://a.example"
    assert table["trusted_hosts"]["value"] == "none"
    assert (table["tls"]["value"], table["verbose"]["value"]) == ("off", "off")
    assert table["api_key (names)"]["value"] == "key1"
    assert table["api_key (names)"]["source"] == "flag"
    # every option is shown; the list comes first
    assert {o.toml_key for o in OPTIONS} - {"api_key"} <= set(table)
    names = list(table)
    assert names[:4] == ["host", "port", "api_prefix", "trusted_hosts"]


def test_no_key_is_ever_shown_only_names_and_where_they_came_from(tmp_path: object) -> None:
    s = resolved(["--api-key", SECRET], {})
    s = Settings(**{**{f: getattr(s, f) for f in s.__struct_fields__},
                    "named_keys": {"alice": "sk-alice-secret"}, "keys_file": "/etc/keys"})
    view = settings_view(s, ["alice", "key1", "bob"])
    text = json.dumps(view)
    assert SECRET not in text and "sk-alice-secret" not in text
    assert view["key_names"] == {"alice": "config file [keys]", "key1": "flag",
                                 "bob": "keys file (/etc/keys)"}
    assert view["read_only"] is True


def test_a_generated_key_says_so() -> None:
    s = Settings(api_keys=[SECRET], sources={"api_keys": "generated"})
    view = settings_view(s, ["key1"])
    assert view["key_names"] == {"key1": "generated at first start"}
    assert SECRET not in json.dumps(view)
