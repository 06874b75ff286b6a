"""response_format through a real server on the tiny random-weight model: whatever the random
weights would say, every answer under a schema parses and validates against it (the
``jsonschema`` library), for 50 schemas of varied shape sent at once, in batches with free-text
requests that must be left alone (grammar state is per slot); json_object gives one object;
a lazy grammar (ChatJob.grammar.triggers, which tool calling uses) through the engine in this
process; a GBNF llama.cpp cannot parse fails the request, not the worker.

The model's logits are spread wide and it practically never ends a string or an array by
itself, so the requests bias the tokens that close strings, objects and arrays (the grammar
still decides where they may come): the answers then end within the token limit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import openai
import pytest
from harness import Server
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.errors import ErrorKind
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Failed,
    Finished,
    Grammar,
    RequestedSampling,
    TextDelta,
)
from hearth.tools.model_config import WorkerConfig

pytestmark = pytest.mark.integration

MAX_TOKENS = 400
MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about a person, as JSON."}]

OBJ_AB = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
          "required": ["a", "b"], "additionalProperties": False}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"},
    "email": {"type": ["string", "null"]}}, "required": ["name", "age", "email"]}

SCHEMAS: list[dict[str, Any]] = [
    # primitives
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
    {"type": "null"},
    # objects
    OBJ_AB, PERSON,
    {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
     "required": ["x"]},  # y optional
    {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"},
                                      "c": {"type": "string"}}},  # all optional
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"id": {"type": "integer"}},
     "required": ["id"], "additionalProperties": True},
    {"type": "object", "additionalProperties": False},
    {"type": "object"},
    # nested
    {"type": "object", "properties": {"inner": OBJ_AB}, "required": ["inner"]},
    {"type": "object", "properties": {"l1": {"type": "object", "properties": {
        "l2": {"type": "object", "properties": {"l3": {"type": "boolean"}},
               "required": ["l3"]}}, "required": ["l2"]}}, "required": ["l1"]},
    {"type": "object", "properties": {"people": {"type": "array", "items": PERSON,
                                                 "maxItems": 2}}, "required": ["people"]},
    # arrays
    {"type": "array", "items": {"type": "integer"}},
    {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1},
    {"type": "array", "items": {"type": "number"}, "maxItems": 1},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"},
                                      {"type": "boolean"}]},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
     "maxItems": 2},
    {"type": "array", "items": OBJ_AB, "minItems": 1, "maxItems": 2},
    # enum and const
    {"enum": ["red", "green", "blue"]},
    {"enum": [1, "one", None, True]},
    {"type": "string", "enum": ["a", "b", 3]},
    {"const": "fixed"},
    {"const": {"k": [1, 2, {"z": None}]}},
    {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
     "required": ["kind", "r"]},
    {"type": "object", "properties": {"mood": {"enum": ["happy", "sad"]}}, "required": ["mood"]},
    # anyOf / oneOf
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"anyOf": [OBJ_AB, {"type": "array", "items": {"type": "integer"}, "maxItems": 2}]},
    {"oneOf": [{"type": "boolean"}, {"type": "null"}]},
    {"oneOf": [{"type": "object", "properties": {"t": {"const": "a"}}, "required": ["t"]},
               {"type": "object", "properties": {"t": {"const": "b"}, "n": {"type": "integer"}},
                "required": ["t", "n"]}]},
    {"type": "object", "properties": {"v": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
     "required": ["v"]},
    # nullable
    {"type": ["integer", "null"]},
    {"type": "string", "nullable": True},
    {"type": ["string", "null"], "maxLength": 3},
    {"type": "object", "properties": {"maybe": {"anyOf": [OBJ_AB, {"type": "null"}]}},
     "required": ["maybe"]},
    # $ref / $defs
    {"$defs": {"ab": OBJ_AB}, "type": "object",
     "properties": {"first": {"$ref": "#/$defs/ab"}, "second": {"$ref": "#/$defs/ab"}},
     "required": ["first", "second"]},
    {"$defs": {"ab": OBJ_AB}, "$ref": "#/$defs/ab"},
    {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer"},
        "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
        "required": ["value", "next"]}}, "$ref": "#/$defs/node"},
    {"definitions": {"color": {"enum": ["r", "g"]}}, "type": "array",
     "items": {"$ref": "#/definitions/color"}, "maxItems": 4},
    # strings with lengths and formats
    {"type": "string", "minLength": 3, "maxLength": 6},
    {"type": "string", "maxLength": 1},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "time"},
    {"type": "string", "format": "date-time"},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                      "at": {"type": "string", "format": "date-time"}},
     "required": ["id", "at"]},
    # patterns (the subset enforced) and allOf of object parts
    {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(ab|cd)+x?$"},
                                      "tag": {"pattern": "^[a-z_]{1,8}$"}},
     "required": ["code", "tag"]},
    # patterns with escapes, as Pydantic's constr(pattern=...) writes them
    {"type": "string", "pattern": r"^\d{3}-\d{4}$"},
    {"type": "object", "properties": {
        "name": {"type": "string", "pattern": r"^[A-Z]\w+$"},
        "mail": {"type": "string", "pattern": r"^[\w.+-]{1,8}@[\w-]{1,6}\.[a-z]{2,4}$"}},
     "required": ["name", "mail"]},
    {"type": "string", "pattern": r"^\(\d{1,3}\) \$\d{1,4}\.\d{2}\s?(\/|\*|\?)?$"},
    {"type": "array", "items": {"type": "string", "pattern": r"^[\d\s]{2,5}\x2E$"},
     "maxItems": 3},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"c": {"type": "boolean"}}}]},
    {"type": "object", "properties": {"p": {"allOf": [
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        {"properties": {"s": {"type": "string", "maxLength": 4}}}]}}, "required": ["p"]},
]
FORMATS = {
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "time": r"^\d{2}:\d{2}:\d{2}(\.\d{3})?(Z|[+-]\d{2}:\d{2})$",
    "date-time": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?(Z|[+-]\d{2}:\d{2})$",
    "uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}


def test_there_are_fifty_schemas_and_more() -> None:
    assert len(SCHEMAS) == 58
    for schema in SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.fixture(scope="module")
def closing_bias(tiny_models_dir: Path) -> dict[str, float]:
    """logit_bias toward the tokens that end a string, an object or an array."""
    vocab = llama_cpp.Llama(str(tiny_models_dir / "tiny.gguf"), vocab_only=True, verbose=False)
    bias: dict[str, float] = {}
    for token in range(vocab.n_vocab()):
        piece = vocab.detokenize([token]).strip()
        if piece in (b'"', b"}", b"]"):
            bias[str(token)] = 6.0
    assert len(bias) >= 3
    return bias


@pytest.fixture(scope="module")
def many(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=("--parallel", "8", "--ctx-size", "1024", "--threads", "1"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture(scope="module")
def client(many: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=many.base_url, api_key=many.api_key or "none", max_retries=0)


def _format(schema: dict[str, Any], i: int) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema,
                                                   "strict": True}}


def _formats_in(schema: Any, value: Any) -> list[tuple[str, Any]]:
    """(format, string) for the formatted strings of the simple shapes above."""
    if not isinstance(schema, dict):
        return []
    if "format" in schema:
        return [(schema["format"], value)]
    out = []
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                out += _formats_in(sub, value[name])
    return out


def test_fifty_schemas_at_once_beside_free_text(client: openai.OpenAI,
                                                closing_bias: dict[str, float]) -> None:
    """All 58 constrained requests and 8 free ones run together (8 slots: each batch mixes
    them); each constrained answer is JSON valid against its own schema, and each free one
    runs to its token limit with text no grammar shaped."""

    def constrained(i: int) -> tuple[int, str, str | None]:
        out = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, seed=i, temperature=1.0,
            logit_bias=closing_bias, response_format=_format(SCHEMAS[i], i))  # type: ignore[arg-type]
        return i, out.choices[0].message.content or "", out.choices[0].finish_reason

    def free(i: int) -> tuple[int, str, str | None]:
        out = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40,
                                             seed=i, temperature=1.0)
        return -1 - i, out.choices[0].message.content or "", out.choices[0].finish_reason

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(constrained, i) for i in range(len(SCHEMAS))]
        futures[4:4] = [pool.submit(free, i) for i in range(8)]
        results = [f.result() for f in futures]
    bad = []
    for i, text, finish in results:
        if i < 0:
            assert finish == "length", (text, finish)  # never ended by someone's grammar
            continue
        try:
            assert finish == "stop", f"finish_reason {finish}"
            value = json.loads(text)
            jsonschema.validate(value, SCHEMAS[i])
            for fmt, s in _formats_in(SCHEMAS[i], value):
                assert re.match(FORMATS[fmt], s), f"{s!r} is not a {fmt}"
        except (AssertionError, ValueError, jsonschema.ValidationError) as exc:
            bad.append(f"schema {i} {json.dumps(SCHEMAS[i])[:80]}: {exc}: {text[:200]!r}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_is_one_object(client: openai.OpenAI, closing_bias: dict[str, float],
                                   stream: bool) -> None:
    for seed in range(3):
        kw: Any = dict(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, seed=seed,
                       logit_bias=closing_bias, response_format={"type": "json_object"})
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kw))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            out = client.chat.completions.create(**kw)
            text, finish = out.choices[0].message.content or "", out.choices[0].finish_reason
        assert finish == "stop"
        assert isinstance(json.loads(text), dict), text


@pytest.mark.parametrize("sampling", [
    {"temperature": 0}, {"temperature": 0.8, "top_p": 0.9},
    {"temperature": 1.0, "extra_body": {"top_k": 40}},
    {"temperature": 0.7, "extra_body": {"min_p": 0.05}}, {"temperature": 0.9,
                                                         "frequency_penalty": 0.5}],
    ids=["greedy", "top_p", "top_k (llama.cpp's chain)", "min_p", "penalties"])
def test_every_sampler_keeps_to_the_schema(client: openai.OpenAI,
                                           closing_bias: dict[str, float],
                                           sampling: dict[str, Any]) -> None:
    schema = SCHEMAS[15]  # people: an array of objects with a nullable field
    for seed in range(2):
        out = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, seed=seed,
            logit_bias=closing_bias, response_format=_format(schema, 15), **sampling)
        assert out.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


def test_length_is_the_only_way_to_incomplete_json(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=3, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 3
    assert (out.choices[0].message.content or "").startswith("{")


def test_stop_with_a_json_format_is_a_400_naming_stop(client: openai.OpenAI) -> None:
    """A stop string could cut the JSON, and "length" must stay the only incomplete answer."""
    for fmt in ({"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3,
                                           stop=["}"], response_format=fmt)  # type: ignore[arg-type]
        assert err.value.body["param"] == "stop"  # type: ignore[index]
    out = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3,
                                         stop=["}"], response_format={"type": "text"})
    assert out.choices[0].finish_reason in ("stop", "length")


# ---- the engine in this process: lazy triggers and unparsable grammars -----------------------

@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> Iterator[LlamaRunner]:
    r = LlamaRunner(WorkerConfig(path=str(tiny_model_path), n_slots=4, n_ctx_slot=512,
                                 n_batch=64, n_threads=1))
    yield r
    r.close()


def _run(runner: LlamaRunner, jobs: list[ChatJob]) -> dict[str, tuple[str, Any]]:
    eng = SlotEngine(runner, render=lambda job: job.messages[0].content, n_slots=4,
                     n_ctx_slot=512, token_budget=64, make_segment=Segment,
                     n_vocab=runner.n_vocab)
    texts: dict[str, list[str]] = {job.request_id: [] for job in jobs}
    ends: dict[str, Any] = {}
    for job in jobs:
        events, admitted = eng.admit(job)
        if not admitted:
            ends[job.request_id] = events[0]
    while eng.has_work():
        by_frontend, _ = eng.step()
        for ev in by_frontend.get("fe", []):
            if isinstance(ev, TextDelta):
                texts[ev.request_id].append(ev.text)
            elif isinstance(ev, (Finished, Failed)):
                ends[ev.request_id] = ev
    return {rid: ("".join(parts), ends[rid]) for rid, parts in texts.items()}


def _job(rid: str, grammar: Grammar | None, bias: dict[int, float], seed: int,
         max_tokens: int = 120) -> ChatJob:
    return ChatJob(rid, "fe", "k", "tiny", [ChatMessage("user", "Hello there")],
                   RequestedSampling(temperature=1.0, seed=seed, max_tokens=max_tokens,
                                     logit_bias=bias), grammar)


def test_lazy_grammar_starts_at_its_trigger(runner: LlamaRunner) -> None:
    """Free text until "<" (biased, so it comes), then exactly "<" digits ">" and the end; a
    free request beside it is not constrained."""
    lt = {t: 5.0 for t in range(runner.n_vocab) if runner.piece(t) in (b"<", b" <")}
    lazy = Grammar('root ::= "<" [0-9]{1,3} ">"', triggers=["<"])
    out = _run(runner, [_job(f"lazy{seed}", lazy, lt, seed) for seed in range(3)]
               + [_job("free", None, lt, 7, max_tokens=60)])
    for seed in range(3):
        text, end = out[f"lazy{seed}"]
        assert isinstance(end, Finished) and end.finish_reason == "stop", (text, end)
        head, sep, tail = text.partition("<")
        assert sep and "<" not in head, text
        assert tail[:-1].isdigit() and tail.endswith(">") and len(tail) <= 4, text
    text, end = out["free"]
    assert isinstance(end, Finished) and end.finish_reason == "length"


def test_lazy_grammar_without_its_trigger_is_free_text(runner: LlamaRunner) -> None:
    lazy = Grammar('root ::= "@@" [0-9]', triggers=["@@"])
    text, end = _run(runner, [_job("lazy", lazy, {}, 3, max_tokens=30)])["lazy"]
    assert isinstance(end, Finished) and end.finish_reason == "length"
    assert "@@" not in text


@pytest.mark.parametrize("gbnf", ['root ::= "a" undefined', "root ::= [a-", 'root ::= root "a"',
                                  "not a grammar"])
def test_an_unparsable_grammar_fails_the_request_not_the_worker(runner: LlamaRunner,
                                                                gbnf: str) -> None:
    out = _run(runner, [_job("bad", Grammar(gbnf, param="tools"), {}, 1),
                        _job("good", None, {}, 2, max_tokens=5)])
    end = out["bad"][1]
    assert isinstance(end, Failed) and end.param == "tools", end
    assert end.kind is ErrorKind.INVALID_REQUEST
    good = out["good"][1]
    assert isinstance(good, Finished) and good.completion_tokens == 5


def test_an_empty_grammar_ends_at_once(runner: LlamaRunner) -> None:
    text, end = _run(runner, [_job("empty", Grammar("root ::= "), {}, 1)])["empty"]
    assert isinstance(end, Finished) and (end.finish_reason, end.completion_tokens, text) == (
        "stop", 0, "")
