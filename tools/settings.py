"""Every hearth setting in one place: type, default, CLI flag, ``HEARTH_*`` env var, TOML key.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hearth.tools.model_config import ModelConfig, parse_duration, parse_models_table, parse_size


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hearth"


def default_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearth" / "models"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 1337
    api_prefix: str = "/v1"
    api_keys: list[str] = []
    named_keys: dict[str, str] = {}  # [keys] table of the config: name -> key
    keys_file: str = ""  # file of "name = key" lines, re-read when it changes (tools/key_file.py)
    trusted_hosts: list[str] = []
    cors: bool = True
    cors_origins: list[str] = []
    verbose: bool = False
    log_format: str = "text"  # "text" | "json" (tools/logs.py)
    tls_cert: str = ""  # PEM certificate (chain): serve HTTPS (tools/tls.py)
    tls_key: str = ""  # PEM private key of tls_cert
    models_dir: str = ""
    model: str = "gemma-3-270m-q4_k_m"
    parallel: int = 8
    ctx_size: int = 4096
    threads: int = 0
    max_queue: int = 256
    batch_tokens: int = 512
    metrics_public: bool = False
    max_loaded_models: int = 2
    max_body: int = 8 * 1024 * 1024
    shutdown_grace: float = 10.0  # seconds requests in flight may take to finish on SIGTERM
    memory_budget: int = 0  # bytes; 0 = three quarters of the machine's RAM
    keep_alive: float = 300.0  # seconds a model may stay loaded unused; 0 = forever
    models: dict[str, ModelConfig] = {}  # [models."<id>"] tables of the config file

    def model_config(self, model_id: str) -> ModelConfig:
        return self.models.get(model_id) or ModelConfig()

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
    max_per_key: int = 0
    config: str = ""

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


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _prefix(text: str) -> str:
    text = "/" + text.strip().strip("/")
    return "" if text == "/" else text


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


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"must be text or json, got {text!r}")
    return value


def _path(text: str) -> str:
    return os.path.expanduser(text.strip())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"not a TCP port: {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting's surface: ``parse`` turns a string (flag, env var) into the typed value."""

    name: str
    parse: Callable[[str], Any]
    help: str
    kind: str = "value"  # "value" | "flag" (--x/--no-x) | "list" (repeatable / comma list)
    # For a "list", ``parse`` checks one item.

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "HEARTH_" + self.name.upper()

    @property
    def toml_key(self) -> str:
        return self.name


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to bind (0.0.0.0 serves the LAN)"),
    Option("port", _port, "TCP port"),
    Option("api_prefix", _prefix, "path prefix of the OpenAI API"),
    Option("api_key", check_api_key, "an accepted API key (repeatable; env/TOML: comma list / "
           "array). If none is set, one is generated and saved on first start", kind="list"),
    Option("keys_file", _path, "file of named API keys, one 'name = key' per line; re-read "
           "when it changes (add or revoke keys without a restart)"),
    Option("trusted_hosts", str.strip, "extra Host header values to accept (comma list)",
           kind="list"),
    Option("cors", _bool, "answer CORS preflights from allowed origins", kind="flag"),
    Option("cors_origins", str.strip, "extra allowed CORS origins (comma list)", kind="list"),
    Option("verbose", _bool, "log more: request and response bodies (API keys redacted), "
           "/health polls, llama.cpp's own log", kind="flag"),
    Option("log_format", _log_format, "log lines as text, or json (one object per line)"),
    Option("tls_cert", _path, "PEM certificate (chain) to serve HTTPS with; needs --tls-key"),
    Option("tls_key", _path, "PEM private key of --tls-cert"),
    Option("models_dir", str, "directory of *.gguf models"),
    Option("model", str, "default model id (loaded at start-up)"),
    Option("parallel", _positive, "slots per worker (concurrent sequences per model)"),
    Option("ctx_size", _positive, "context size per slot, in tokens"),
    Option("threads", _non_negative, "CPU threads per worker (0 = all cores)"),
    Option("max_queue", _positive, "requests that may wait for a slot before 503"),
    Option("metrics_public", _bool, "serve GET /metrics without an API key", kind="flag"),
    Option("shutdown_grace", lambda t: parse_duration(t),
           "on Ctrl-C/SIGTERM, how long requests in flight may take to finish (new ones: 503)"),
    Option("max_body", lambda t: parse_size(t),
           "largest request body accepted (e.g. 8M); larger ones get 413"),
    Option("max_loaded_models", _positive, "models loaded at once; the least recently used "
           "idle one is unloaded to load another"),
    Option("memory_budget", lambda t: parse_size(t),
           "bytes the loaded models may take (GGUF + KV cache estimate), e.g. 8G; "
           "0 = three quarters of RAM"),
    Option("keep_alive", lambda t: parse_duration(t),
           "unload a model unused this long (300, 30s, 5m, 1h; 0 = never)"),
    Option("batch_tokens", _positive,
           "tokens per decode step: one per generating slot, prompt chunks in the rest"),
    Option("max_per_key", _non_negative,
           "requests one API key may have running at once (0 = no cap)"),
)

