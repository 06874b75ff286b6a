"""Every hearth setting in one place: type, default, CLI flag, ``HEARTH_*`` env var, TOML key.

Each setting is declared once, as a field of :class:`Settings` whose Annotated type carries an
:class:`Option` (help, parser, kind) or a :class:`Table`; the flags, env var names, TOML keys,
``--help`` and :func:`describe` are derived from those declarations.

Precedence: command-line flag > environment variable > config file (``--config FILE``) > default.
The resolved :class:`Settings` is a frozen msgspec Struct, so it crosses to child processes as
msgpack like every other message.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
from hearth.tools.model_config import (
    CacheType,
    GpuLayers,
    ModelConfig,
    WorkerConfig,
    kv_flash_attn,
    parse_cache_type,
    parse_duration,
    parse_gpu_layers,
    parse_mib,
    parse_models_table,
    parse_size,
)
from hearth.tools.setting_parsers import (
    comma_list,
    curve_public_key,
    int_between,
    non_negative,
    parse_bool,
    parse_draft_policy,
    parse_log_format,
    parse_routing,
    positive,
    tcp_endpoint,
    tcp_port,
    url_prefix,
    user_path,
)

_draft_max = int_between(1, 64)
_draft_ngram = int_between(1, 16)


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hearth"


def default_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearth" / "models"


def _default_models_dir() -> str:
    return str(default_models_dir())


def check_api_key(text: str) -> str:
    # Clients' tokens arrive stripped (api.access.bearer_token), so a padded or empty key could
    # never be presented; an empty one would also stop hearth from generating a usable key.
    # Tornado decodes header values as latin-1, so a non-ASCII key could never match either.
    key = text.strip()
    if not key:
        raise ValueError("an API key may not be empty")
    if not (key.isascii() and key.isprintable()):
        raise ValueError("an API key must be printable ASCII")
    return key


_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_NAME_RULE = "letters, digits, '_', '.' or '-' (at most 64)"


def valid_key_name(name: str) -> bool:
    """A key's name ([keys] table, key file): it shows in logs and metric labels."""
    return bool(_KEY_NAME.match(name))


def _named_keys(table: Any, source: str) -> dict[str, str]:
    """The ``[keys]`` table: ``name = "key"``. Names appear in logs and metrics; keys never."""
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: [keys] must be a table of name = \"key\"")
    out: dict[str, str] = {}
    for name, key in table.items():
        if not valid_key_name(name):
            raise SettingsError(f"{source}: [keys] name {name!r}: use {KEY_NAME_RULE}")
        if not isinstance(key, str):
            raise SettingsError(f"{source}: [keys] {name}: the key must be a string")
        try:
            out[name] = check_api_key(key)
        except ValueError as exc:
            raise SettingsError(f"{source}: [keys] {name}: {exc}") from None
    return out


def _worker_keys(table: Any, source: str) -> dict[str, str]:
    """The ``[workers]`` table: ``name = "CURVE public key"`` of each remote box allowed to
    join (tools/curve_keys.py). Names appear in logs, /metrics and ``hearth status``."""
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: [workers] must be a table of name = \"public key\"")
    out: dict[str, str] = {}
    for name, key in table.items():
        if not valid_key_name(name):
            raise SettingsError(f"{source}: [workers] name {name!r}: use {KEY_NAME_RULE}")
        if not isinstance(key, str):
            raise SettingsError(f"{source}: [workers] {name}: the key must be a string")
        try:
            out[name] = curve_public_key(key, f"[workers] {name}")
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return out


class SettingsError(ValueError):
    pass


# ---- how a setting is declared ----------------------------------------------------------------
# Each Settings field carries exactly one of these in its Annotated type; everything else (the
# argparse flags, the env var and TOML key names, --help, the README rows, the unknown-key check)
# is derived from them, so a setting is written in one place. msgspec ignores this metadata.
# Give them named functions, not lambdas: the annotations are evaluated later (postponed
# annotations) in a namespace where a lambda's body cannot see this module's globals.

