"""api/settings_view.py: every effective setting with its source and flag; keys by name only."""

from __future__ import annotations

import argparse
import json

from hearth.api.settings_view import settings_view
from hearth.tools.model_config import parse_models_table
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


def test_per_model_tables_are_shown_with_what_applies_where_they_are_silent() -> None:
    template = "{% for m in messages %}" + "x" * 80 + "{% endfor %}\n{{ eos }}"
    cfg = parse_models_table({"b-model": {"parallel": 4, "chat_template": template,
                                          "temperature": 0.5, "aliases": ["gpt-x", "y"],
                                          "flash_attn": False},
                              "a-model": {"keep_alive": "10m"}}, "hearth.toml")
    s = resolved(["--ctx-size", "2048"], {})
    s = Settings(**{**{f: getattr(s, f) for f in s.__struct_fields__}, "models": cfg})
    rows = settings_view(s, [])["models"]
    table = {(r["model"], r["name"]): (r["value"], r["source"], r["flag"]) for r in rows}
    assert [r["model"] for r in rows] == sorted(r["model"] for r in rows)  # by model id
    assert table[("a-model", "keep_alive")] == (600.0, "config file", "--keep-alive")
    assert table[("a-model", "parallel")] == (s.parallel, "global setting (default)",
                                              "--parallel")
    assert table[("a-model", "ctx_size")] == (2048, "global setting (flag)", "--ctx-size")
    assert table[("a-model", "chat_template")] == ("the GGUF's own", "default", "")
    assert table[("a-model", "replicas")] == (1, "default", "")
    assert table[("b-model", "parallel")] == (4, "config file", "--parallel")
    assert table[("b-model", "temperature")] == (0.5, "config file", "")
    assert table[("b-model", "aliases")] == ("gpt-x, y", "config file", "")
    assert table[("b-model", "flash_attn")] == ("off", "config file", "")
    # the KV cache types and GPU layers a table leaves to the global settings
    assert table[("a-model", "cache_type_v")] == ("f16", "global setting (default)",
                                                  "--cache-type-v")
    assert table[("a-model", "n_gpu_layers")] == ("auto", "global setting (default)",
                                                  "--n-gpu-layers")
    value, source, _ = table[("b-model", "chat_template")]
    assert source == "config file"
    assert value == template[:60] + f" … ({len(template)} characters)"
    # only what the table sets, and the always-shown ones
    assert ("a-model", "temperature") not in table and ("a-model", "embeddings") not in table
    assert {r["toml_key"] for r in rows if r["model"] == "b-model"} >= \
        {'models."b-model".parallel', 'models."b-model".chat_template'}
    assert settings_view(Settings(), [])["models"] == []
