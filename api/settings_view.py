"""What the web page's settings view shows: each effective setting, where its value came from
(flag, env, config file, default) and the flag that changes it. Read-only, and never a key:
API keys are listed by *name* only. Pure functions over ``Settings``: unit-tested without a
server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hearth.tools.model_config import ModelConfig
from hearth.tools.settings import CONFIG, OPTIONS, Option, Settings

# The "Local API Server" panel first (the list), then every other setting in the order
# they are declared.
FIRST = ("host", "port", "api_prefix", "trusted_hosts", "cors", "cors_origins", "verbose",
         "tls_cert", "models_dir", "parallel", "max_queue", "api_keys", "keys_file", "web")
# Settings whose value is a secret: shown as names (api_keys) or never.
SECRET = frozenset({"api_keys"})

SOURCE_WORDS = {"flag": "flag", "env": "environment", "file": "config file",
                "generated": "generated at first start"}


def _shown(opt: Option, value: Any) -> Any:
    if opt.kind == "flag":
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    if value == "":
        return "none"
    return value


def _row(name: str, value: Any, source: str, flag: str, env: str,
         toml_key: str | None) -> dict[str, Any]:
    return {"name": name, "value": value, "source": source, "flag": flag, "env": env,
            "toml_key": toml_key}


def settings_rows(s: Settings) -> list[dict[str, Any]]:
    """One row per setting: ``name`` (its TOML key), ``value`` (as text; API keys: their names
    only), ``source`` ("flag", "environment", "config file", "generated at first start" or
    "default"), ``flag``, ``env`` and ``toml_key``."""
    options = {opt.field: opt for opt in OPTIONS}
    order = [f for f in FIRST if f in options] + [f for f in options if f not in FIRST]
    rows = []
    for field in order:
        opt = options[field]
        source = SOURCE_WORDS.get(s.sources.get(field, ""), "default")
        if field == "api_keys":
            names = [name for name, _ in s.key_ring() if name not in s.named_keys]
            rows.append(_row("api_key (names)", ", ".join(names) if names else "none", source,
                             opt.flag, opt.env, opt.toml_key))
            continue
        if field == "tls_cert":
            rows.append(_row("tls", "on" if s.tls_cert else "off", source, opt.flag, opt.env,
                             None))
        rows.append(_row(opt.toml_key, _shown(opt, getattr(s, field)), source, opt.flag,
                         opt.env, opt.toml_key))
    if s.named_keys:
        rows.append(_row("keys (names)", ", ".join(s.named_keys), "config file", "", "", "keys"))
    config_source = SOURCE_WORDS.get(s.sources.get(CONFIG.field, ""), "default")
    rows.append(_row("config", s.config or "none", config_source, CONFIG.flag, CONFIG.env, None))
    return rows


# A [models."<id>"] table's fields that override a global setting of the same name.
MODEL_OVERRIDES = ("parallel", "ctx_size", "threads", "keep_alive", "n_gpu_layers", "cache_type_k",
                   "cache_type_v")
# Shown for every configured model even when its table leaves them out (what applies then).
MODEL_ALWAYS = (*MODEL_OVERRIDES, "replicas", "chat_template")
TEMPLATE_SHOWN = 60  # characters of a chat template override shown (its first line)


def _template(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) > TEMPLATE_SHOWN:
        first = first[:TEMPLATE_SHOWN]
    return first if first == text else f"{first} … ({len(text)} characters)"


def model_rows(s: Settings) -> list[dict[str, Any]]:
    """One row per setting of each ``[models."<id>"]`` table of the config (``Settings.models``,
    what ``Settings.model_config`` returns), models in id order: ``model``, ``name`` (the
    table's key), ``value`` (as text; a chat template: its first line and its length),
    ``source`` ("config file", else what applies: "global setting (<its source>)" or
    "default"), ``flag`` (the global flag it overrides, or "") and ``toml_key``. Every key the
    table sets is a row; the slots, context size, threads, keep-alive, replicas and chat
    template are rows even when it does not."""
    options = {opt.field: opt for opt in OPTIONS}
    defaults = ModelConfig()
    rows = []
    for model_id in sorted(s.models):
        cfg = s.models[model_id]
        for field in cfg.__struct_fields__:
            value = getattr(cfg, field)
            is_set = value != getattr(defaults, field)
            if not is_set and field not in MODEL_ALWAYS:
                continue
            flag = options[field].flag if field in MODEL_OVERRIDES else ""
            if is_set:
                source = "config file"
            elif field in MODEL_OVERRIDES:
                source = "global setting (" + SOURCE_WORDS.get(s.sources.get(field, ""),
                                                               "default") + ")"
                value = getattr(s, field)
            else:
                source = "default"
            if field == "chat_template":
                value = _template(value) if value is not None else "the GGUF's own"
            elif isinstance(value, bool):
                value = "on" if value else "off"
            elif isinstance(value, list):
                value = ", ".join(str(v) for v in value) if value else "none"
            rows.append({"model": model_id, "name": field, "value": value, "source": source,
                         "flag": flag, "toml_key": f'models."{model_id}".{field}'})
    return rows


def key_name_sources(s: Settings, key_names: Iterable[str]) -> dict[str, str]:
    """Where each configured key *name* came from: the config file's [keys] table, the API key
    setting (its source), or the key file."""
    from_table = set(s.named_keys)
    fixed = {name for name, _ in s.key_ring()}
    api_key_source = SOURCE_WORDS.get(s.sources.get("api_keys", ""), "default")
    out = {}
    for name in key_names:
        if name in from_table:
            out[name] = "config file [keys]"
        elif name in fixed:
            out[name] = api_key_source
        else:
            out[name] = f"keys file ({s.keys_file})" if s.keys_file else "keys file"
    return out


def settings_view(s: Settings, key_names: Iterable[str]) -> dict[str, Any]:
    """The body of ``GET /web/api/settings``."""
    names = list(key_names)
    return {"settings": settings_rows(s), "models": model_rows(s),
            "key_names": key_name_sources(s, names), "read_only": True}