OptionKind = Literal["value", "flag", "list"]


@dataclass(frozen=True)
class Option:
    """A setting with a flag, a ``HEARTH_*`` env var and a TOML key, all named after the field
    (or ``alias``). ``parse`` turns a string (flag, env var) into the typed value; for a "list"
    it checks one item. A "flag" is ``--x/--no-x``; a "list" is a repeatable flag, a comma list
    in the environment, an array or a comma string in TOML."""

    help: str
    parse: Callable[[str], Any] = str
    kind: OptionKind = "value"
    alias: str = ""  # the surface name where it differs from the field's (api_key -> api_keys)
    split_flags: bool = True  # split a "list" flag's values on commas (not API keys: a key may
    # hold a comma)
    fallback: Callable[[], Any] | None = None  # computed by resolve() when no source sets it;
    # not the struct default, so Settings() itself never reads the environment
    field: str = ""  # the Settings field it sets (filled in from the struct, never written)

    @property
    def name(self) -> str:
        return self.alias or self.field

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "HEARTH_" + self.name.upper()

    @property
    def toml_key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Table:
    """A setting that is a TOML table of the config file only (no flag, no env var).
    ``load(value, source)`` checks and converts it; it raises ValueError naming the fault."""

    load: Callable[[Any, str], Any]
    alias: str = ""
    field: str = ""  # filled in from the struct

    @property
    def toml_key(self) -> str:
        return self.alias or self.field


@dataclass(frozen=True)
class ConfigPath:
    """The config file's own path: ``--config FILE`` or ``HEARTH_CONFIG`` (never a TOML key)."""

    help: str
    flag: str = "--config"
    env: str = "HEARTH_CONFIG"
    field: str = ""  # filled in from the struct


@dataclass(frozen=True)
class Sources:
    """Not a setting: filled in by :func:`resolve` with where each setting's value came from
    (:data:`SettingSource`, by field name; a field no source set is absent: its default). The
    web page's settings view shows it (api/handlers/web.py)."""

    field: str = ""  # filled in from the struct


# "generated": the API key `hearth serve` created and saved because none was configured.
SettingSource = Literal["flag", "env", "file", "generated"]