_FIELD_OF = {"api_key": "api_keys"}  # option name -> Settings field where they differ
# TOML tables besides the options: [models."<id>"] (tools/model_config.py), [keys] name = key
TABLES = {"models", "keys"}


class SettingsError(ValueError):
    pass


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML config file (env HEARTH_CONFIG)")
    for opt in OPTIONS:
        dest = opt.name
        if opt.kind == "flag":
            parser.add_argument(opt.flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=None, help=f"{opt.help} (env {opt.env})")
        elif opt.kind == "list":
            parser.add_argument(opt.flag, dest=dest, action="append", default=None,
                                metavar="VALUE", help=f"{opt.help} (env {opt.env})")
        else:
            parser.add_argument(opt.flag, dest=dest, default=None, metavar="VALUE",
                                help=f"{opt.help} (env {opt.env})")
    return parser


def _from_text(opt: Option, text: str) -> Any:
    try:
        if opt.kind == "list":
            return [opt.parse(item) for item in _comma_list(text)]
        return opt.parse(text)
    except ValueError as exc:
        raise SettingsError(f"{opt.env}: {exc}") from None


def _from_toml(opt: Option, value: Any, source: str) -> Any:
    where = f"{source}: key {opt.toml_key!r}"
    if opt.kind == "list":
        if isinstance(value, str):
            items = _comma_list(value)
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
            out: list[str] = []
            for item in value:
                # API keys are never split on commas (a key may hold one)
                parts = [item] if opt.name == "api_key" else _comma_list(item)
                out.extend(opt.parse(part) for part in parts)
            return out
        return opt.parse(value)
    except ValueError as exc:
        raise SettingsError(f"{opt.flag}: {exc}") from None


def resolve(args: argparse.Namespace | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment, config file and defaults into one Settings."""
    env = os.environ if environ is None else environ
    flags = vars(args) if args is not None else {}
    config_path = flags.get("config") or env.get("HEARTH_CONFIG") or ""
    file_values: dict[str, Any] = {}
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_path}: {exc}") from None
        known = {opt.toml_key for opt in OPTIONS} | TABLES
        unknown = sorted(k for k in file_values if k not in known)
        if unknown:
            raise SettingsError(f"config file {config_path}: unknown keys {', '.join(unknown)}")

    values: dict[str, Any] = {"config": config_path}
    for opt in OPTIONS:
        field = _FIELD_OF.get(opt.name, opt.name)
        if flags.get(opt.name) is not None:
            values[field] = _from_flag(opt, flags[opt.name])
        elif env.get(opt.env):
            values[field] = _from_text(opt, env[opt.env])
        elif opt.toml_key in file_values:
            values[field] = _from_toml(opt, file_values[opt.toml_key], config_path)
    if not values.get("models_dir"):
        values["models_dir"] = str(default_models_dir())
    if "keys" in file_values:
        values["named_keys"] = _named_keys(file_values["keys"], config_path)
    if "models" in file_values:
        try:
            values["models"] = parse_models_table(file_values["models"], config_path)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return Settings(**values)


def describe() -> Sequence[tuple[str, str, str, str, str]]:
    """(flag, env, toml key, default, help) for every option — the README table is built from it."""
    defaults = Settings()
    rows = []
    for opt in OPTIONS:
        default = getattr(defaults, _FIELD_OF.get(opt.name, opt.name))
        rows.append((opt.flag, opt.env, opt.toml_key, repr(default), opt.help))
    return rows
