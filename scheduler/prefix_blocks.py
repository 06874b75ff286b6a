"""Prefix blocks: a compact, comparable summary of how a chat job's prompt begins, for routing a
request to the worker whose slots already hold the start of it (scheduler/routing.py).

Text, not tokens. The scheduler never tokenizes: a worker does, with the model's own
vocabulary, after the request is routed, and tokenizing in the scheduler too would mean loading
every model's vocabulary there and tokenizing each prompt twice (about 0.9 us a byte on the
2-core test machine, README "Big prompts"). So both sides hash the one thing they both have:
the job as the api sent it. A worker hashes each job it admits (engine/slots.py) and reports
the hashes of the jobs its slots still hold; the scheduler hashes the request it routes. A
job's prompt inputs are cut into *pieces* that keep their order and their boundaries from one
turn of a conversation to the next:

* a chat: each message (msgpack of the ChatMessage Struct's fields as a tuple: their order is
  fixed, so the same message gives the same bytes in the api, the scheduler and the worker);
  its ``tools`` (rendered into the system prompt by most templates) seed the chain, so they
  are in every block;
* a completion: its prompt's ``text`` (UTF-8), or its ``tokens`` (as decimal text). A
  fill-in-the-middle ``suffix`` is left out: it comes after the prefix in the prompt.

Each piece is cut into blocks of at most BLOCK_BYTES, and block ``i``'s hash is BLAKE2b
(HASH_BYTES bytes) of block ``i - 1``'s hash (for the first, of the job's kind and tools)
followed by the block: a chained hash, so two jobs share block ``i``'s hash only if they share
everything up to the end of block ``i`` (up to a 2**-64 collision, which only routes one
request worse). Only the first MAX_BLOCKS blocks count: at least MAX_BLOCKS messages or
MAX_BLOCKS KiB of a conversation. A conversation's next turn repeats the earlier turn's
messages, so its blocks begin with all of the earlier turn's blocks; the rendered prompt (and so
the worker's token-level prefix cache) begins the same way wherever the chat template renders
messages in order, which is what templates do. Where it does not (a template that rewrites
earlier turns, e.g. drops old reasoning), routing only guesses worse; the worker's own prefix
reuse, by tokens, decides what is really reused.

The summary is bytes: HASH_BYTES per block, in order (``split`` gives the list back).
"""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import blake2b
from typing import NamedTuple

import msgspec
from hearth.scheduler.messages import ChatJob

BLOCK_BYTES = 1024
MAX_BLOCKS = 32
HASH_BYTES = 8

_encoder = msgspec.msgpack.Encoder()
_LIMIT = MAX_BLOCKS * BLOCK_BYTES  # characters of one text that can reach a counted block


class Block(NamedTuple):
    """One leading block of a job: its chained hash, and where it ends (bytes of the job's
    pieces up to and including it: how much of the prompt a worker holding it holds)."""

    hash: bytes
    end: int


def _pieces(job: ChatJob) -> Iterator[bytes]:
    if job.prompt is None:
        for message in job.messages:
            # positional (a tuple), so a block's bytes are about the message's own text; long
            # texts cut first (blocks past MAX_BLOCKS never count), so a request of megabytes
            # costs the scheduler no copy of them
            fields = msgspec.structs.astuple(message)
            yield _encoder.encode(tuple(f[:_LIMIT] if isinstance(f, str) else f
                                        for f in fields))
    elif job.prompt.tokens:
        limit = _LIMIT  # enough tokens' text for every block
        text, size = [], 0
        for token in job.prompt.tokens:
            part = f"{token},"
            text.append(part)
            size += len(part)
            if size >= limit:
                break
        yield "".join(text).encode()
    else:
        yield job.prompt.text[:_LIMIT].encode("utf-8", "replace")


def _seed(job: ChatJob) -> bytes:
    """The chain's start: the job's kind, and a chat's tools (which most templates render into
    the system prompt, before every message). Not a block of its own: it is part of every one."""
    if job.prompt is None:
        return b"chat" + _encoder.encode(job.tools)
    return b"tokens" if job.prompt.tokens else b"text"


def leading_blocks(job: ChatJob) -> list[Block]:
    """The job's first MAX_BLOCKS blocks, in order."""
    out: list[Block] = []
    prev = blake2b(_seed(job), digest_size=HASH_BYTES).digest()
    end = 0
    for piece in _pieces(job):
        for start in range(0, len(piece), BLOCK_BYTES):
            chunk = piece[start:start + BLOCK_BYTES]
            prev = blake2b(prev + chunk, digest_size=HASH_BYTES).digest()
            end += len(chunk)
            out.append(Block(prev, end))
            if len(out) >= MAX_BLOCKS:
                return out
    return out


def prefix_blocks(job: ChatJob) -> bytes:
    """The job's leading block hashes, HASH_BYTES each, at most MAX_BLOCKS of them (what a
    worker reports of the jobs its slots hold)."""
    return b"".join(block.hash for block in leading_blocks(job))


def split(blocks: bytes) -> list[bytes]:
    """``prefix_blocks``' bytes as a list of block hashes, in order."""
    return [blocks[i:i + HASH_BYTES] for i in range(0, len(blocks), HASH_BYTES)]
