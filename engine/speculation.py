"""N-gram (prompt-lookup) speculative decoding for one slot: the draft finder, the adaptive
draft length and the greedy verification of a draft.

How a step drafts (engine/slots.py drives it): a greedy slot looks up the last ``n`` tokens of
its sequence (prompt and output so far) at their most recent earlier occurrence and proposes
the up to K tokens that followed there (no second model: the text itself is the draft model,
which pays off when the answer repeats its context — code edits, quotes, rewrites). The draft
tokens go into the step's one ``llama_batch`` right after the slot's decode token, each with a
logits row. The slot's greedy pick at each row is compared with the next draft token: the
longest agreeing prefix is accepted, plus the pick at the first disagreement (or after the last
draft token), so one step yields 1 to K + 1 tokens and the output is the one plain greedy
decoding gives (llama.cpp's CPU kernels round a many-token batch slightly differently from a
one-token one, so a near-tie between two tokens may still go the other way: see README
"Determinism"). The rejected draft positions are removed from the slot's KV cache
(``llama_memory_seq_rm``) before the next step.

Only greedy requests draft (temperature 0, no penalties, no grammar, no logprobs): exact-match
acceptance keeps their output unchanged; a sampled request would need the speculative-sampling
rule (accept with probability p(x), else resample from p without x), which is not built yet.

Adaptive: a slot whose drafts keep failing stops drafting for a while (:class:`DraftLength`).
All state is per request, made at admission (llama.cpp issue #27852: an n-gram cache kept
across requests sank its acceptance from 86 % to 11 %). Nothing here touches llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hearth.scheduler.messages import ResolvedSampling

# After this many drafts in a row of which no token was accepted, the slot stops drafting for
# a while: a failed draft costs its batch positions for nothing.
MISS_LIMIT = 3
PAUSE_MIN = 16  # tokens generated without drafting after the first run of misses
PAUSE_MAX = 256  # the pause doubles at each run of misses up to this; an accepted draft resets it
LENGTH_MIN = 2  # a slot's draft length never falls below this (while it drafts at all)


class NgramDrafter:
    """Finds drafts in one sequence: the tokens that followed the most recent earlier
    occurrence of its last ``n`` tokens — or, when fewer than the draft's length follow that
    one (inside a run that repeats itself, the latest occurrence ends just before the end),
    the first occurrence's. While the sequence goes on copying the place the last draft came
    from (its n tokens before the place the copy has reached agree with the sequence's last
    n), the draft continues from there: code repeats its n-grams, and the latest occurrence of
    one is often in another part of the file than the one being copied.

    The index maps each n-gram to the positions just after its first and its latest
    occurrence and is kept up to date incrementally (each token is indexed once), so a lookup
    costs O(n), not a scan of the sequence."""

    def __init__(self, tokens: Sequence[int], n: int) -> None:
        if n < 1:
            raise ValueError("the n-gram size must be at least 1")
        self.n = n
        self.tokens: list[int] = list(tokens)
        self._first: dict[tuple[int, ...], int] = {}
        self._last: dict[tuple[int, ...], int] = {}
        self._indexed = n  # n-grams ending before this position are in the index
        self._copying: tuple[int, int] | None = None  # (source start, sequence length) then

    def push(self, token: int) -> None:
        """Append a token of the sequence (an accepted output token)."""
        self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` draft tokens to follow the sequence (empty: its last n-gram was not
        seen before, or ``k`` < 1)."""
        toks, n = self.tokens, self.n
        if k < 1 or len(toks) <= n:
            return []
        # index every n-gram that ends before the last position (not the last one itself,
        # which is what is looked up), later occurrences overwriting earlier ones
        for end in range(self._indexed, len(toks)):
            gram = tuple(toks[end - n:end])
            self._last[gram] = end
            self._first.setdefault(gram, end)
        self._indexed = max(self._indexed, len(toks))
        if self._copying is not None:  # the place the last draft came from, moved on since
            source, then = self._copying
            start = source + len(toks) - then
            if n <= start < len(toks) - 1 and toks[start - n:start] == toks[-n:]:
                self._copying = (start, len(toks))
                return toks[start:start + k]
        gram = tuple(toks[-n:])
        latest = self._last.get(gram)
        if latest is None:
            self._copying = None
            return []
        start = latest if len(toks) - latest >= k else self._first[gram]
        self._copying = (start, len(toks))
        return toks[start:start + k]


