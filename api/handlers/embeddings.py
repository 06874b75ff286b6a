"""POST {prefix}/embeddings — OpenAI's embeddings, computed by the model's worker.

Inputs: a string, a list of strings, a list of token ids or a list of lists of token ids (at
most 2048). Vectors are L2-normalised, in input order; ``encoding_format: "base64"`` gives the
little-endian float32 bytes, base64-encoded, exactly as the official SDKs decode them.
``dimensions`` travels with the job: the scheduler refuses a width other than the model's own
(from its GGUF header) before queueing, and the worker (which asks llama.cpp) checks it again.
"""

from __future__ import annotations

import array
import base64
import sys

from hearth.api import openai_types
from hearth.api.handlers.jobs import JobHandler
from hearth.scheduler.messages import Embedded, EmbedJob


class EmbeddingsHandler(JobHandler):
    endpoint = "embeddings"
    id_prefix = "embd-"

    async def post(self) -> None:
        req = openai_types.parse_embedding_request(self.body)
        self.log_model = req.model
        texts, tokens = openai_types.embedding_inputs(req)
        entry = self.resolve_model(req.model)
        frontend, key_name = self.job_owner()
        job = EmbedJob(self.new_request_id(), frontend, key_name, entry.id, texts, tokens,
                       dimensions=req.dimensions)
        async with self.submitted(job) as event:
            if event is None:
                return
            assert isinstance(event, Embedded)
        self.count_usage(event.prompt_tokens, 0)
        data = [openai_types.Embedding(i, _encode(vec, req.encoding_format))
                for i, vec in enumerate(event.vectors)]
        self.write_json(openai_types.EmbeddingList(
            data=data, model=req.model,
            usage=openai_types.EmbeddingUsage(event.prompt_tokens, event.prompt_tokens)))


def _encode(vec: bytes, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vec).decode("ascii")
    floats = array.array("f")
    floats.frombytes(vec)
    if sys.byteorder == "big":
        floats.byteswap()  # the worker sends little-endian
    return floats.tolist()