Declaration = Option | Table | ConfigPath | Sources


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of hearth. Field order is the order of ``--help`` and :func:`describe`."""

    host: Annotated[str, Option("address to bind (0.0.0.0 serves the LAN)")] = "127.0.0.1"
    port: Annotated[int, Option("TCP port", tcp_port)] = 1337
    api_prefix: Annotated[str, Option("path prefix of the OpenAI API", url_prefix)] = "/v1"
    api_keys: Annotated[list[str], Option(
        "an accepted API key (repeatable; env/TOML: comma list / array). If none is set, one is "
        "generated and saved on first start", check_api_key, "list", alias="api_key",
        split_flags=False)] = []
    keys_file: Annotated[str, Option(  # read by tools/key_file.py
        "file of named API keys, one 'name = key' per line; re-read when it changes (add or "
        "revoke keys without a restart)", user_path)] = ""
    trusted_hosts: Annotated[list[str], Option(
        "extra Host header values to accept (comma list)", str.strip, "list")] = []
    cors: Annotated[bool, Option(
        "answer CORS preflights from allowed origins", parse_bool, "flag")] = True
    cors_origins: Annotated[list[str], Option(
        "extra allowed CORS origins (comma list)", str.strip, "list")] = []
    verbose: Annotated[bool, Option(
        "log more: request and response bodies (API keys redacted), /health polls, llama.cpp's "
        "own log", parse_bool, "flag")] = False
    log_format: Annotated[str, Option(  # "text" | "json" (tools/logs.py)
        "log lines as text, or json (one object per line)", parse_log_format)] = "text"
    tls_cert: Annotated[str, Option(  # checked by tools/tls.py
        "PEM certificate (chain) to serve HTTPS with; needs --tls-key", user_path)] = ""
    tls_key: Annotated[str, Option("PEM private key of --tls-cert", user_path)] = ""
    models_dir: Annotated[str, Option(
        "directory of *.gguf models", fallback=_default_models_dir)] = ""
    model: Annotated[str, Option("default model id (loaded at start-up)")] = \
        "smollm2-135m-instruct"
    parallel: Annotated[int, Option(
        "slots per worker (concurrent sequences per model)", positive)] = 8
    ctx_size: Annotated[int, Option("context size per slot, in tokens", positive)] = 4096
    threads: Annotated[int, Option("CPU threads per worker (0 = all cores)", non_negative)] = 0
    n_gpu_layers: Annotated[GpuLayers, Option(
        "layers of each model offloaded to the GPU: auto (every layer that fits the device's "
        "free memory), 0 (CPU only), -1 (all) or a count; a CPU build of llama.cpp ignores it",
        parse_gpu_layers)] = "auto"
    cache_type_k: Annotated[CacheType, Option(
        "KV cache type of the keys: f16, q8_0 (0.53x the memory of f16) or q4_0 (0.28x)",
        parse_cache_type)] = "f16"
    cache_type_v: Annotated[CacheType, Option(
        "KV cache type of the values: f16, q8_0 or q4_0; a quantised one needs flash "
        "attention, which hearth then turns on", parse_cache_type)] = "f16"
    max_queue: Annotated[int, Option(
        "requests that may wait for a slot before 503", positive)] = 256
    metrics_public: Annotated[bool, Option(
        "serve GET /metrics without an API key", parse_bool, "flag")] = False
    shutdown_grace: Annotated[float, Option(  # seconds
        "on Ctrl-C/SIGTERM, how long requests in flight may take to finish (new ones: 503)",
        parse_duration)] = 10.0
    max_body: Annotated[int, Option(
        "largest request body accepted (e.g. 8M); larger ones get 413", parse_size)] = \
        8 * 1024 * 1024
    # nginx's client_header_timeout and client_body_timeout default to 60 s each (the body one
    # between two reads, not for the whole body); an SSE answer is a response, so neither applies
    header_timeout: Annotated[float, Option(  # seconds, also a kept-alive connection's idle time
        "close a connection whose request headers take longer than this (0 = one hour)",
        parse_duration)] = 60.0
    body_timeout: Annotated[float, Option(  # seconds between two reads of one request body
        "close a connection whose request body sends nothing for this long (0 = never)",
        parse_duration)] = 60.0
    max_loaded_models: Annotated[int, Option(
        "models loaded at once; the least recently used idle one is unloaded to load another",
        positive)] = 2
    memory_budget: Annotated[int, Option(  # bytes; see effective_memory_budget
        "bytes the loaded models may take (GGUF + KV cache estimate), e.g. 8G; "
        "0 = three quarters of RAM", parse_size)] = 0
    keep_alive: Annotated[float, Option(  # seconds a model may stay loaded unused; 0 = forever
        "unload a model unused this long (300, 30s, 5m, 1h; 0 = never)", parse_duration)] = 300.0
    cache_ram: Annotated[int, Option(  # bytes; engine/ram_cache.py
        "host-RAM prompt cache per worker, in MiB (or 2G...): conversations pushed out of a "
        "slot are kept there and restored on their next turn; counted in --memory-budget; "
        "0 = off", parse_mib)] = 512 * 1024 * 1024
    batch_tokens: Annotated[int, Option(
        "tokens per decode step: one per generating slot, prompt chunks in the rest",
        positive)] = 512
    speculative: Annotated[bool, Option(
        "n-gram speculative decoding: draft tokens found earlier in the "
        "prompt or output, verified in the batched step (see README)", parse_bool, "flag")] = \
        False
    draft_max: Annotated[int, Option(
        "speculative decoding: most draft tokens per slot and step", _draft_max)] = 16
    draft_ngram: Annotated[int, Option(
        "speculative decoding: tokens matched to find a draft (n-gram size)", _draft_ngram)] = 3
    draft_policy: Annotated[str, Option(  # "cost" | "always" (scheduler/draft_budget.py)
        "speculative decoding: cost drafts only the tokens whose chance of acceptance pays for "
        "their batch positions at the measured step cost and the number of generating slots; "
        "always drafts the adaptive length whatever it costs", parse_draft_policy)] = "cost"
    routing: Annotated[str, Option(  # "prefix" | "even" (scheduler/routing.py)
        "how a model's workers (replicas) share requests: prefix sends a request to the worker "
        "whose slots hold the longest start of its prompt, then the least loaded; even: the "
        "least loaded only", parse_routing)] = "prefix"
    max_per_key: Annotated[int, Option(
        "requests one API key may have running at once (0 = no cap)", non_negative)] = 0
    # The Responses API's stored responses (api/responses_store.py): in the api's memory, lost
    # on restart; the least recently used goes first when either cap is reached
    responses_store_max: Annotated[int, Option(
        "stored responses (/v1/responses with store: true) kept in memory, all keys together; "
        "0 = store none", non_negative)] = 1000
    responses_store_bytes: Annotated[int, Option(
        "memory the stored responses may take, all keys together (e.g. 64M)", parse_size)] = \
        64 * 1024 * 1024
    max_n: Annotated[int, Option(
        "most choices (n) one chat or completions request may ask for; each takes a slot",
        positive)] = 8
    # remote workers (tools/cli/worker.py, scheduler/remote_link.py)
    worker_listen: Annotated[str, Option(
        "tcp://ADDR:PORT where remote 'hearth worker --join' boxes connect (CURVE-encrypted; "
        "only listed keys get in); empty: no remote workers", tcp_endpoint)] = ""
    worker_keys_file: Annotated[str, Option(
        "file of remote workers' public keys, one 'name = key' per line (as [workers]); "
        "re-read when it changes", user_path)] = ""
    # [keys] name = "key" (names show in logs and metrics), then [models."<id>"] tables
    worker_keys: Annotated[dict[str, str], Table(_worker_keys, alias="workers")] = {}
    named_keys: Annotated[dict[str, str], Table(_named_keys, alias="keys")] = {}
    models: Annotated[dict[str, ModelConfig], Table(parse_models_table)] = {}
    web: Annotated[bool, Option(
        "serve the web page at / (chat playground, live view, settings, API reference)",
        parse_bool, "flag")] = True
    config: Annotated[str, ConfigPath("TOML config file")] = ""
    sources: Annotated[dict[str, SettingSource], Sources()] = {}

    def model_config(self, model_id: str) -> ModelConfig:
        return self.models.get(model_id) or ModelConfig()

    def worker_config(self, model_id: str, path: str) -> WorkerConfig:
        """What a worker of ``model_id`` (the GGUF at ``path``) runs with: the model's table
        where it sets a value, else these settings. This is the one place the two meet (the
        model table's fields are optional overrides, WorkerConfig's the resolved values); the
        scheduler sends the result in WorkerSpec and the worker hands it to its runner as is."""
        cfg = self.model_config(model_id)
        threads = cfg.threads if cfg.threads is not None else self.threads
        type_v = cfg.cache_type_v or self.cache_type_v
        return WorkerConfig(
            path=path, n_slots=cfg.parallel or self.parallel,
            n_ctx_slot=cfg.ctx_size or self.ctx_size,
            n_threads=threads if threads > 0 else self.effective_threads(),
            n_batch=self.batch_tokens, chat_template=cfg.chat_template,
            n_gpu_layers=(cfg.n_gpu_layers if cfg.n_gpu_layers is not None
                          else self.n_gpu_layers),
            # resolve() has checked that no model's table turns flash attention off under a
            # quantised V cache (check_kv_cache), so this does not raise
            flash_attn=kv_flash_attn(type_v, cfg.flash_attn, f"[models.\"{model_id}\"]"),
            cache_type_k=cfg.cache_type_k or self.cache_type_k, cache_type_v=type_v,
            sampling_defaults=cfg.sampling_defaults(),
            verbose=self.verbose,
            speculative=self.speculative if cfg.speculative is None else cfg.speculative,
            draft_max=cfg.draft_max or self.draft_max,
            draft_ngram=cfg.draft_ngram or self.draft_ngram,
            draft_policy="always" if (cfg.draft_policy or self.draft_policy) == "always"
            else "cost",
            cache_ram=cfg.cache_ram if cfg.cache_ram is not None else self.cache_ram)

    def check_kv_cache(self, source: str = "") -> None:
        """Raise SettingsError when a model's table turns flash attention off under a quantised
        V cache (its own cache_type_v or --cache-type-v), which llama.cpp cannot run."""
        for model_id, cfg in self.models.items():
            where = f"{source + ': ' if source else ''}[models.\"{model_id}\"]"
            try:
                kv_flash_attn(cfg.cache_type_v or self.cache_type_v, cfg.flash_attn, where)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None

    def key_ring(self) -> list[tuple[str, str]]:
        """(name, key) for every accepted key: the [keys] table's names, then ``key1``,
        ``key2``… for keys given by --api-key / HEARTH_API_KEY / api_key."""
        ring = list(self.named_keys.items())
        taken = set(self.named_keys)
        n = 0
        for key in self.api_keys:
            n += 1
            while f"key{n}" in taken:
                n += 1
            ring.append((f"key{n}", key))
        return ring

    def aliases(self) -> dict[str, str]:
        """alias -> model id, from the ``aliases`` of every [models."<id>"] table."""
        return {alias: model_id for model_id, cfg in self.models.items()
                for alias in cfg.aliases}

    def effective_memory_budget(self) -> int:
        if self.memory_budget > 0:
            return self.memory_budget
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 * 1024**3
        return total * 3 // 4

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}{self.api_prefix}"

    def effective_threads(self) -> int:
        return self.threads if self.threads > 0 else max(1, os.cpu_count() or 1)


def declarations(struct: type[msgspec.Struct] = Settings) -> tuple[Declaration, ...]:
    """Every field's declaration, in field order, with ``field`` filled in. Raises TypeError if
    a field has none or several (for Settings, checked once when this module loads)."""
    out: list[Declaration] = []
    for info in msgspec.structs.fields(struct):
        found = [m for m in _metadata(info.type)
                 if isinstance(m, (Option, Table, ConfigPath, Sources))]
        if len(found) != 1:
            raise TypeError(f"{struct.__name__}.{info.name} needs exactly one Option, Table, "
                            f"ConfigPath or Sources in its Annotated type, has {len(found)}")
        out.append(replace(found[0], field=info.name))
    return tuple(out)


def _metadata(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation)[1:] if get_origin(annotation) is Annotated else ()


_DECLARED = declarations()
OPTIONS: tuple[Option, ...] = tuple(d for d in _DECLARED if isinstance(d, Option))
TABLES: tuple[Table, ...] = tuple(d for d in _DECLARED if isinstance(d, Table))
CONFIG: ConfigPath = next(d for d in _DECLARED if isinstance(d, ConfigPath))
SOURCES: Sources = next(d for d in _DECLARED if isinstance(d, Sources))


# ---- command line -----------------------------------------------------------------------------


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(CONFIG.flag, metavar="FILE", default=None,
                        help=f"{CONFIG.help} (env {CONFIG.env})")


def add_option_argument(parser: argparse.ArgumentParser, opt: Option,
                        help_text: str | None = None) -> None:
    """``opt``'s flag, its help ending with its env var. Every flag has default None (so
    :func:`resolve` can tell "not given" and fall through to env, file, default) and dest
    ``opt.name``. ``help_text`` rewords the help where a command's context needs it."""
    text = f"{help_text or opt.help} (env {opt.env})"
    if opt.kind == "flag":
        parser.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction,
                            default=None, help=text)
    elif opt.kind == "list":
        parser.add_argument(opt.flag, dest=opt.name, action="append", default=None,
                            metavar="VALUE", help=text)
    else:
        parser.add_argument(opt.flag, dest=opt.name, default=None, metavar="VALUE", help=text)


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config`` and every option's flag: ``hearth serve --help`` is generated here."""
    add_config_argument(parser)
    for opt in OPTIONS:
        add_option_argument(parser, opt)
    return parser


