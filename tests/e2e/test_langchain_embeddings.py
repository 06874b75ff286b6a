"""LangChain's ``OpenAIEmbeddings`` (langchain-openai) against hearth, set up as the README
says: ``check_embedding_ctx_length=False``, so it sends the texts themselves.

By default it tokenizes each text with OpenAI's tokenizer (tiktoken, whose vocabulary file it
downloads) and sends the token ids; hearth cannot tell those ids from the model's own and
would embed them as other words. With the setting off it sends strings, which hearth
tokenizes with the model's vocabulary: so its vectors must equal the official SDK's for the
same texts.
"""

from __future__ import annotations

import asyncio
import math

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID as MODEL
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr
from test_embeddings_sdk import DIM, cosine
from test_openai_sdk import client

pytestmark = pytest.mark.e2e

TEXTS = ["A hearth keeps a home warm.", "Stock markets fell sharply today.",
         "東京と京都は日本の都市です。"]


def embeddings(server: Server, http: openai.DefaultHttpxClient | None = None,
               ahttp: openai.DefaultAsyncHttpxClient | None = None,
               **kw: object) -> OpenAIEmbeddings:
    """OpenAIEmbeddings on ``server`` over HTTP clients the test closes (LangChain never closes
    the ones it makes, and an unclosed socket is a ResourceWarning, an error here)."""
    args: dict[str, object] = {"model": MODEL, "base_url": server.base_url,
                               "api_key": SecretStr(server.api_key or ""),
                               "check_embedding_ctx_length": False, "max_retries": 0,
                               "http_client": http, "http_async_client": ahttp}
    args.update(kw)
    return OpenAIEmbeddings(**args)  # type: ignore[arg-type]


def sdk_vectors(server: Server, texts: list[str]) -> list[list[float]]:
    with client(server) as c:
        return [d.embedding for d in c.embeddings.create(model=MODEL, input=texts).data]


def test_documents_are_sent_as_text(gemma_server: Server) -> None:
    with openai.DefaultHttpxClient() as http:
        got = embeddings(gemma_server, http).embed_documents(TEXTS)
    want = sdk_vectors(gemma_server, TEXTS)
    assert len(got) == len(TEXTS)
    for vector, same in zip(got, want, strict=True):
        assert len(vector) == DIM
        assert abs(math.sqrt(sum(x * x for x in vector)) - 1.0) < 1e-4
        assert cosine(vector, same) > 0.999
    assert cosine(got[0], got[1]) < 0.999  # different texts, different vectors


def test_query_equals_the_same_document(gemma_server: Server) -> None:
    with openai.DefaultHttpxClient() as http:
        emb = embeddings(gemma_server, http)
        query = emb.embed_query(TEXTS[0])
        document = emb.embed_documents([TEXTS[0]])[0]
    assert len(query) == DIM
    assert cosine(query, document) > 0.999


def test_async_and_small_chunks_keep_the_order(gemma_server: Server) -> None:
    # chunk_size=1: one request per text, so the order is LangChain's, kept across requests
    async def run() -> list[list[float]]:
        async with openai.DefaultAsyncHttpxClient() as ahttp:
            with openai.DefaultHttpxClient() as http:
                emb = embeddings(gemma_server, http, ahttp, chunk_size=1)
                return await emb.aembed_documents(TEXTS)

    got = asyncio.run(run())
    want = sdk_vectors(gemma_server, TEXTS)
    assert [cosine(g, w) > 0.999 for g, w in zip(got, want, strict=True)] == [True] * 3
