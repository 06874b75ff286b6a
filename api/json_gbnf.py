"""JSON Schema -> llama.cpp GBNF rules, with llama-cpp-python's converter, failing closed.

The converter is ``llama_cpp.llama_grammar.SchemaConverter`` (a pure-Python port of llama.cpp's
``json_schema_to_grammar``). Importing it as ``llama_cpp.llama_grammar`` would run
``llama_cpp/__init__.py``, which loads the native library into the api process (which knows
nothing of llama.cpp); the module imports nothing of its package, so it is loaded from its file
on its own instead.

The converter silently drops keywords it cannot express (``minimum``, ``not``, ``uniqueItems``…),
which would let through arguments the schema forbids. :func:`check_schema` refuses those, and a
schema that is not valid JSON Schema (checked with ``jsonschema``'s meta-schema validation), so
that a schema is either enforced or a 400 — never silently weakened.

Supported: ``type`` (one or a list), ``properties``, ``required``, ``additionalProperties``
(false, true or a schema), ``enum``, ``const``, ``items``/``prefixItems`` with
``minItems``/``maxItems``, ``anyOf``/``oneOf``, ``allOf`` of object schemas, ``$ref`` into
``$defs``/``definitions``, string ``pattern``, ``minLength``/``maxLength`` and the formats
``date``, ``time``, ``date-time``, ``uuid``; annotations (``title``, ``description``,
``default``, ``examples``…) and other ``format`` values (annotations in JSON Schema) are ignored.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema

#: Keywords that constrain a value but that the converter does not enforce.
UNSUPPORTED = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "not", "if",
    "then", "else", "dependentRequired", "dependentSchemas", "dependencies", "patternProperties",
    "propertyNames", "uniqueItems", "contains", "minContains", "maxContains", "minProperties",
    "maxProperties", "unevaluatedProperties", "unevaluatedItems", "additionalItems",
    "$dynamicRef", "$recursiveRef",
})
# Keywords whose values are schemas (or lists / maps of schemas), walked by check_schema.
_SUBSCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


class SchemaError(ValueError):
    """A schema that is invalid, or that hearth cannot enforce (the message says which part).
    ``param``: the request field holding the schema, where the caller knows it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@functools.cache
def _converter_module() -> ModuleType:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama-cpp-python is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "llama_grammar.py"
    mod_spec = importlib.util.spec_from_file_location("hearth_llama_grammar", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def _walk(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        return
    for key in schema:
        if key in UNSUPPORTED:
            raise SchemaError(f"{where}: the keyword '{key}' is not supported (hearth cannot "
                              "enforce it with a grammar)")
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#/"):
        raise SchemaError(f"{where}: only local references ('#/$defs/...') are supported, "
                          f"not '{ref}'")
    if "allOf" in schema:
        for i, part in enumerate(schema["allOf"]):
            if not isinstance(part, dict) or not ({"properties", "$ref", "anyOf"} & part.keys()):
                raise SchemaError(f"{where}.allOf[{i}]: only object schemas with 'properties' "
                                  "are supported in allOf")
    for key in _SUBSCHEMA:
        if key in schema and isinstance(schema[key], (dict, bool)):
            _walk(schema[key], f"{where}.{key}")
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            _walk(sub, f"{where}.{key}[{i}]")
    for key in _SUBSCHEMA_MAPS:
        subs = schema.get(key)
        if isinstance(subs, dict):
            for name, sub in subs.items():
                _walk(sub, f"{where}.{key}.{name}")
    if isinstance(schema.get("items"), list):
        for i, sub in enumerate(schema["items"]):
            _walk(sub, f"{where}.items[{i}]")


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise SchemaError unless ``schema`` is a valid JSON Schema that hearth can enforce.
    ``where`` names it in the message."""
    if isinstance(schema, bool):
        _walk(schema, where)
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "".join(f"[{p!r}]" for p in exc.path)
        raise SchemaError(f"{where}{path} is not a valid JSON Schema: {exc.message}") from None
    _walk(schema, where)


def _prefix_defs(schema: Any, prefix: str) -> Any:
    """``schema`` with its top-level ``$defs``/``definitions`` renamed ``{prefix}-{name}`` (and
    the ``#/$defs/name`` references to them): the converter names a definition's rule after the
    definition alone, so two schemas in one grammar must not share definition names."""
    if not isinstance(schema, dict):
        return schema

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: rewrite(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str):
            for base in ("#/$defs/", "#/definitions/"):
                if ref.startswith(base) and "/" not in ref[len(base):]:
                    out["$ref"] = f"{base}{prefix}-{ref[len(base):]}"
        return out

    out = rewrite(schema)
    for key in ("$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {f"{prefix}-{k}": v for k, v in out[key].items()}
    return out


class RuleSet:
    """Several schemas' rules in one grammar: ``add`` each under its own name prefix, then write
    your own rules around the names it returns and take ``rules()``."""

    def __init__(self) -> None:
        module = _converter_module()
        self._converter = module.SchemaConverter(prop_order={}, allow_fetch=False,
                                                 dotall=False, raw_pattern=False)

    def add(self, schema: Any, name: str, where: str = "schema") -> str:
        """The rule name matching ``schema``'s JSON text (trailing whitespace allowed). Raises
        SchemaError (after :func:`check_schema`) when the converter cannot handle it."""
        check_schema(schema, where)
        if schema is True:
            schema = {}
        conv = self._converter
        try:
            own = _prefix_defs(json.loads(json.dumps(schema)), name)
            resolved = conv.resolve_refs(own, where)
            return str(conv.visit(resolved, name))
        except RecursionError:
            raise SchemaError(f"{where} is nested too deeply") from None
        except (AssertionError, AttributeError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            raise SchemaError(f"{where} cannot be turned into a grammar: {exc}") from None

    def rule(self, name: str, body: str) -> str:
        """Add a rule of our own (GBNF ``body``); returns the name it got."""
        return str(self._converter._add_rule(name, body))

    def rules(self) -> str:
        """Every rule added, one ``name ::= body`` a line."""
        return str(self._converter.format_grammar())


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\r", "\\r").replace("\t", "\\t") + '"'
