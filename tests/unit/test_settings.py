"""tools/settings.py: each setting declared once, defaults, precedence (flag > env > TOML file >
default), validation, and the per-model worker config built from the settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
from hearth.scheduler.messages import WorkerSpec
from hearth.tools.model_config import ModelConfig, SamplingDefaults, WorkerConfig
from hearth.tools.settings import (
    CONFIG,
    OPTIONS,
    SOURCES,
    TABLES,
    Option,
    Settings,
    SettingsError,
    Table,
    build_parser,
    declarations,
    describe,
    resolve,
)

WriteToml = Callable[[str], str]


def settings(argv: list[str] | tuple[str, ...] = (),
             env: Mapping[str, str] | None = None) -> Settings:
    args = build_parser(argparse.ArgumentParser()).parse_args(list(argv))
    return resolve(args, environ={} if env is None else env)


@pytest.fixture()
def toml(tmp_path: Path) -> WriteToml:
    def write(text: str) -> str:
        path = tmp_path / "hearth.toml"
        path.write_text(text)
        return str(path)

    return write


def error_of(argv: list[str] | tuple[str, ...] = (),
             env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        settings(argv, env)
    return str(info.value)


# ---- one declaration per setting --------------------------------------------------------------


def test_every_field_has_exactly_one_declaration() -> None:
    fields = [info.name for info in msgspec.structs.fields(Settings)]
    declared = declarations()
    assert [d.field for d in declared] == fields
    # OPTIONS, TABLES and CONFIG are that list split by kind: each field in exactly one
    derived = [opt.field for opt in OPTIONS] + [t.field for t in TABLES] + [CONFIG.field,
                                                                           SOURCES.field]
    assert sorted(derived) == sorted(fields)


def test_options_surface_names_are_unique() -> None:
    for surface in ("name", "flag", "env", "toml_key"):
        names = [getattr(opt, surface) for opt in OPTIONS]
        assert len(names) == len(set(names)), surface
    toml_keys = {opt.toml_key for opt in OPTIONS}
    assert not toml_keys & {table.toml_key for table in TABLES}
    assert {table.toml_key: table.field for table in TABLES} == {
        "keys": "named_keys", "models": "models", "workers": "worker_keys"}


def test_an_option_may_carry_another_name_than_its_field() -> None:
    (api_key,) = [opt for opt in OPTIONS if opt.field == "api_keys"]
    assert (api_key.flag, api_key.env, api_key.toml_key) == \
        ("--api-key", "HEARTH_API_KEY", "api_key")


def test_a_field_without_exactly_one_declaration_is_refused() -> None:
    class Bare(msgspec.Struct):
        port: int = 1

    class Twice(msgspec.Struct):
        port: Annotated[int, Option("a"), Table(dict)] = 1

    with pytest.raises(TypeError, match="Bare.port"):
        declarations(Bare)
    with pytest.raises(TypeError, match="Twice.port"):
        declarations(Twice)


def test_generated_help_names_every_flag_and_env_var() -> None:
    text = build_parser(argparse.ArgumentParser(prog="hearth serve")).format_help()
    assert CONFIG.flag in text and CONFIG.env in text
    for opt in OPTIONS:
        assert opt.flag in text, opt.flag
        assert opt.env in text, opt.env
        if opt.kind == "flag":
            assert "--no-" + opt.flag[2:] in text


def test_describe_shows_each_options_struct_default() -> None:
    defaults = Settings()
    rows = describe()
    assert [row[0] for row in rows] == [opt.flag for opt in OPTIONS]
    for row, opt in zip(rows, OPTIONS, strict=True):
        assert row == (opt.flag, opt.env, opt.toml_key, repr(getattr(defaults, opt.field)),
                       opt.help)


# ---- the per-model worker config --------------------------------------------------------------


def test_worker_config_takes_the_models_table_over_the_global_settings() -> None:
    s = Settings(parallel=3, ctx_size=1024, threads=2, batch_tokens=256, verbose=True, models={
        "m": ModelConfig(parallel=2, ctx_size=512, threads=5, chat_template="{{ x }}",
                         n_gpu_layers=-1, flash_attn=False, cache_type_k="q8_0",
                         cache_type_v="f16", embeddings=False, temperature=0.5, max_tokens=9)})
    assert s.worker_config("m", "/m/m.gguf") == WorkerConfig(
        path="/m/m.gguf", n_slots=2, n_ctx_slot=512, n_threads=5, n_batch=256,
        chat_template="{{ x }}", n_gpu_layers=-1, flash_attn=False, cache_type_k="q8_0",
        cache_type_v="f16",
        sampling_defaults=SamplingDefaults(temperature=0.5, max_tokens=9), verbose=True,
        cache_ram=512 * 2**20)
    assert s.worker_config("other", "/m/o.gguf") == WorkerConfig(
        path="/m/o.gguf", n_slots=3, n_ctx_slot=1024, n_threads=2, n_batch=256, verbose=True,
        cache_ram=512 * 2**20, n_gpu_layers="auto", cache_type_k="f16", cache_type_v="f16")


def test_cache_ram_is_in_mib_unless_a_unit_says_otherwise(toml: WriteToml) -> None:
    assert settings(["--cache-ram", "64"]).cache_ram == 64 * 2**20
    assert settings(["--cache-ram", "2G"]).cache_ram == 2 * 2**30
    assert settings(["--cache-ram", "0"]).worker_config("m", "p").cache_ram == 0
    s = settings(["--cache-ram", "64", "--config", toml(
        '[models.a]\ncache_ram = 16\n[models.b]\ncache_ram = "1G"\n[models.c]\ncache_ram = 0\n')])
    assert [s.worker_config(m, "p").cache_ram for m in "abcd"] == \
        [16 * 2**20, 2**30, 0, 64 * 2**20]
    with pytest.raises(SettingsError, match="cache-ram"):
        settings(["--cache-ram", "lots"])
    with pytest.raises(SettingsError, match="cache_ram"):
        settings(["--config", toml('[models.a]\ncache_ram = "lots"\n')])


# ---- KV cache types and GPU layers (issue 21) -------------------------------------------------


def test_kv_cache_types_and_gpu_layers_are_global_settings_a_models_table_overrides(
        toml: WriteToml) -> None:
    s = settings(["--config", toml('cache_type_k = "q4_0"\nn_gpu_layers = 12\n'
                                   '[models.a]\ncache_type_k = "f16"\nn_gpu_layers = "auto"\n'),
                  "--cache-type-v", "q8_0"], {"HEARTH_CACHE_TYPE_K": "q8_0"})
    assert (s.cache_type_k, s.cache_type_v, s.n_gpu_layers) == ("q8_0", "q8_0", 12)
    a, b = s.worker_config("a", "/a.gguf"), s.worker_config("b", "/b.gguf")
    assert (a.cache_type_k, a.cache_type_v, a.n_gpu_layers) == ("f16", "q8_0", "auto")
    assert (b.cache_type_k, b.cache_type_v, b.n_gpu_layers) == ("q8_0", "q8_0", 12)
    # a quantised V cache needs flash attention: turned on where the config leaves it unset
    assert a.flash_attn is True and b.flash_attn is True
    assert settings().worker_config("c", "/c.gguf").flash_attn is None  # f16: llama.cpp decides
    assert settings(["--n-gpu-layers", "0"]).n_gpu_layers == 0
    assert settings(["--n-gpu-layers", "-1"]).n_gpu_layers == -1


@pytest.mark.parametrize(("argv", "environ", "words"), [
    (["--cache-type-k", "q5_1"], {}, "--cache-type-k: must be one of f16, q8_0, q4_0"),
    ([], {"HEARTH_CACHE_TYPE_V": "bf16"}, "HEARTH_CACHE_TYPE_V: must be one of"),
    (["--n-gpu-layers", "most"], {}, "--n-gpu-layers: must be auto or a number"),
    (["--n-gpu-layers", "-2"], {}, "--n-gpu-layers: must be auto, -1"),
])
def test_bad_kv_cache_types_and_gpu_layers_are_refused(argv: list[str], environ: dict[str, str],
                                                        words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        settings(argv, environ)


def test_a_quantised_v_cache_with_flash_attention_off_is_refused(toml: WriteToml) -> None:
    path = toml('[models.m]\nflash_attn = false\n')
    assert settings(["--config", path]).worker_config("m", "/m").flash_attn is False  # f16 V
    with pytest.raises(SettingsError, match=r'\[models."m"\]: a quantised V cache \(cache_type_v '
                       r"q4_0\) needs flash attention, but flash_attn = false"):
        settings(["--config", path, "--cache-type-v", "q4_0"])
    # a quantised K alone runs without flash attention
    assert settings(["--config", path, "--cache-type-k", "q8_0"]).worker_config(
        "m", "/m").flash_attn is False
    with pytest.raises(SettingsError, match="needs flash attention"):
        settings(["--config", toml('[models.m]\nflash_attn = false\ncache_type_v = "q8_0"\n')])


def test_speculative_decoding_settings_global_and_per_model(toml: WriteToml) -> None:
    s = settings(["--speculative", "--draft-max", "5", "--config",
                  toml('[models.a]\nspeculative = false\n'
                       '[models.b]\ndraft_max = 12\ndraft_ngram = 2\n')])
    a, b, c = (s.worker_config(m, "p") for m in "abc")
    assert (a.speculative, a.draft_max, a.draft_ngram) == (False, 5, 3)
    assert (b.speculative, b.draft_max, b.draft_ngram) == (True, 12, 2)
    assert (c.speculative, c.draft_max, c.draft_ngram) == (True, 5, 3)
    assert a.draft_policy == "cost"  # by default drafts must pay for their positions
    p = settings(["--draft-policy", "always", "--config",
                  toml('[models.a]\ndraft_policy = "cost"\n')])
    assert [p.worker_config(m, "p").draft_policy for m in "ab"] == ["cost", "always"]
    with pytest.raises(SettingsError, match="--draft-policy: must be cost or always"):
        settings(["--draft-policy", "sometimes"])
    assert settings([]).worker_config("a", "p").speculative is False  # off by default
    assert settings(env={"HEARTH_SPECULATIVE": "1"}).speculative is True
    with pytest.raises(SettingsError, match="--draft-max: must be from 1 to 64"):
        settings(["--draft-max", "0"])
    with pytest.raises((SettingsError, ValueError), match="draft_ngram"):
        settings(["--config", toml('[models.a]\ndraft_ngram = 0\n')])


def test_worker_config_threads_zero_means_every_core() -> None:
    assert Settings().worker_config("m", "p").n_threads == Settings().effective_threads() >= 1


def test_worker_config_crosses_to_the_worker_in_its_spec(toml: WriteToml) -> None:
    s = settings(["--config", toml('[models.tiny]\nparallel = 2\ntop_p = 0.5\n'
                                   'cache_type_k = "q4_0"\n')])
    spec = WorkerSpec(worker_id="w", model="tiny", control_endpoint="c", events_endpoint="e",
                      config=s.worker_config("tiny", "/m/tiny.gguf"))
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=WorkerSpec)
    assert back == spec
    assert (back.config.n_slots, back.config.cache_type_k) == (2, "q4_0")
    assert back.config.sampling_defaults == SamplingDefaults(top_p=0.5)


# ---- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert s.host == "127.0.0.1"
    assert s.port == 1337
    assert s.api_prefix == "/v1"
    assert s.api_keys == []
    assert s.trusted_hosts == []
    assert s.cors is True
    assert s.cors_origins == []
    assert s.verbose is False
    assert s.parallel == 8
    assert s.ctx_size == 4096
    assert s.threads == 0
    assert s.max_queue == 256
    assert s.config == ""
    assert s.models_dir.endswith("hearth/models")
    assert s.base_url == "http://127.0.0.1:1337/v1"


def test_resolve_without_args_uses_environment_only() -> None:
    s = resolve(None, environ={"HEARTH_PORT": "9000"})
    assert s.port == 9000
    assert s.host == "127.0.0.1"


def test_every_option_has_flag_env_and_toml_key() -> None:
    rows = describe()
    assert len(rows) == len(OPTIONS)
    flags = {row[0] for row in rows}
    envs = {row[1] for row in rows}
    assert {"--host", "--port", "--api-prefix", "--api-key", "--trusted-hosts", "--cors",
            "--parallel", "--max-queue"} <= flags
    assert {"HEARTH_HOST", "HEARTH_PORT", "HEARTH_API_KEY", "HEARTH_CORS"} <= envs
    by_flag = {row[0]: row for row in rows}
    assert by_flag["--port"][2] == "port"
    assert by_flag["--port"][3] == "1337"


def test_base_url_for_wildcard_and_ipv6_hosts() -> None:
    assert settings(["--host", "0.0.0.0", "--port", "8080"]).base_url == \
        "http://127.0.0.1:8080/v1"
    assert settings(["--host", "::1"]).base_url == "http://[::1]:1337/v1"
    assert settings(["--api-prefix", "/"]).base_url == "http://127.0.0.1:1337"


# ---- precedence -------------------------------------------------------------------------------


def test_precedence_host_port_parallel(toml: WriteToml) -> None:
    path = toml('host = "10.0.0.1"\nport = 2000\nparallel = 2\n')
    assert settings(["--config", path]).host == "10.0.0.1"
    s = settings(["--config", path])
    assert (s.host, s.port, s.parallel) == ("10.0.0.1", 2000, 2)
    assert s.config == path

    env = {"HEARTH_HOST": "10.0.0.2", "HEARTH_PORT": "3000", "HEARTH_PARALLEL": "3"}
    s = settings(["--config", path], env)
    assert (s.host, s.port, s.parallel) == ("10.0.0.2", 3000, 3)

    s = settings(["--config", path, "--host", "10.0.0.3", "--port", "4000", "--parallel", "5"],
                 env)
    assert (s.host, s.port, s.parallel) == ("10.0.0.3", 4000, 5)


def test_config_path_from_environment(toml: WriteToml) -> None:
    path = toml("port = 2345\n")
    s = settings([], {"HEARTH_CONFIG": path})
    assert s.port == 2345
    assert s.config == path


def test_empty_env_var_is_ignored(toml: WriteToml) -> None:
    path = toml("port = 2345\n")
    assert settings(["--config", path], {"HEARTH_PORT": ""}).port == 2345


def test_cors_precedence(toml: WriteToml) -> None:
    assert settings(["--no-cors"]).cors is False
    assert settings([], {"HEARTH_CORS": "0"}).cors is False
    assert settings([], {"HEARTH_CORS": "false"}).cors is False
    assert settings([], {"HEARTH_CORS": "Yes"}).cors is True
    off = toml("cors = false\n")
    assert settings(["--config", off]).cors is False
    # env beats the file, the flag beats both
    assert settings(["--config", off], {"HEARTH_CORS": "1"}).cors is True
    assert settings(["--config", off, "--cors"], {"HEARTH_CORS": "0"}).cors is True
    assert settings(["--no-cors"], {"HEARTH_CORS": "1"}).cors is False


def test_api_keys_from_each_source(toml: WriteToml) -> None:
    # the flag is repeatable and never split on commas (a key may contain one)
    assert settings(["--api-key", "a", "--api-key", "b,c"]).api_keys == ["a", "b,c"]
    assert settings([], {"HEARTH_API_KEY": "k1, k2,,k3"}).api_keys == ["k1", "k2", "k3"]
    path = toml('api_key = ["t1", "t2"]\n')
    assert settings(["--config", path]).api_keys == ["t1", "t2"]
    assert settings(["--config", toml('api_key = "s1,s2"\n')]).api_keys == ["s1", "s2"]
    # precedence: a list from a higher source replaces (not extends) a lower one
    assert settings(["--config", path], {"HEARTH_API_KEY": "e1"}).api_keys == ["e1"]
    assert settings(["--config", path, "--api-key", "f1"],
                    {"HEARTH_API_KEY": "e1"}).api_keys == ["f1"]


def test_trusted_hosts_comma_lists(toml: WriteToml) -> None:
    assert settings(["--trusted-hosts", "a.lan, b.lan", "--trusted-hosts", "c.lan"]
                    ).trusted_hosts == ["a.lan", "b.lan", "c.lan"]
    assert settings([], {"HEARTH_TRUSTED_HOSTS": "x.lan,y.lan"}).trusted_hosts == \
        ["x.lan", "y.lan"]
    assert settings(["--config", toml('trusted_hosts = ["t.lan"]\n')]).trusted_hosts == \
        ["t.lan"]
    assert settings(["--config", toml('cors_origins = "http://a:1, http://b:2"\n')]
                    ).cors_origins == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(("given", "expected"), [
    ("v1/", "/v1"), ("/v1", "/v1"), ("/api/v9/", "/api/v9"), ("  api ", "/api"), ("/", ""),
    ("", ""),
])
def test_api_prefix_normalised(given: str, expected: str) -> None:
    assert settings(["--api-prefix", given]).api_prefix == expected


def test_api_prefix_normalised_from_env_and_file(toml: WriteToml) -> None:
    assert settings([], {"HEARTH_API_PREFIX": "openai/"}).api_prefix == "/openai"
    assert settings(["--config", toml('api_prefix = "x/y/"\n')]).api_prefix == "/x/y"


def test_per_model_tables(toml: WriteToml) -> None:
    s = settings(["--config", toml('port = 2000\n[models.tiny]\naliases = ["t"]\n'
                                   'parallel = 2\nkeep_alive = "10m"\ntemperature = 0.5\n')])
    assert s.port == 2000
    cfg = s.model_config("tiny")
    assert (cfg.aliases, cfg.parallel, cfg.keep_alive, cfg.temperature) == (["t"], 2, 600.0, 0.5)
    assert s.model_config("other").parallel is None


@pytest.mark.parametrize(("text", "words"), [
    ('[server]\nport = 1\n', "server"),
    ('[models.tiny]\nalias = "t"\n', "alias"),
    ('[models.tiny]\nparallel = 0\n', "parallel"),
    ('[models.tiny]\nkeep_alive = "soon"\n', "keep_alive"),
    ('[models.tiny]\ncache_type_k = "q9"\n', "cache_type_k"),
    ('[models.tiny]\ncache_type_v = "q5_1"\n', "cache_type_v"),
    ('[models.tiny]\nn_gpu_layers = -2\n', "n_gpu_layers"),
    ('[models.tiny]\nn_gpu_layers = "all"\n', "n_gpu_layers"),
    ('[models.tiny]\ntemperature = 3\n', "temperature"),
])
def test_bad_tables_name_the_fault(toml: WriteToml, text: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        settings(["--config", toml(text)])


@pytest.mark.parametrize(("flag", "value", "field", "expected"), [
    ("--keep-alive", "5m", "keep_alive", 300.0),
    ("--keep-alive", "0", "keep_alive", 0.0),
    ("--keep-alive", "1.5h", "keep_alive", 5400.0),
    ("--memory-budget", "8G", "memory_budget", 8 * 1024**3),
    ("--memory-budget", "512MiB", "memory_budget", 512 * 1024**2),
    ("--max-loaded-models", "3", "max_loaded_models", 3),
])
def test_durations_and_sizes(flag: str, value: str, field: str, expected: object) -> None:
    assert getattr(settings([flag, value]), field) == expected


# ---- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "env", "names"), [
    (["--port", "70000"], {}, "--port"),
    (["--port", "-1"], {}, "--port"),
    (["--port", "http"], {}, "--port"),
    (["--parallel", "0"], {}, "--parallel"),
    (["--ctx-size", "-5"], {}, "--ctx-size"),
    (["--threads", "-1"], {}, "--threads"),
    (["--max-queue", "0"], {}, "--max-queue"),
    ([], {"HEARTH_PORT": "70000"}, "HEARTH_PORT"),
    ([], {"HEARTH_PARALLEL": "0"}, "HEARTH_PARALLEL"),
    ([], {"HEARTH_CORS": "maybe"}, "HEARTH_CORS"),
    ([], {"HEARTH_VERBOSE": "2"}, "HEARTH_VERBOSE"),
])
def test_bad_values_name_the_option(argv: list[str], env: dict[str, str], names: str) -> None:
    assert names in error_of(argv, env)


def test_bad_flag_wins_over_good_env() -> None:
    assert "--port" in error_of(["--port", "99999"], {"HEARTH_PORT": "8000"})


@pytest.mark.parametrize(("text", "key"), [
    ('port = "eighty"\n', "port"),
    ("port = 70000\n", "port"),
    ("port = true\n", "port"),
    ("port = 1.5\n", "port"),
    ("parallel = 0\n", "parallel"),
    ('cors = "no"\n', "cors"),
    ("cors = 0\n", "cors"),
    ("api_key = [1, 2]\n", "api_key"),
    ("api_key = 7\n", "api_key"),
    ('host = ["a"]\n', "host"),
    ('trusted_hosts = {a = "b"}\n', "trusted_hosts"),
])
def test_wrong_toml_types(toml: WriteToml, text: str, key: str) -> None:
    path = toml(text)
    message = error_of(["--config", path])
    assert repr(key) in message
    assert path in message


def test_unknown_toml_key(toml: WriteToml) -> None:
    message = error_of(["--config", toml('port = 1\nprot = 2\napi_keys = ["x"]\n')])
    assert "unknown" in message
    assert "prot" in message and "api_keys" in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    message = error_of(["--config", path])
    assert "cannot read config file" in message and path in message


def test_unreadable_config_file(tmp_path: Path) -> None:
    message = error_of(["--config", str(tmp_path)])  # a directory
    assert "cannot read config file" in message


def test_invalid_toml(toml: WriteToml) -> None:
    path = toml("port = = 3\n")
    message = error_of(["--config", path])
    assert "config file" in message and path in message


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_empty_api_key_is_rejected(toml: WriteToml) -> None:
    # an empty key can never be presented (bearer_token drops empty tokens), and a configured key
    # stops hearth from generating one: the server would lock everyone out.
    assert "--api-key" in error_of(["--api-key", ""])
    assert "--api-key" in error_of(["--api-key", "   "])
    # header values reach hearth latin-1 decoded: a non-ASCII key could never match
    assert "--api-key" in error_of(["--api-key", "clé"])
    assert "--api-key" in error_of(["--api-key", "a\tb"])
    assert "HEARTH_API_KEY" in error_of([], {"HEARTH_API_KEY": "ok,clé"})
    assert "'api_key'" in error_of(["--config", toml('api_key = ["ok", "clé"]\n')])


def test_api_keys_are_stripped(toml: WriteToml) -> None:
    # clients' tokens are stripped (bearer_token), so a key with padding could never match
    assert settings(["--api-key", " k1 "]).api_keys == ["k1"]
    assert settings(["--config", toml('api_key = [" t1", "", "t2 "]\n')]).api_keys == \
        ["t1", "t2"]


def test_named_keys_table(toml: WriteToml) -> None:
    s = settings(["--config", toml('[keys]\neditor = "k-editor"\nnotes = "k-notes"\n'),
                  "--api-key", "k-flag"])
    assert s.named_keys == {"editor": "k-editor", "notes": "k-notes"}
    assert s.key_ring() == [("editor", "k-editor"), ("notes", "k-notes"), ("key1", "k-flag")]


def test_unnamed_keys_do_not_take_a_configured_name(toml: WriteToml) -> None:
    s = settings(["--config", toml('[keys]\nkey1 = "a"\n'), "--api-key", "b"])
    assert s.key_ring() == [("key1", "a"), ("key2", "b")]


@pytest.mark.parametrize("text", ['[keys]\n"bad name" = "k"\n', '[keys]\nx = ""\n',
                                  '[keys]\nx = 5\n', 'keys = "k"\n'])
def test_bad_keys_table(toml: WriteToml, text: str) -> None:
    with pytest.raises(SettingsError, match="keys"):
        settings(["--config", toml(text)])


# ---- where each value came from (the web page's settings view) -------------------------------


def test_sources_record_flag_env_file_and_default(toml: WriteToml) -> None:
    path = toml('parallel = 3\nhost = "0.0.0.0"\ncors = false\n[keys]\nalice = "k-alice"\n')
    s = settings(["--config", path, "--port", "9000"],
                 {"HEARTH_HOST": "127.0.0.2", "HEARTH_MODELS_DIR": "/m"})
    assert s.sources == {"config": "flag", "port": "flag", "host": "env", "models_dir": "env",
                         "parallel": "file", "cors": "file", "named_keys": "file"}
    assert (s.port, s.host, s.parallel, s.cors) == (9000, "127.0.0.2", 3, False)
    # a default is the absence of a source (models_dir's computed fallback included)
    assert "api_prefix" not in settings().sources
    assert "models_dir" not in settings().sources


def test_sources_of_the_config_path_from_the_environment(toml: WriteToml) -> None:
    path = toml("port = 8000\n")
    assert settings([], {"HEARTH_CONFIG": path}).sources == {"config": "env", "port": "file"}


def test_no_web_is_a_flag_env_and_file_setting(toml: WriteToml) -> None:
    assert settings().web is True
    assert settings(["--no-web"]).web is False
    assert settings([], {"HEARTH_WEB": "0"}).web is False
    assert settings(["--config", toml("web = false\n")]).web is False


def test_workers_table_and_worker_listen(tmp_path: Path) -> None:
    import zmq

    public = zmq.curve_keypair()[0].decode()
    config = tmp_path / "hearth.toml"
    config.write_text(f'worker_listen = "tcp://10.0.0.1:7070"\n[workers]\ngpubox = "{public}"\n')
    s = resolve(None, {"HEARTH_CONFIG": str(config)})
    assert s.worker_listen == "tcp://10.0.0.1:7070" and s.worker_keys == {"gpubox": public}
    for bad, said in (('gpubox = "short"', "40 Z85"), (f'"a b" = "{public}"', "name"),
                      ('gpubox = "' + "~" * 40 + '"', "not Z85")):
        config.write_text(f"[workers]\n{bad}\n")
        with pytest.raises(SettingsError, match=said):
            resolve(None, {"HEARTH_CONFIG": str(config)})
    with pytest.raises(SettingsError, match="tcp://ADDRESS:PORT"):
        resolve(None, {"HEARTH_WORKER_LISTEN": "10.0.0.1:7070"})
