"""What the scheduler keeps about remote boxes joined over ``--worker-listen`` (one *link* per
CURVE connection of a ``hearth worker --join``): who they are, what they serve, when they were
last heard, and the decisions about them — which of a Join's workers are new or gone, which of
its models are refused, which links fell silent. Plain data and pure functions: no sockets, and
time is passed in (monotonic seconds), so the rules are unit-tested with fakes.

Heartbeats go both ways: the scheduler pings every link every ``HEARTBEAT_S``; the box answers
each ping (and talks whenever it has something to say). A link heard from for ``DEAD_AFTER_S``
is dropped here; the box, pinged by nobody for as long, drops its end and connects again
(tools/cli/worker_link.py). Owned by the scheduler's only thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hearth.scheduler.messages import LINK_VERSION, Join, RemoteWorker
from hearth.scheduler.token_rate import TokenRate

HEARTBEAT_S = 1.0  # a ping (and so a pong) at least this often
# tokens/s is measured over this window: workers report their counts about once a second
RATE_WINDOW_S = 5.0
DEAD_AFTER_S = 4.0  # silence after which a link is dropped (on both ends)


@dataclass
class Link:
    """One connection of a remote box. ``ident``: its ZeroMQ routing id (fresh for each
    connection, so a stale connection's messages are never taken for a new one's); ``name``:
    the name its public key is listed under (given by the ZAP handler)."""

    ident: bytes
    name: str
    address: str
    last_heard: float
    joined: Join | None = None
    workers: dict[str, RemoteWorker] = field(default_factory=dict)  # registered, by id
    refused: dict[str, str] = field(default_factory=dict)  # model -> why
    rtt_s: float = 0.0  # the last ping's round trip
    ping_at: float = float("-inf")  # when it was last pinged
    # its workers' generated tokens, sampled one a HEARTBEAT_S at most, over RATE_WINDOW_S
    rate: TokenRate = field(default_factory=lambda: TokenRate(RATE_WINDOW_S, HEARTBEAT_S))

    @property
    def tokens_per_s(self) -> float:
        return self.rate.per_s

    @property
    def host(self) -> str:
        return self.joined.host if self.joined else ""


@dataclass(frozen=True)
class JoinPlan:
    """What a Join changes: workers to add (new ids, on models not refused), worker ids to
    drop (in the last Join, not in this one), models refused (id -> why), and older links of
    the same name that this connection replaces (to drop first)."""

    add: list[RemoteWorker]
    drop: list[str]
    refused: dict[str, str]
    replaces: list[Link]


# model id -> the sha256 of the header of the scheduler's own file of that id, None if it has
# none (tools/gguf_header.header_sha256)
LocalHeader = Callable[[str], str | None]


def refused_models(join: Join, local_header: LocalHeader) -> dict[str, str]:
    """The models of ``join`` the scheduler will not route to: a model whose id names a
    different file here (another header hash) — the same id must mean the same file."""
    out: dict[str, str] = {}
    for m in join.models:
        mine = local_header(m.id)
        if mine is not None and mine != m.header_sha256:
            out[m.id] = (f"its file differs from this server's '{m.id}' (GGUF header sha256 "
                         f"{m.header_sha256[:12]}… here {mine[:12]}…)")
    return out


class RemoteLinks:
    """Every live link, by routing id."""

    def __init__(self) -> None:
        self.links: dict[bytes, Link] = {}

    def heard(self, ident: bytes, name: str, address: str, now: float) -> Link:
        """A message came on ``ident``: its link (made on first contact), marked heard."""
        link = self.links.get(ident)
        if link is None:
            link = self.links[ident] = Link(ident, name, address, now)
        link.last_heard = now
        return link

    def join(self, link: Link, msg: Join, local_header: LocalHeader) -> JoinPlan:
        """Take ``msg`` as ``link``'s registration (it replaces its last one) and say what
        changes. The returned plan's ``add`` workers are recorded on the link already."""
        refused = refused_models(msg, local_header)
        if msg.version != LINK_VERSION:
            refused = {m.id: f"it speaks link version {msg.version}, this server "
                             f"{LINK_VERSION}" for m in msg.models}
        replaces = [other for other in self.links.values()
                    if other.name == link.name and other.ident != link.ident]
        wanted = {w.worker_id: w for w in msg.workers if w.model not in refused and w.slots > 0}
        drop = [wid for wid in link.workers if wid not in wanted]
        add = [w for wid, w in wanted.items() if wid not in link.workers]
        for wid in drop:
            del link.workers[wid]
        for w in add:
            link.workers[w.worker_id] = w
        link.joined = msg
        link.refused = refused
        return JoinPlan(add, drop, refused, replaces)

    def pong(self, link: Link, sent_at: float, now: float) -> None:
        link.rtt_s = max(0.0, now - sent_at)

    def pings_due(self, now: float) -> list[Link]:
        """Links to ping now (each at most once per HEARTBEAT_S); marks them pinged."""
        due = [link for link in self.links.values() if now - link.ping_at >= HEARTBEAT_S]
        for link in due:
            link.ping_at = now
        return due

    def silent(self, now: float) -> list[Link]:
        """Links heard from for DEAD_AFTER_S or more: to be dropped."""
        return [link for link in self.links.values() if now - link.last_heard >= DEAD_AFTER_S]

    def drop(self, ident: bytes) -> Link | None:
        return self.links.pop(ident, None)

    def owner_of(self, worker_id: str) -> Link | None:
        for link in self.links.values():
            if worker_id in link.workers:
                return link
        return None

    def sample_tokens(self, link: Link, tokens: int, now: float) -> None:
        """Update the link's tokens/s from its workers' generated-token count ``tokens``: the
        rise over the last RATE_WINDOW_S (a count that went down starts afresh)."""
        link.rate.sample(tokens, now)

    def next_due(self, now: float) -> float:
        """Seconds until the next ping or silence deadline (at most HEARTBEAT_S)."""
        due = [HEARTBEAT_S]
        for link in self.links.values():
            due.append(link.ping_at + HEARTBEAT_S - now)
            due.append(link.last_heard + DEAD_AFTER_S - now)
        return max(0.0, min(due))

