"""Which of a model's workers takes a request: prefix affinity, then load. Pure functions.

The fair queue (scheduler/fair_queue.py) decides *which request* goes next, across API keys and
across all of a model's workers; this module only decides *which worker* runs it. A worker's
llama.cpp slots keep the KV cache of what they last ran (engine/slots.py reuses its longest
common token prefix with a new prompt), so a conversation's next turn sent to the worker that
ran the turn before skips prefilling everything up to it. Sent anywhere else, that prefix is
prefilled again, and the other worker's slot holding it is evicted later for nothing.

The request's and each worker's prefixes are compared as prefix-block hashes
(scheduler/prefix_blocks.py). What a worker holds is what it last reported (``SlotFreed.cache``:
every slot's blocks) together with the blocks of the requests routed to it that are still
running, which will be in its slots when they end.

The rule, among the workers with room for the request (a full worker is never chosen):

1. the longest start of the request's prompt held, in bytes of its messages, if at least
   MIN_MATCH_BYTES (``Routing = "prefix"``; ``"even"`` skips this and is the old rule, which
   spread requests evenly);
2. then the most free slots (the least loaded);
3. then the fewest blocks held: a request that matches nowhere goes where it evicts least, so
   new conversations spread over idle workers instead of all evicting the first one's cache;
4. then the order given (the first).

Sources: the shape is SGLang's router's ``cache_aware`` policy (per worker, an approximate
record of the request text it was sent; the longest match above a threshold, else the worker
with the smallest record; sglang-gateway and vllm-router docs) and llm-d's prefix-cache scorer;
written for hearth's messages. Unlike SGLang's router, the record is what the workers report
their slots hold (as NVIDIA Dynamo's KV router has workers report), not a guess from what was
sent; and no load-imbalance threshold overrides a match (a worker with room that holds more is
always preferred): a worker's slots bound its load here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from hearth.scheduler.prefix_blocks import Block

Routing = Literal["prefix", "even"]

# A held prefix shorter than this does not count: it saves a few dozen tokens of prefill at
# most (about 32 tokens at ~4 bytes a token, the engine's own floor for reusing a slot's cache,
# scheduler/policy.py REUSE_MIN), which is worth less than a free slot elsewhere. So a short
# system prompt every conversation shares does not pull them all onto one worker.
MIN_MATCH_BYTES = 128


@dataclass(frozen=True)
class Candidate:
    """One worker as routing sees it: ``free`` slots of the request's kind now, and the block
    hashes its slots hold (any order; a set is fastest)."""

    free: int
    held: Collection[bytes] = ()


def matched(blocks: Sequence[Block], held: Collection[bytes]) -> int:
    """How many bytes of the request's prompt ``held`` has: the end of the deepest of its
    blocks held (the hashes are chained: block i's covers everything before it); 0 if none."""
    for block in reversed(blocks):
        if block.hash in held:
            return block.end
    return 0


def pick(blocks: Sequence[Block], candidates: Sequence[Candidate], need: int = 1,
         routing: Routing = "prefix", min_bytes: int = MIN_MATCH_BYTES,
         ) -> tuple[int, int] | None:
    """The chosen candidate's index and how many bytes of the request's prompt it holds
    (0 below ``min_bytes``), or None when no candidate has ``need`` free slots. See the
    module's docstring for the rule."""
    best: tuple[int, int, int] | None = None
    chosen: tuple[int, int] | None = None
    for index, cand in enumerate(candidates):
        if cand.free < need:
            continue
        held = matched(blocks, cand.held) if routing == "prefix" and blocks else 0
        if held < min_bytes:
            held = 0
        tie = -len(cand.held) if routing == "prefix" else 0
        score = (held, cand.free, tie)
        if best is None or score > best:
            best, chosen = score, (index, held)
    return chosen