class DraftLength:
    """A slot's adaptive draft length and pause.

    ``want()`` is how many draft tokens the slot asks for next (0 while paused);
    :meth:`record` takes each verified draft's outcome: the length follows the acceptance
    (twice the tokens accepted, between ``LENGTH_MIN`` and ``k_max``), and after
    ``MISS_LIMIT`` drafts in a row that were wholly rejected the slot pauses for
    ``PAUSE_MIN`` generated tokens, doubling with every further run of misses up to
    ``PAUSE_MAX``; any accepted draft token ends a run and resets the pause."""

    def __init__(self, k_max: int) -> None:
        self.k_max = k_max
        self.length = k_max
        self.misses = 0  # drafts in a row of which nothing was accepted
        self.paused = 0  # generated tokens still to go without drafting
        self._pause = PAUSE_MIN
        self.proposed = self.accepted = 0  # draft tokens, over the request

    def want(self) -> int:
        return 0 if self.paused > 0 or self.k_max < 1 else self.length

    def generated(self, n_tokens: int) -> None:
        """``n_tokens`` more output tokens (a pause counts down in tokens)."""
        self.paused = max(0, self.paused - n_tokens)

    def record(self, proposed: int, accepted: int) -> None:
        """One verified draft: ``accepted`` of its ``proposed`` tokens were accepted."""
        if proposed < 1:
            return
        self.proposed += proposed
        self.accepted += accepted
        self.length = max(LENGTH_MIN, min(self.k_max, 2 * accepted))
        if accepted:
            self.misses = 0
            self._pause = PAUSE_MIN
            return
        self.misses += 1
        if self.misses >= MISS_LIMIT:
            self.paused = self._pause
            self._pause = min(PAUSE_MAX, self._pause * 2)
            self.misses = 0


def drafts(params: ResolvedSampling, *, setting: bool, constrained: bool) -> bool:
    """Whether a new request drafts: its ``speculative_decoding`` (None: the worker's
    ``setting``) says so, and it is plain greedy decoding — temperature 0, no penalties, and
    not ``constrained`` (a grammar, logprobs or a scored echo)."""
    wanted = setting if params.speculative_decoding is None else params.speculative_decoding
    return (wanted and params.temperature <= 0 and not constrained
            and not (params.frequency_penalty or params.presence_penalty))


class Speculation:
    """One request's drafting state: its :class:`NgramDrafter` over prompt + output and its
    :class:`DraftLength`. Made at admission, dropped with the request."""

    def __init__(self, prompt: Sequence[int], *, n: int, k_max: int) -> None:
        self.drafter = NgramDrafter(prompt, n)
        self.length = DraftLength(k_max)
        self.draft: list[int] = []  # proposed for the coming step (cut to what the plan grants)

    def propose(self, limit: int) -> list[int]:
        """The draft to ask the step plan for: at most ``limit`` tokens (what max_tokens and
        the context leave), at most what the adaptive length wants now."""
        self.draft = self.drafter.propose(min(limit, self.length.want()))
        return self.draft

    def verify(self, draft: Sequence[int], pick: Callable[[int], int]) -> list[int]:
        """:func:`verify_greedy`, with the outcome recorded in the draft length."""
        picks = verify_greedy(draft, pick)
        self.length.record(len(draft), len(picks) - 1)
        return picks

    def accepted_token(self, token: int) -> None:
        """An output token the request keeps (streamed, or ending it)."""
        self.drafter.push(token)
        self.length.generated(1)


def verify_greedy(draft: Sequence[int], pick: Callable[[int], int]) -> list[int]:
    """The tokens a greedy slot keeps from a step that fed its decode token and ``draft``:
    ``pick(j)`` is the greedy choice at logits row j (row 0 follows the decode token, row j
    follows draft token j - 1). Returns the picks up to and including the first that differs
    from the draft (or the one after the whole draft): always 1 to len(draft) + 1 tokens, the
    first len(result) - 1 of which equal the draft's first ones. Rows after the first
    disagreement are never read."""
    out: list[int] = []
    for j in range(len(draft) + 1):
        token = pick(j)
        out.append(token)
        if j == len(draft) or token != draft[j]:
            break
    return out


def kept_positions(pos: int, n_accepted_draft: int) -> int:
    """A slot fed its decode token at ``pos`` and a draft after it; ``n_accepted_draft`` of the
    draft tokens were accepted. Returns the first cache position to remove (everything from it
    on holds rejected draft tokens): ``pos + 1 + n_accepted_draft``."""
    return pos + 1 + n_accepted_draft