# ---- reading each source ----------------------------------------------------------------------


def _from_text(opt: Option, text: str) -> Any:
    try:
        if opt.kind == "list":
            return [opt.parse(item) for item in comma_list(text)]
        return opt.parse(text)
    except ValueError as exc:
        raise SettingsError(f"{opt.env}: {exc}") from None


def _from_toml(opt: Option, value: Any, source: str) -> Any:
    where = f"{source}: key {opt.toml_key!r}"
    if opt.kind == "list":
        if isinstance(value, str):
            items = comma_list(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v for v in value if v.strip()]
        else:
            raise SettingsError(f"{where} must be a string or an array of strings")
        try:
            return [opt.parse(item) for item in items]
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}") from None
    if opt.kind == "flag":
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where} must be true or false")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SettingsError(f"{where} has the wrong type")
    try:
        return opt.parse(str(value))
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _from_flag(opt: Option, value: Any) -> Any:
    if opt.kind == "flag":
        return bool(value)
    try:
        if opt.kind == "list":
            out: list[Any] = []
            for item in value:
                parts = comma_list(item) if opt.split_flags else [item]
                out.extend(opt.parse(part) for part in parts)
            return out
        return opt.parse(value)
    except ValueError as exc:
        raise SettingsError(f"{opt.flag}: {exc}") from None


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    known = {opt.toml_key for opt in OPTIONS} | {table.toml_key for table in TABLES}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise SettingsError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return values


