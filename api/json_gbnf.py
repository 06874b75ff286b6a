"""Several JSON Schemas' grammar rules in one GBNF grammar, for tool calls: each tool's arguments
get a rule of their own, and api/tool_families.py writes the family's markup around them.

The schemas go through the same checks as ``response_format`` (:func:`.json_schema.
checked_schema`: valid against the meta-schema, and nothing the converter would silently drop),
and the same converter (llama-cpp-python's ``SchemaConverter``, loaded from its file by
:mod:`.json_schema` so the api never loads libllama). A refusal is a :class:`SchemaError` naming
where in the schema it is; the caller names the request field.
"""

from __future__ import annotations

import json
from typing import Any

from hearth.api import json_schema


class SchemaError(ValueError):
    """A schema that is invalid, or that hearth cannot enforce (the message says which part).
    ``param``: the request field holding the schema, where the caller knows it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


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
    your own rules around the names it returns (``rule``) and take ``rules()``."""

    def __init__(self) -> None:
        module = json_schema._converter()
        self._converter = module.SchemaConverter(prop_order={}, allow_fetch=False,
                                                 dotall=False, raw_pattern=False)

    def add(self, schema: Any, name: str) -> str:
        """The name of the rule matching ``schema``'s JSON text (trailing whitespace allowed).
        Raises SchemaError when the schema is invalid or not enforceable."""
        try:
            normal = json_schema.checked_schema(schema)
        except json_schema.Unsupported as exc:
            message = exc.message.removeprefix(f"{json_schema.PARAM}: ")
            raise SchemaError(message) from None
        conv = self._converter
        try:
            own = _prefix_defs(json.loads(json.dumps(normal)), name)
            return str(conv.visit(conv.resolve_refs(own, name), name))
        except RecursionError:
            raise SchemaError("the schema is nested too deeply (or holds too many properties) "
                              "to be enforced") from None
        except (AssertionError, AttributeError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            raise SchemaError(f"the schema could not be converted to a grammar: {exc}") from None

    def rule(self, name: str, body: str) -> str:
        """Add a rule of our own (GBNF ``body``); returns the name it got."""
        return str(self._converter._add_rule(name, body))

    def rules(self) -> str:
        """Every rule added, one ``name ::= body`` a line (strings as JSON allows them)."""
        return json_schema.json_strings(str(self._converter.format_grammar()))


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\r", "\\r").replace("\t", "\\t") + '"'
