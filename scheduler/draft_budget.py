"""How many speculative draft tokens each decoding slot may put into the next step. Pure Python.

A drafting slot (see engine/speculation.py) asks for up to K draft tokens beside its decode
token; each one costs a batch position like a prefill token does. Drafts only ever get what is
left of the step's token budget once every generating slot has its decode token and the waiting
prompts have their prefill chunks (:func:`scheduler.policy.plan_step` calls this last), so
speculation never slows a prompt's prefill or another slot's decode. What is left is shared
fairly: each slot gets an equal share, and what a slot that wants less leaves over goes to the
others (water-filling), ties broken by slot id.
"""

from __future__ import annotations

from collections.abc import Sequence


def share_drafts(wanted: Sequence[tuple[int, int]], left: int,
                 max_per_step: int | None = None) -> dict[int, int]:
    """``wanted``: (slot_id, draft tokens it would like); ``left``: batch positions free in
    this step; ``max_per_step``: a cap on all slots' drafts together (None: ``left``). Returns
    slot_id -> draft tokens granted (0 for a slot that gets none), summing to at most both
    caps and never more than a slot asked for."""
    room = max(0, left if max_per_step is None else min(left, max_per_step))
    grant = {slot_id: 0 for slot_id, _ in wanted}
    asks = sorted(((n, slot_id) for slot_id, n in wanted if n > 0))
    for i, (n, slot_id) in enumerate(asks):
        share = room // (len(asks) - i)  # the fewest-wanting first: their leftover is shared
        got = min(n, share)
        grant[slot_id] = got
        room -= got
    return grant
