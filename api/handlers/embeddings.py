"""POST {prefix}/embeddings — OpenAI's embeddings, computed by the model's worker.

Inputs: a string, a list of strings, a list of token ids or a list of lists of token ids (at
most 2048). Vectors are L2-normalised, in input order; ``encoding_format: "base64"`` gives the
little-endian float32 bytes, base64-encoded, exactly as the official SDKs decode them.
"""

from __future__ import annotations

import array
import base64
import sys

from hearth.api import wire
from hearth.api.handlers.base import AppState, BaseHandler
from hearth.scheduler import errors
from hearth.scheduler.messages import Embed, Embedded, Failed


class EmbeddingsHandler(BaseHandler):
    endpoint = "embeddings"

    def initialize(self, state: AppState) -> None:
        super().initialize(state)
        self._rid: str | None = None

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self._rid is not None:
            self.state.bridge.cancel(self._rid)

    async def post(self) -> None:
        req = wire.parse_embedding_request(self.body)
        self.log_model = req.model
        texts, tokens = wire.embedding_inputs(req)
        entry = self.state.registry.resolve(req.model)  # a file stem, or an alias of one
        if entry is None:
            raise errors.ModelNotFound(f"The model '{req.model}' does not exist", param="model")
        self.model_label = entry.id
        if req.dimensions is not None:
            dim = entry.info.arch_value("embedding_length") if entry.info else None
            if req.dimensions != dim:
                raise errors.InvalidRequest(
                    f"'{req.model}' does not support shortening its embeddings: its vectors "
                    f"have {dim} dimensions.", param="dimensions")
        bridge = self.state.bridge
        rid = f"embd-{bridge.new_request_id()[len('chatcmpl-'):]}"
        assert self.key_name is not None
        self._rid = rid
        try:
            _, event = await bridge.run(
                Embed(rid, bridge.frontend, self.key_name, entry.id, texts, tokens))
        finally:
            bridge.done(rid)
        if event is None:
            return
        if isinstance(event, Failed):
            raise errors.rebuild(event.kind, event.message, event.param)
        assert isinstance(event, Embedded)
        self.state.metrics.usage(self.model_label, event.prompt_tokens, 0)
        self.prompt_tokens, self.completion_tokens = event.prompt_tokens, 0
        data = [wire.Embedding(i, _encode(vec, req.encoding_format))
                for i, vec in enumerate(event.vectors)]
        self.write_json(wire.EmbeddingList(
            data=data, model=req.model,
            usage=wire.EmbeddingUsage(event.prompt_tokens, event.prompt_tokens)))


def _encode(vec: bytes, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vec).decode("ascii")
    floats = array.array("f")
    floats.frombytes(vec)
    if sys.byteorder == "big":
        floats.byteswap()  # the worker sends little-endian
    return floats.tolist()