def resolve(args: argparse.Namespace | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment, config file and defaults into one Settings."""
    env = os.environ if environ is None else environ
    flags = vars(args) if args is not None else {}
    config_path = flags.get(CONFIG.field) or env.get(CONFIG.env) or ""
    file_values = _read_config_file(config_path) if config_path else {}

    values: dict[str, Any] = {CONFIG.field: config_path}
    sources: dict[str, SettingSource] = {}
    if flags.get(CONFIG.field):
        sources[CONFIG.field] = "flag"
    elif config_path:
        sources[CONFIG.field] = "env"
    for opt in OPTIONS:
        if flags.get(opt.name) is not None:
            values[opt.field] = _from_flag(opt, flags[opt.name])
            sources[opt.field] = "flag"
        elif env.get(opt.env):
            values[opt.field] = _from_text(opt, env[opt.env])
            sources[opt.field] = "env"
        elif opt.toml_key in file_values:
            values[opt.field] = _from_toml(opt, file_values[opt.toml_key], config_path)
            sources[opt.field] = "file"
        if opt.fallback is not None and not values.get(opt.field):
            values[opt.field] = opt.fallback()
            sources.pop(opt.field, None)  # an empty value given is the default's fallback
    for table in TABLES:
        if table.toml_key in file_values:
            try:
                values[table.field] = table.load(file_values[table.toml_key], config_path)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
            sources[table.field] = "file"
    out = Settings(**values, sources=sources)
    out.check_kv_cache(config_path)
    return out


def describe() -> Sequence[tuple[str, str, str, str, str]]:
    """(flag, env, toml key, default, help) for every option — the README table is built from it."""
    defaults = {info.name: info.default if info.default_factory is msgspec.NODEFAULT
                else info.default_factory() for info in msgspec.structs.fields(Settings)}
    return [(opt.flag, opt.env, opt.toml_key, repr(defaults[opt.field]), opt.help)
            for opt in OPTIONS]
