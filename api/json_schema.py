"""``response_format`` -> a GBNF grammar for the slot, failing closed.

The JSON-schema -> GBNF conversion is llama-cpp-python's (``llama_cpp/llama_grammar.py``,
``json_schema_to_gbnf``). That module is plain Python with only standard-library imports, but
importing it as ``llama_cpp.llama_grammar`` runs the package's ``__init__``, which loads the
llama.cpp shared library (and numpy, jinja2...) into the frontend; so :func:`_converter` loads
that one file by its path instead (checked by tests/unit/test_json_schema.py in a fresh
interpreter).

The converter drops what it does not handle without a word (a ``minimum``, a ``pattern`` it
mistranslates, a ``format`` it does not know, any keyword beside ``anyOf``...), which would
give a 200 of text that does not match the schema. So every schema is first checked against its
JSON Schema meta-schema (the ``jsonschema`` library), then walked here the way the converter
walks it, and any keyword the converter would not enforce is a 400 (``param:
"response_format"``) whose message names the keyword and where it is. Keywords that only
annotate (``title``, ``description``, ``default``, ``examples``...) are allowed anywhere, and
so are keywords JSON Schema does not define (``x-…``, ``propertyOrdering``): validators ignore
them, and so does the grammar.

Two rewrites come before the walk, both exact: a ``type`` list beside other keywords becomes an
``anyOf`` of one schema per type (each with the keywords that apply to it), and OpenAPI's
``nullable: true`` becomes ``anyOf: [schema, {"type": "null"}]``.

One fix comes after: the converter's string character rule lets raw control characters
(U+0000-U+001F) into strings, which JSON forbids; they are excluded.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from types import ModuleType
from typing import Any

import jsonschema
from hearth.api import gbnf_rules
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import Grammar

PARAM = "response_format"

# Keywords that say nothing about which values are valid: allowed anywhere, dropped before
# conversion.
ANNOTATIONS = frozenset({
    "title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
    "writeOnly", "$schema", "$id", "$defs", "definitions", "strict",
})
# Every keyword JSON Schema defines (drafts 4 to 2020-12), and OpenAPI's ``nullable``. A keyword
# outside this set asserts nothing (validators ignore it), so it is ignored here too; one inside
# it that the converter would not enforce is refused.
KEYWORDS = ANNOTATIONS | {
    "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
    "$vocabulary", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
    "prefixItems", "items", "additionalItems", "contains", "properties", "patternProperties",
    "additionalProperties", "propertyNames", "unevaluatedItems", "unevaluatedProperties", "type",
    "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains",
    "minContains", "maxProperties", "minProperties", "required", "dependentRequired",
    "dependencies", "format", "contentEncoding", "contentMediaType", "contentSchema",
    "nullable",
}
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
# keywords that constrain only values of one type (JSON Schema ignores them for other types)
TYPE_KEYWORDS = {
    "object": {"properties", "required", "additionalProperties", "patternProperties",
               "propertyNames", "minProperties", "maxProperties", "dependentRequired",
               "dependentSchemas", "unevaluatedProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains",
              "minContains", "maxContains", "unevaluatedItems"},
    "string": {"minLength", "maxLength", "pattern", "format", "contentEncoding",
               "contentMediaType"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
TYPE_KEYWORDS["integer"] = TYPE_KEYWORDS["number"]
FORMATS = ("date", "time", "date-time", "uuid")  # the string formats the converter enforces
MAX_REPEAT = 1000  # largest minItems/maxItems/minLength/maxLength (each unrolls in the grammar)
# Most values one enum may list. Each value is an alternative the grammar keeps alive while a
# prefix matches, and the slot's grammar check walks them all on every token: a 60,000-value
# enum slowed every stream on the model about 30x (SmolLM2, measured in review); 5,000 cost
# little. The cap keeps one request from stalling the others.
MAX_ENUM = 2000
MAX_GRAMMAR_BYTES = 1 << 20  # a converted grammar larger than this is refused

# How the converter's string character rule starts, and the same without raw control characters.
_CHAR_START = '[^"\\\\] | '
_CHAR_START_JSON = '[^"\\\\\\x00-\\x1F] | '


class Unsupported(InvalidRequest):
    pass


@functools.lru_cache(maxsize=1)
def _converter() -> ModuleType:
    """llama-cpp-python's ``llama_grammar`` module, loaded from its file without importing the
    ``llama_cpp`` package (see the module docstring). Loaded once per process."""
    package = importlib.util.find_spec("llama_cpp")  # finds the package; does not import it
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("llama-cpp-python is not installed")
    path = f"{list(package.submodule_search_locations)[0]}/llama_grammar.py"
    spec = importlib.util.spec_from_file_location("hearth_llama_grammar", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refuse(message: str) -> Unsupported:
    return Unsupported(f"response_format: {message}", param=PARAM)


def _where(path: str) -> str:
    return f" at '{path or '/'}'"


# ---- rewrites ---------------------------------------------------------------------------------


def _normalize(schema: Any, path: str) -> Any:
    """The schema with ``true`` subschemas as ``{}``, annotations dropped, type lists and
    ``nullable`` rewritten as ``anyOf`` (see the module docstring). Raises Unsupported for a
    ``false`` subschema (nothing would be valid)."""
    if schema is True:
        return {}
    if schema is False:
        raise _refuse(f"a 'false' schema{_where(path)} allows no value")
    if not isinstance(schema, dict):
        return schema  # (the meta-schema check has refused it already)
    s = {k: v for k, v in schema.items() if k in KEYWORDS and k not in ANNOTATIONS}
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            s[key] = {name: _normalize(sub, f"{path}/{key}/{name}")
                      for name, sub in schema[key].items()}
    if isinstance(s.get("items"), (dict, bool)):
        s["items"] = _normalize(s["items"], f"{path}/items")
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _normalize(s["additionalProperties"],
                                               f"{path}/additionalProperties")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(s.get(key), list):
            s[key] = [_normalize(sub, f"{path}/{key}/{i}") for i, sub in enumerate(s[key])]
    if isinstance(s.get("items"), list):
        s["items"] = [_normalize(sub, f"{path}/items/{i}") for i, sub in enumerate(s["items"])]
    nullable = s.pop("nullable", False)
    # kept at this level whatever is wrapped below: refs are resolved from the root
    defs = {k: s.pop(k) for k in ("$defs", "definitions") if k in s}
    types = s.get("type")
    if isinstance(types, list):
        if len(types) == 1:
            s["type"] = types[0]
        elif set(s) - {"type"}:
            rest = {k: v for k, v in s.items() if k != "type"}
            others = set().union(*TYPE_KEYWORDS.values())
            s = {"anyOf": [
                {"type": t, **{k: v for k, v in rest.items()
                               if k not in others or k in TYPE_KEYWORDS.get(t, set())}}
                for t in types]}
    if nullable is True:
        s = {"anyOf": [s, {"type": "null"}]}
    if "$ref" in s and defs:
        # the converter does not look beside a $ref for more refs to resolve (in the $defs)
        s = {"anyOf": [{"$ref": s.pop("$ref")}], **s}
    return {**s, **defs}


# ---- the walk ---------------------------------------------------------------------------------


def _check_literal(value: Any, path: str) -> None:
    """A const/enum value or property name the converter writes as a GBNF string literal:
    it copies ``json.dumps`` output into the literal, which is wrong for strings holding a
    quote, a backslash, a control character or a character outside the BMP."""
    if isinstance(value, str):
        if any(c in '"\\' or ord(c) < 0x20 or ord(c) > 0xFFFF for c in value):
            raise _refuse(f"the string {json.dumps(value)}{_where(path)} holds a quote, a "
                          "backslash, a control character or a character outside the Basic "
                          "Multilingual Plane, which this server cannot enforce")
    elif isinstance(value, list):
        for item in value:
            _check_literal(item, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_literal(key, path)
            _check_literal(item, path)


def _count(schema: dict[str, Any], key: str, path: str) -> None:
    value = schema.get(key)
    if value is not None and value > MAX_REPEAT:
        raise _refuse(f"'{key}' {value}{_where(path)} is over {MAX_REPEAT}, the most this "
                      "server enforces")


def _bounds(schema: dict[str, Any], low: str, high: str, path: str) -> None:
    """Refuse ``low`` over ``high`` (no value can be valid: the grammar would generate one
    anyway), after checking each against MAX_REPEAT."""
    _count(schema, low, path)
    _count(schema, high, path)
    lo, hi = schema.get(low), schema.get(high)
    if lo is not None and hi is not None and lo > hi:
        raise _refuse(f"'{low}' {lo} is over '{high}' {hi}{_where(path)}: no value is valid")


def _walk(s: Any, path: str, root: dict[str, Any], seen: set[str]) -> None:
    """Refuse the first keyword of ``s`` (normalized) that the converter would not enforce.
    ``seen``: the references already followed (a schema may refer to itself)."""
    if not isinstance(s, dict):
        raise _refuse(f"the schema{_where(path)} is not an object")
    t = s.get("type")
    subs: list[tuple[Any, str]] = []
    allowed: set[str]
    if "$ref" in s:
        allowed = {"$ref"}
        ref = s["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise _refuse(f"'$ref' {json.dumps(ref)}{_where(path)}: only references inside the "
                          "schema ('#/$defs/...') are supported")
        target = _resolve(root, ref)
        if target is None:
            raise _refuse(f"'$ref' {json.dumps(ref)}{_where(path)} points at nothing")
        if ref not in seen:
            seen.add(ref)
            subs = [(target, ref[1:])]
    elif "anyOf" in s or "oneOf" in s:
        if "anyOf" in s and "oneOf" in s:
            raise _refuse(f"'anyOf' beside 'oneOf'{_where(path)} is not supported")
        key = "anyOf" if "anyOf" in s else "oneOf"
        allowed = {key}
        subs = [(sub, f"{path}/{key}/{i}") for i, sub in enumerate(s[key])]
    elif isinstance(t, list):
        allowed = {"type"}
    elif "const" in s:
        allowed = {"const", "type"}
        _check_literal(s["const"], f"{path}/const")
        if "type" in s and not _is_type(s["const"], s["type"]):
            raise _refuse(f"'const'{_where(path)} is not of its 'type': no value is valid")
    elif "enum" in s:
        allowed = {"enum", "type"}
        if len(s["enum"]) > MAX_ENUM:
            raise _refuse(f"'enum'{_where(path)} lists {len(s['enum'])} values, over "
                          f"{MAX_ENUM}, the most this server enforces")
        _check_literal(s["enum"], f"{path}/enum")
        if "type" in s:  # only the values of that type can be valid: the grammar lists those
            s["enum"] = [v for v in s["enum"] if _is_type(v, s["type"])]
            if not s["enum"]:
                raise _refuse(f"no value of 'enum'{_where(path)} is of its 'type'")
    elif t in (None, "object") and ("properties" in s or (
            "additionalProperties" in s and s["additionalProperties"] is not True)):
        allowed = {"type", "properties", "required", "additionalProperties"}
        props = s.get("properties", {})
        for name, sub in props.items():
            if not name:
                raise _refuse(f"an empty property name{_where(path)} is not supported")
            _check_literal(name, f"{path}/properties")
            subs.append((sub, f"{path}/properties/{name}"))
        missing = [name for name in s.get("required", []) if name not in props]
        if missing:
            raise _refuse(f"'required' names {json.dumps(missing[0])}{_where(path)}, which is "
                          "not in 'properties'")
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            subs.append((extra, f"{path}/additionalProperties"))
    elif t in (None, "array") and ("items" in s or "prefixItems" in s):
        if "prefixItems" in s or isinstance(s.get("items"), list):
            key = "prefixItems" if "prefixItems" in s else "items"
            allowed = {"type", key}
            subs = [(sub, f"{path}/{key}/{i}") for i, sub in enumerate(s[key])]
        else:
            allowed = {"type", "items", "minItems", "maxItems"}
            _bounds(s, "minItems", "maxItems", path)
            subs = [(s["items"], f"{path}/items")]
    elif t in (None, "string") and "pattern" in s:
        allowed = {"type", "pattern"}
        s["pattern"] = _check_pattern(s["pattern"], path)
    elif t in (None, "object") and "allOf" in s:
        allowed = {"type", "allOf"}
        subs = _all_of(s["allOf"], path)
    elif t in (None, "string") and "format" in s:
        allowed = {"type", "format"}
        if s["format"] not in FORMATS:
            raise _refuse(f"'format': {json.dumps(s['format'])}{_where(path)} is not supported "
                          f"(supported: {', '.join(FORMATS)})")
    elif t == "string" and ("minLength" in s or "maxLength" in s):
        allowed = {"type", "minLength", "maxLength"}
        _bounds(s, "minLength", "maxLength", path)
    elif t == "object" or not s:
        allowed = {"type"}
        if s.get("additionalProperties") is True:
            allowed.add("additionalProperties")
    elif t in TYPES:
        allowed = {"type"}
    else:
        raise _refuse(f"a schema with no 'type'{_where(path)} (and none of 'properties', "
                      "'items', 'enum', 'const', 'anyOf', 'oneOf', '$ref') is not supported")
    for key in s:
        if key not in allowed and key not in ("$defs", "definitions"):
            beside = "" if key in TYPE_KEYWORDS.get(str(t), set()) or t is None else \
                f" (for type {json.dumps(t)})"
            raise _refuse(f"'{key}'{_where(path)}{beside} is not supported by this server's "
                          "structured outputs; see the README's 'Structured outputs' for the "
                          "keywords it enforces")
    for sub, where in subs:
        _walk(sub, where, root, seen)


# What a pattern may hold (see _check_pattern). The converter copies literals and classes into
# the grammar as they are; in GBNF ``\d`` is no escape (the grammar fails to parse) and a class
# like ``[\d]`` neither, so every escape is rewritten here into a class the converter copies
# exactly (``\d`` -> ``[0-9]``, ``\.`` -> ``[\x2E]``). None of what is left can write a quote,
# a backslash or a control character into the JSON string.
_PATTERN_QUANT = re.compile(r"\{(\d+)(,(\d*))?\}")
_HEX = re.compile(r"x([0-9A-Fa-f]{2})")
# shorthand classes -> their ranges. ``\w`` and ``\d`` as ECMA-262 defines them (ASCII), a
# subset of what Python's ``re`` (and so the ``jsonschema`` library) matches; ``\s`` is only
# the space: the grammar writes raw characters, and a tab or newline in a JSON string is an
# escape sequence, not the character.
_SHORTHANDS = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " "}
_ESCAPES_HELP = ("supported escapes: \\d, \\w, \\s (a space only), \\xHH and escaped "
                 "punctuation such as \\. \\- \\( \\/")


def _escaped_char(body: str, i: int, pattern: str, where: str) -> tuple[str | None, str, int]:
    """The escape at ``body[i]`` (a backslash): (the character it stands for, or None for a
    shorthand class; the shorthand's ranges or ''; the index after it). Raises Unsupported for
    an escape the grammar cannot enforce."""
    nxt = body[i + 1] if i + 1 < len(body) else ""
    if nxt in _SHORTHANDS:
        return None, _SHORTHANDS[nxt], i + 2
    m = _HEX.match(body, i + 1)
    if m is not None:
        char, end = chr(int(m.group(1), 16)), m.end()
    elif nxt and nxt.isascii() and not nxt.isalnum() and nxt not in " _":
        char, end = nxt, i + 2
    else:
        raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: the escape "
                      f"{json.dumps(body[i:i + 2])} is not supported ({_ESCAPES_HELP})")
    if not " " <= char <= "~" or char in '"\\':
        raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: the escape "
                      f"{json.dumps(body[i:end])} stands for a quote, a backslash or a control "
                      "character, which this server cannot enforce")
    return char, "", end


def _class_char(c: str) -> str:
    return c if c.isalnum() else f"\\x{ord(c):02X}"


def _check_pattern(pattern: str, path: str) -> str:
    """Refuse a ``pattern`` the converter would not enforce exactly; return it rewritten for
    the converter. The subset: anchored at both ends (``^…$``: JSON Schema's patterns search,
    and the converter only writes whole-string rules), literal characters other than ``"``,
    ``\\`` and control characters, classes ``[…]`` of such characters and ranges (not
    negated), groups ``(…)`` with ``|`` inside them, the quantifiers ``* + ? {m} {m,} {m,n}``,
    and the escapes ``\\d``, ``\\w``, ``\\s`` (written as a space only), ``\\xHH`` and escaped
    punctuation (``\\.``), in classes too. No ``.`` (it would let a raw quote into the JSON),
    no lookarounds, no negated shorthands (``\\D``), no backreferences."""
    where = f"{_where(path)}"
    if len(pattern) < 2 or not (pattern.startswith("^") and pattern.endswith("$")):
        raise _refuse(f"'pattern' {json.dumps(pattern)}{where} must be anchored with '^' and '$' "
                      "to be enforced")
    body = pattern[1:-1]
    out: list[str] = []
    depth, i = 0, 0
    atom = False  # whether the last thing written can take a quantifier
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            char, ranges, i = _escaped_char(body, i, pattern, where)
            out.append(f"[{ranges}]" if char is None else f"[{_class_char(char)}]")
            atom = True
            continue
        if ch == "[":
            text, i = _check_class(body, i + 1, pattern, where)
            out.append(text)
            atom = True
            continue
        if ch == "{":
            m = _PATTERN_QUANT.match(body, i)
            if m is None or (m.group(3) and int(m.group(3)) < int(m.group(1))) or \
                    max(int(m.group(1)), int(m.group(3) or 0)) > MAX_REPEAT:
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: a '{{m,n}}' quantifier "
                              f"needs m <= n <= {MAX_REPEAT}")
            if not atom:
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: a quantifier repeats "
                              "nothing")
            out.append(m.group(0))
            i = m.end()
            atom = False
            continue
        if ch == "(":
            if body.startswith("(?", i):
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: '(?' groups "
                              "(lookarounds, flags, non-capturing) are not supported")
            depth += 1
            atom = False
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: unbalanced ')'")
            atom = True
        elif ch == "|":
            if depth == 0:
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: put alternatives in a "
                              "group ('^(a|b)$') to have them enforced")
            atom = False
        elif ch in ".^$]}":
            raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: {json.dumps(ch)} is not "
                          "supported ('.' and anchors inside are not enforced; escape a "
                          "literal one: '\\\\.')")
        elif ch == '"' or ord(ch) < 0x20:
            raise _refuse(f"'pattern' {json.dumps(pattern)}{where} holds a quote or a control "
                          "character, which this server cannot enforce")
        elif ch in "*+?":
            if not atom:
                raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: {json.dumps(ch)} "
                              "repeats nothing")
            atom = False
        else:
            atom = True
        out.append(ch)
        i += 1
    if depth:
        raise _refuse(f"'pattern' {json.dumps(pattern)}{where}: unbalanced '('")
    return "^" + "".join(out) + "$"


def _check_class(body: str, i: int, pattern: str, where: str) -> tuple[str, int]:
    """The class that starts at ``body[i]`` (just after its '['), rewritten for the converter
    (every character that is not a letter or digit as ``\\xHH``), and the index after its ']'.
    Its members: printable ASCII characters other than a quote and a backslash, ranges of them
    upwards, and the escapes of :func:`_escaped_char`; not negated."""
    bad = (f"'pattern' {json.dumps(pattern)}{where}: only classes of printable ASCII "
           "characters other than a quote and a backslash, ranges of them upwards ('[a-z0-9_]') "
           f"and escapes are supported ({_ESCAPES_HELP})")
    if body.startswith("^", i):
        raise _refuse(bad + "; not negated classes")
    # (a character, or None and a shorthand's ranges; whether it was written as an escape)
    items: list[tuple[str | None, str, bool]] = []
    while i < len(body) and body[i] != "]":
        if body[i] == "\\":
            char, ranges, i = _escaped_char(body, i, pattern, where)
            items.append((char, ranges, True))
        else:
            if body[i] == "[":
                raise _refuse(bad)
            items.append((body[i], "", False))
            i += 1
    if i >= len(body) or not items:
        raise _refuse(bad)
    parts: list[str] = []
    k = 0
    while k < len(items):
        lo, ranges, _ = items[k]
        hi = lo
        if lo is not None and k + 2 < len(items) and items[k + 1] == ("-", "", False) and \
                items[k + 2][0] is not None:
            hi = items[k + 2][0]
            k += 3
        else:
            k += 1
        if lo is None:
            parts.append(ranges)
            continue
        assert hi is not None
        if not (" " <= lo <= hi <= "~") or lo <= '"' <= hi or lo <= "\\" <= hi:
            raise _refuse(bad)
        parts.append(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}")
    return "[" + "".join(parts) + "]", i + 1


def _all_of(parts: list[Any], path: str) -> list[tuple[Any, str]]:
    """The subschemas of an ``allOf`` the converter enforces: each part an object schema of
    ``properties`` (and ``required``) only, no property named twice. The converter makes
    every property of every part required and allows no other property: a subset of what the
    schema allows. Returns the properties' subschemas to walk."""
    subs: list[tuple[Any, str]] = []
    seen: set[str] = set()
    for k, part in enumerate(parts):
        where = f"{path}/allOf/{k}"
        if not isinstance(part, dict) or part.get("type", "object") != "object" or \
                "properties" not in part or set(part) - {"type", "properties", "required"}:
            raise _refuse(f"'allOf'{_where(path)}: only parts that are object schemas of "
                          "'properties' (and 'required') are supported; "
                          f"'{where}' is not one")
        for name, sub in part["properties"].items():
            if not name or name in seen:
                raise _refuse(f"'allOf'{_where(path)}: the property {json.dumps(name)} is "
                              "empty or in two parts, which this server cannot enforce")
            _check_literal(name, f"{where}/properties")
            seen.add(name)
            subs.append((sub, f"{where}/properties/{name}"))
        missing = [n for n in part.get("required", []) if n not in part["properties"]]
        if missing:
            raise _refuse(f"'required' names {json.dumps(missing[0])}{_where(where)}, which is "
                          "not in 'properties'")
    return subs


def _is_type(value: Any, t: Any) -> bool:
    return bool(jsonschema.Draft202012Validator({"type": t}).is_valid(value))


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ---- the entry points -------------------------------------------------------------------------


def schema_grammar(schema: Any) -> Grammar:
    """The grammar of JSON text valid against ``schema`` (a JSON Schema as parsed JSON).
    Raises InvalidRequest (``param: "response_format"``) for an invalid schema or one with a
    keyword this server cannot enforce."""
    return Grammar(_to_gbnf(checked_schema(schema)), param=PARAM)


def checked_schema(schema: Any) -> dict[str, Any]:
    """``schema`` checked and normalized for the converter (as :func:`schema_grammar` does;
    tool parameters go through it too, api/tool_families.py). Raises Unsupported, whose
    message starts ``response_format: `` and whose param is ``response_format``: a caller for
    another field rewrites both."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        raise _refuse("'json_schema.schema' must be a JSON Schema object"
                      + (" ('false' schema: it allows no value)" if schema is False else ""))
    if "$schema" in schema and not isinstance(schema["$schema"], str):
        raise _refuse("'$schema' must be a string (a dialect's URI)")
    try:
        return _checked(schema)
    except RecursionError:
        raise _refuse("the schema is nested too deeply (or holds too many properties) to be "
                      "enforced") from None


def _checked(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        # the dialect its $schema names; 2020-12 when it names none (or one jsonschema does not
        # know)
        validator = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/" + "/".join(str(p) for p in exc.path)
        raise _refuse(f"the schema is not a valid JSON Schema{_where(where)}: "
                      f"{exc.message}") from None
    normal: dict[str, Any] = _normalize(schema, "")
    _walk(normal, "", normal, set())
    return normal


def json_object_grammar() -> Grammar:
    """The grammar of any one JSON object (``response_format: {"type": "json_object"}``)."""
    return Grammar(_to_gbnf({"type": "object"}), param=PARAM)


def _to_gbnf(schema: dict[str, Any]) -> str:
    try:
        gbnf: str = _converter().json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:  # the converter recurses per optional property, and per level
        raise _refuse("the schema is nested too deeply (or holds too many properties) to be "
                      "enforced") from None
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise _refuse(f"the schema could not be converted to a grammar: {exc}") from None
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise _refuse(f"the schema's grammar is {len(gbnf):,} bytes, over "
                      f"{MAX_GRAMMAR_BYTES:,}, the most this server enforces")
    return json_strings(gbnf)


def json_strings(gbnf: str) -> str:
    """The converter's output with its string character rule (the rule named ``char``) made
    JSON's: no raw control characters."""
    body = gbnf_rules.body(gbnf, "char")
    if body is None:
        return gbnf
    if not body.startswith(_CHAR_START):  # llama-cpp-python changed its rule: look at it again
        raise RuntimeError(f"unexpected string rule in llama-cpp-python's converter: {body}")
    return gbnf_rules.replace_body(gbnf, "char", _CHAR_START_JSON + body[len(_CHAR_START):])
