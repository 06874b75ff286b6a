"""api/json_schema.py: which schemas become grammars and which are a 400 naming the keyword,
and that the conversion never loads llama.cpp into the frontend. (That the grammars' outputs
validate is tests/integration/test_structured_outputs.py's, on a real model.)"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hearth.api import json_schema, openai_types
from hearth.scheduler.errors import InvalidRequest

OBJ = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}

ACCEPTED: list[Any] = [
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
    {"type": "null"}, {"type": "array"}, {"type": "object"}, {}, True,
    OBJ,
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"a": OBJ}, "required": ["a"],
     "title": "T", "description": "d", "$comment": "c", "examples": [{}]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
    {"enum": ["a", "b", 1, None]}, {"const": {"k": [1, 2]}}, {"type": "string", "enum": ["x"]},
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"oneOf": [{"type": "string"}, {"type": "null"}]},
    {"type": ["string", "null"]},
    {"type": ["string", "integer"], "maxLength": 4},  # rewritten as anyOf, each type its own
    {"type": "string", "nullable": True},
    {"type": "string", "minLength": 2, "maxLength": 5},
    {"type": "string", "minLength": 3, "maxLength": 3},
    {"enum": [f"value-{i}" for i in range(json_schema.MAX_ENUM)]},
    {"type": "string", "format": "date"}, {"type": "string", "format": "time"},
    {"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"},
    # patterns in the subset the converter writes exactly (api/json_schema._check_pattern)
    {"type": "string", "pattern": "^a+$"}, {"pattern": "^[A-Z]{2}-[0-9]{3,5}$"},
    {"type": "string", "pattern": "^(red|green)( [a-z_]+)?$"}, {"pattern": "^$"},
    # escapes, rewritten as classes (Pydantic's constr(pattern=...) fields)
    {"type": "string", "pattern": r"^\d{3}-\d{4}$"}, {"pattern": r"^[A-Z]\w+$"},
    {"pattern": r"^[\w.+-]+@[\w-]+\.[a-z]{2,}$"}, {"pattern": r"^\(\d+\) \$\d+\.\d{2}$"},
    {"pattern": r"^a\sb$"}, {"pattern": r"^[\d\s]+$"}, {"pattern": r"^\x41[\x30-\x39]$"},
    {"pattern": r"^\/\?\*\+\[\]\{\}\|\^$"}, {"pattern": r"^(\d|x)+$"},
    # allOf of object parts
    {"allOf": [OBJ, {"properties": {"b": {"type": "integer"}}}]},
    {"type": "object", "allOf": [{"type": "object", "properties": {"c": OBJ}}]},
    {"$defs": {"P": OBJ}, "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}},
    {"$defs": {"P": OBJ}, "$ref": "#/$defs/P"},
    {"definitions": {"N": {"type": "object", "properties": {"next": {"anyOf": [
        {"$ref": "#/definitions/N"}, {"type": "null"}]}}, "required": ["next"]}},
     "$ref": "#/definitions/N"},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"},
    {"type": "string", "x-kind": "name", "propertyOrdering": ["a"]},  # not JSON Schema's
]

# (schema, a word the 400's message must hold)
REFUSED: list[tuple[Any, str]] = [
    ({"type": "integer", "minimum": 0}, "'minimum'"),
    ({"type": "number", "maximum": 1}, "'maximum'"),
    ({"type": "integer", "exclusiveMinimum": 0}, "'exclusiveMinimum'"),
    ({"type": "number", "multipleOf": 2}, "'multipleOf'"),
    ({"type": "string", "pattern": "a+"}, "anchored"),
    ({"type": "string", "pattern": "^a.b$"}, '"."'),
    ({"type": "string", "pattern": r"^\D+$"}, r'"\\D" is not supported'),
    ({"type": "string", "pattern": r"^\W$"}, "escape"),
    ({"type": "string", "pattern": r"^[\S]$"}, "escape"),
    ({"type": "string", "pattern": r"^a\b$"}, "escape"),
    ({"type": "string", "pattern": r"^(a)\1$"}, "escape"),
    ({"type": "string", "pattern": r"^\n$"}, "escape"),
    ({"type": "string", "pattern": r"^\u00e9$"}, "escape"),
    ({"type": "string", "pattern": r"^a\\b$"}, "backslash"),
    ({"type": "string", "pattern": r'^a\"b$'}, "quote"),
    ({"type": "string", "pattern": r"^\x22$"}, "quote"),
    ({"type": "string", "pattern": r"^[\x00-\x1f]$"}, "quote"),
    ({"type": "string", "pattern": r"^a+?$"}, "repeats nothing"),
    ({"type": "string", "pattern": "^a|b$"}, "in a group"),
    ({"type": "string", "pattern": "^[^a]$"}, "classes"),
    ({"type": "string", "pattern": "^[!-~]+$"}, "quote"),
    ({"type": "string", "pattern": '^a"b$'}, "quote"),
    ({"type": "string", "pattern": "^(?:ab)$"}, "'(?'"),
    ({"type": "string", "pattern": "^a{2000}$"}, "m <= n"),
    ({"type": "string", "pattern": "^(ab$"}, "not a valid JSON Schema"),
    ({"type": "string", "pattern": "^a$", "maxLength": 3}, "'maxLength'"),
    ({"type": "string", "format": "email"}, '"email"'),
    ({"type": "string", "format": "uri"}, '"uri"'),
    ({"not": {"type": "string"}}, "no 'type'"),
    ({"type": "string", "not": {"const": "a"}}, "'not'"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "no 'type'"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {}}, "'if'"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties'"),
    ({"type": "object", "properties": {"a": {}}, "patternProperties": {"^a": {}}},
     "'patternProperties'"),
    ({"type": "object", "properties": {"a": {}}, "dependentRequired": {"a": ["b"]}},
     "'dependentRequired'"),
    ({"type": "object", "properties": {"a": {}}, "minProperties": 1}, "'minProperties'"),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "'propertyNames'"),
    ({"type": "array", "items": {}, "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "array", "contains": {"type": "string"}}, "'contains'"),
    ({"type": "array", "minItems": 2}, "'minItems'"),  # no items: the converter drops it
    ({"type": "array", "prefixItems": [{}], "minItems": 2}, "'minItems'"),
    ({"type": "array", "items": {"type": "integer", "minimum": 3}}, "/items"),
    ({"allOf": [{"type": "string"}]}, "only parts that are object schemas"),
    ({"allOf": [OBJ, {"properties": {"a": {"type": "integer"}}}]}, "in two parts"),
    ({"allOf": [OBJ, {"anyOf": [OBJ]}]}, "only parts"),
    ({"allOf": [{"properties": {"a": {}}, "additionalProperties": False}]}, "only parts"),
    ({"type": "object", "properties": {"a": {}}, "allOf": [OBJ]}, "'allOf'"),
    ({"allOf": [{"properties": {"a": {"type": "integer", "minimum": 1}}}]}, "'minimum'"),
    ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}, "'anyOf' beside 'oneOf'"),
    ({"type": "string", "anyOf": [{"maxLength": 2}]}, "'type'"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, '"b"'),
    ({"$ref": "https://example.com/s.json"}, "only references inside"),
    ({"$ref": "#/$defs/Missing"}, "points at nothing"),
    ({"type": "string", "maxLength": 5000}, "over 1000"),
    ({"enum": ['say "hi"']}, "quote"),
    ({"const": "a\\b"}, "backslash"),
    ({"type": "object", "properties": {"a\nb": {}}}, "control character"),
    ({"type": "string", "const": 3}, "not of its 'type'"),
    ({"type": "string", "enum": [1, 2]}, "'enum'"),
    ({"type": "stringg"}, "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"type": 3}}}, "not a valid JSON Schema"),
    ({"minLength": -1}, "not a valid JSON Schema"),
    (False, "'false' schema"),
    ({"type": "object", "properties": {"a": False}}, "'false' schema"),
    ([1], "must be a JSON Schema object"),
    # found by a break-it review: each was a 200 of invalid JSON, a stall or a 500
    ({"type": "object", "properties": {"": {"type": "integer"}}, "required": [""]},
     "empty property name"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "no value is valid"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 2},
     "no value is valid"),
    ({"enum": [f"value-{i}" for i in range(json_schema.MAX_ENUM + 1)]}, "over 2000"),
    ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(2000)}},
     "too many properties"),
]


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("depth", [121, 400])
def test_a_deeply_nested_schema_is_a_400_not_a_500(depth: int) -> None:
    with pytest.raises(InvalidRequest) as err:
        json_schema.schema_grammar(_nested(depth))
    assert err.value.param == "response_format"
    assert "nested too deeply" in err.value.message


@pytest.mark.parametrize("schema", ACCEPTED, ids=lambda s: json.dumps(s)[:60])
def test_accepted_schema_becomes_a_grammar(schema: Any) -> None:
    grammar = json_schema.schema_grammar(schema)
    assert "root ::=" in grammar.gbnf
    assert grammar.triggers == [] and grammar.param == "response_format"
    # JSON strings never hold raw control characters
    assert 'char ::= [^"\\\\] ' not in grammar.gbnf


@pytest.mark.parametrize("schema,word", REFUSED, ids=lambda s: json.dumps(s)[:60])
def test_refused_schema_is_a_400_naming_what(schema: Any, word: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        json_schema.schema_grammar(schema)
    assert err.value.param == "response_format"
    assert word in err.value.message, err.value.message


def test_the_request_is_not_changed() -> None:
    schema = {"type": ["string", "null"], "maxLength": 3, "description": "d"}
    before = json.dumps(schema)
    json_schema.schema_grammar(schema)
    assert json.dumps(schema) == before


def test_enum_values_of_other_types_are_left_out() -> None:
    grammar = json_schema.schema_grammar({"type": "string", "enum": ["a", 1]})
    assert '"\\"a\\""' in grammar.gbnf and '"1"' not in grammar.gbnf


def test_char_rule_excludes_control_characters() -> None:
    gbnf = json_schema.json_object_grammar().gbnf
    assert 'char ::= [^"\\\\\\x00-\\x1F] |' in gbnf


def _req(fmt: Any) -> openai_types.ChatCompletionRequest:
    return openai_types.parse_chat_request(json.dumps({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": fmt}).encode())


def test_response_format_kinds() -> None:
    assert openai_types.response_grammar(_req(None)) is None
    assert openai_types.response_grammar(_req({"type": "text"})) is None
    obj = openai_types.response_grammar(_req({"type": "json_object"}))
    assert obj is not None and "root ::= object" in obj.gbnf
    named = openai_types.response_grammar(_req({"type": "json_schema", "json_schema": {
        "name": "x", "schema": OBJ, "strict": True, "description": "d"}}))
    assert named is not None and '"\\"a\\""' in named.gbnf
    no_schema = openai_types.response_grammar(_req({"type": "json_schema",
                                                    "json_schema": {"name": "x"}}))
    assert no_schema is not None


@pytest.mark.parametrize("fmt,param", [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": "s"}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": True}},
     "response_format.json_schema.schema"),
    ("json", "response_format"),
])
def test_malformed_response_format_is_a_400(fmt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _req(fmt)
    assert err.value.param == param


def test_conversion_does_not_load_llama_cpp() -> None:
    """The frontend converts schemas without importing the llama_cpp package (whose __init__
    loads the llama.cpp shared library)."""
    code = ("import sys\nfrom hearth.api import app, json_schema\n"
            "json_schema.schema_grammar({'type': 'object', 'properties': {'a': {}}})\n"
            "loaded = [m for m in sys.modules if m.startswith('llama_cpp')]\n"
            "maps = open('/proc/self/maps').read()\n"
            "print(loaded, 'libllama' in maps)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[] False"
