"""scheduler/routing.py and scheduler/prefix_blocks.py: which worker takes a request, and the
block hashes it is decided by. Pure functions, no workers."""

from __future__ import annotations

import msgspec
from hearth.scheduler.messages import ChatJob, ChatMessage, RawPrompt, RequestedSampling, ToolSpec
from hearth.scheduler.prefix_blocks import (
    BLOCK_BYTES,
    HASH_BYTES,
    MAX_BLOCKS,
    leading_blocks,
    prefix_blocks,
    split,
)
from hearth.scheduler.routing import MIN_MATCH_BYTES, Candidate, matched, pick


def chat(*texts: str, tools: list[ToolSpec] | None = None) -> ChatJob:
    roles = ("user", "assistant")
    return ChatJob("r", "fe", "k", "m", [ChatMessage(roles[i % 2], t) for i, t in enumerate(texts)],
                   RequestedSampling(), tools=tools or [])


def completion(text: str = "", tokens: list[int] | None = None) -> ChatJob:
    return ChatJob("r", "fe", "k", "m", [], RequestedSampling(),
                   prompt=RawPrompt(text=text, tokens=tokens or []))


# ---- prefix blocks --------------------------------------------------------------------------

def test_a_conversation_s_next_turn_begins_with_the_earlier_turn_s_blocks() -> None:
    one = split(prefix_blocks(chat("hello")))
    two = split(prefix_blocks(chat("hello", "hi there", "how are you?")))
    assert len(one) == 1 and len(two) == 3  # one block per (short) message
    assert two[:1] == one
    other = split(prefix_blocks(chat("goodbye", "hi there", "how are you?")))
    assert set(other).isdisjoint(two)  # chained: nothing after a difference matches
    ends = [b.end for b in leading_blocks(chat("hello", "hi there"))]
    overhead = 7  # msgpack: an array header, two string headers and four empty fields
    assert ends == [overhead + len("user" + "hello"),
                    2 * overhead + len("user" + "hello" + "assistant" + "hi there")]


def test_the_same_job_gives_the_same_bytes_after_a_round_trip() -> None:
    job = chat("hello", "hi", tools=[ToolSpec("f", "does f", '{"type": "object"}')])
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(job), type=ChatJob)
    assert prefix_blocks(again) == prefix_blocks(job)
    assert len(prefix_blocks(job)) == 2 * HASH_BYTES


def test_tools_change_every_block() -> None:
    plain = split(prefix_blocks(chat("hello", "hi")))
    tooled = split(prefix_blocks(chat("hello", "hi", tools=[ToolSpec("f")])))
    assert len(tooled) == 2 and set(plain).isdisjoint(tooled)


def test_a_long_message_is_cut_into_blocks_and_only_the_first_ones_count() -> None:
    long = "x" * (BLOCK_BYTES * 3)
    blocks = leading_blocks(chat(long))
    assert len(blocks) == 4  # the message's msgpack is a few bytes over 3 KiB
    assert [b.end for b in blocks[:3]] == [BLOCK_BYTES, 2 * BLOCK_BYTES, 3 * BLOCK_BYTES]
    huge = split(prefix_blocks(chat("y" * BLOCK_BYTES * (MAX_BLOCKS + 5))))
    assert len(huge) == MAX_BLOCKS
    many = split(prefix_blocks(chat(*[f"m{i}" for i in range(MAX_BLOCKS * 2)])))
    assert len(many) == MAX_BLOCKS
    assert prefix_blocks(chat()) == b""


def test_a_growing_completion_prompt_keeps_its_full_blocks() -> None:
    text = "".join(f"line {i}\n" for i in range(400))  # several KiB
    short = split(prefix_blocks(completion(text)))
    longer = split(prefix_blocks(completion(text + "more text")))
    assert longer[:len(short) - 1] == short[:-1]  # the last, partial block differs
    assert short[-1] not in longer
    assert set(short).isdisjoint(split(prefix_blocks(chat(text))))
    toks = split(prefix_blocks(completion(tokens=list(range(5000)))))
    more = split(prefix_blocks(completion(tokens=[*range(5000), 7])))
    assert more[:len(toks) - 1] == toks[:-1]


# ---- routing --------------------------------------------------------------------------------

A, B, C, D = ("a" * 200, "b" * 200, "c" * 200, "d" * 200)  # each over MIN_MATCH_BYTES


def held(job: ChatJob) -> set[bytes]:
    return set(split(prefix_blocks(job)))


def test_matched_is_the_end_of_the_deepest_block_held() -> None:
    blocks = leading_blocks(chat(A, B, C))
    assert matched(blocks, set()) == 0
    assert matched(blocks, held(chat(A))) == blocks[0].end
    assert matched(blocks, held(chat(A, B, C, D))) == blocks[2].end
    assert matched(blocks, held(chat(B))) == 0


def test_the_longest_prefix_wins_over_load() -> None:
    blocks = leading_blocks(chat(A, B, C))
    cands = [Candidate(4, held(chat(D))), Candidate(1, held(chat(A, B))),
             Candidate(3, held(chat(A)))]
    assert pick(blocks, cands) == (1, blocks[1].end)


def test_ties_go_to_the_least_loaded() -> None:
    blocks = leading_blocks(chat(A, B, C))
    cands = [Candidate(1, held(chat(A))), Candidate(2, held(chat(A, D)))]
    assert pick(blocks, cands) == (1, blocks[0].end)


def test_a_full_worker_is_never_chosen() -> None:
    blocks = leading_blocks(chat(A, B, C))
    cands = [Candidate(0, held(chat(A, B, C))), Candidate(1)]
    assert pick(blocks, cands) == (1, 0)
    assert pick(blocks, [Candidate(0, held(chat(A)))]) is None
    # a request of n choices needs n free slots on one worker
    assert pick(blocks, [Candidate(1, held(chat(A))), Candidate(2)], need=2) == (1, 0)


def test_no_hashes_is_the_old_even_spreading() -> None:
    blocks = leading_blocks(chat(A))
    assert pick(blocks, [Candidate(1), Candidate(3), Candidate(3)]) == (1, 0)
    assert pick([], [Candidate(1, held(chat(A))), Candidate(2)]) == (1, 0)
    # routing "even" ignores what the workers hold
    assert pick(blocks, [Candidate(1, held(chat(A))), Candidate(2)], routing="even") == (1, 0)
    assert pick(blocks, [Candidate(2, held(chat(A))), Candidate(2)], routing="even") == (0, 0)


def test_a_short_shared_prefix_does_not_outweigh_load() -> None:
    system = "You are a helpful assistant."
    assert leading_blocks(chat(system))[0].end < MIN_MATCH_BYTES
    blocks = leading_blocks(chat(system, "a new question"))
    assert pick(blocks, [Candidate(1, held(chat(system, B))), Candidate(2)]) == (1, 0)


def test_a_new_conversation_goes_where_it_evicts_least() -> None:
    blocks = leading_blocks(chat(C))
    cands = [Candidate(2, held(chat(A, B)) | held(chat(D))), Candidate(2, held(chat(B)))]
    assert pick(blocks, cands) == (1, 0)
