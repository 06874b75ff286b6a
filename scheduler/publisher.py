"""The sending end of the event channel (worker or scheduler -> api), shared by both.

PUB sockets drop silently: at the high-water mark, and for a subscriber whose subscription has
not arrived yet (the "slow joiner"). Neither is acceptable for token events, so:

* high-water marks are 0 (unbounded) on both ends: a slow api buffers, it never loses;
* the socket is an XPUB, which *receives* subscriptions; events for a frontend whose subscription
  has not been seen yet are held and sent the moment it arrives.

Owned by one thread of one process; not thread-safe.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
import zmq
from hearth.scheduler.messages import Codec, Event, EventBatch


class EventPublisher:
    def __init__(self, ctx: zmq.SyncContext, endpoint: str, codec: Codec) -> None:
        self._codec = codec
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(endpoint)
        self._subscribed: set[bytes] = set()
        self._held: dict[bytes, list[Event]] = defaultdict(list)

    def pump_subscriptions(self) -> None:
        """Read pending (un)subscribe notices; flush events held for new subscribers."""
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            topic = msg[1:]
            if msg[0] == 1:
                self._subscribed.add(topic)
                held = self._held.pop(topic, None)
                if held:
                    self._send(topic, held)
            elif msg[0] == 0:
                self._subscribed.discard(topic)

    def publish(self, frontend: str, events: list[Event]) -> None:
        if not events:
            return
        topic = frontend.encode()
        if topic in self._subscribed:
            self._send(topic, events)
        else:
            self._held[topic].extend(events)

    def publish_raw(self, topic: bytes, msg: msgspec.Struct) -> None:
        """Best-effort messages (status): sent if anyone listens, never held."""
        self.sock.send_multipart([topic, self._codec.encode(msg)])

    def _send(self, topic: bytes, events: list[Event]) -> None:
        self.sock.send_multipart([topic, self._codec.encode(EventBatch(events))])

    def close(self) -> None:
        self.sock.close()
