"""POST {prefix}/tokenize and POST {prefix}/detokenize — the model's own tokenizer.

Request and answer shapes follow llama.cpp's server (``content`` or ``messages`` → ``tokens``,
optionally with each token's piece; ``tokens`` → ``content``), with a ``model`` field (default:
the server's default model). A worker of the model answers (a ``TokenizeJob``, which takes no
slot): the tokenizer is llama.cpp's, loaded with the model, and the api never loads llama.cpp.
Asking for a model that is not loaded loads it, as any request does.
"""

from __future__ import annotations

from hearth.api import completion_types as ct
from hearth.api.handlers.jobs import JobHandler
from hearth.api.openai_types import check_tool_call_ids, messages_of
from hearth.scheduler.messages import Tokenized, TokenizeJob
from msgspec import UnsetType


class TokenizeHandler(JobHandler):
    endpoint = "tokenize"
    id_prefix = "tok-"

    async def post(self) -> None:
        req = ct.parse_tokenize_request(self.body)
        model = req.model or self.state.settings.model
        self.log_model = model
        messages = [] if isinstance(req.messages, UnsetType) else messages_of(req.messages)
        check_tool_call_ids(messages)
        content = "" if isinstance(req.content, UnsetType) else req.content
        entry = self.resolve_model(model)
        frontend, key_name = self.job_owner()
        job = TokenizeJob(self.new_request_id(), frontend, key_name, entry.id,
                          text=content, messages=messages,
                          add_special=req.add_special, with_pieces=req.with_pieces)
        async with self.submitted(job) as event:
            if event is None:
                return
            assert isinstance(event, Tokenized)
        tokens: list[int | ct.TokenPiece] = list(event.tokens)
        if req.with_pieces:
            tokens = list(ct.pieces(event.tokens, event.pieces))
        self.write_json(ct.TokenizeResponse(tokens))


class DetokenizeHandler(JobHandler):
    endpoint = "detokenize"
    id_prefix = "tok-"

    async def post(self) -> None:
        req = ct.parse_detokenize_request(self.body)
        model = req.model or self.state.settings.model
        self.log_model = model
        entry = self.resolve_model(model)
        frontend, key_name = self.job_owner()
        job = TokenizeJob(self.new_request_id(), frontend, key_name, entry.id,
                          tokens=req.tokens, detokenize=True)
        async with self.submitted(job) as event:
            if event is None:
                return
            assert isinstance(event, Tokenized)
        self.write_json(ct.DetokenizeResponse(event.text))
