"""Structured outputs with the official openai SDK, unchanged, on the default model
(smollm2-135m-instruct): ``client.chat.completions.parse(response_format=PydanticModel)`` and
the streaming helper ``client.chat.completions.stream(response_format=...)`` return a parsed
model instance; a Pydantic field the grammar cannot enforce (``ge=``) is a 400 naming
response_format."""

from __future__ import annotations

from typing import Annotated, Literal

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "system", "content": "You answer in JSON."},
            {"role": "user", "content": "Name up to three colours of the sky and say how "
                                        "you feel about them."}]


class Sky(BaseModel):
    colours: Annotated[list[str], Field(max_length=3)]
    count: int
    mood: Literal["happy", "sad", "calm"]
    note: str | None


class Counted(BaseModel):
    count: Annotated[int, Field(ge=0)]


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                         timeout=120)


def test_parse_into_a_pydantic_model(default_server: Server) -> None:
    with _client(default_server) as c:
        out = c.chat.completions.parse(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                       response_format=Sky, max_tokens=300, temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason == "stop"
    sky = choice.message.parsed
    assert isinstance(sky, Sky)
    assert len(sky.colours) <= 3 and sky.mood in ("happy", "sad", "calm")


def test_stream_helper_parses_the_same_shape(default_server: Server) -> None:
    with _client(default_server) as c:
        with c.chat.completions.stream(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                       response_format=Sky, max_tokens=300,
                                       temperature=0) as stream:
            deltas = [ev.delta for ev in stream if ev.type == "content.delta"]
            final = stream.get_final_completion()
    assert deltas, "the answer came in pieces"
    assert final.choices[0].finish_reason == "stop"
    assert isinstance(final.choices[0].message.parsed, Sky)
    assert "".join(deltas) == final.choices[0].message.content


def test_a_field_the_grammar_cannot_enforce_is_a_400(default_server: Server) -> None:
    with _client(default_server) as c, pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.parse(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                 response_format=Counted, max_tokens=20)
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == "response_format" and "'minimum'" in body["message"]
