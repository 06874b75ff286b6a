"""The scheduler's end of the remote workers' links (``--worker-listen tcp://ADDR:PORT``).

Sockets, all in a ZeroMQ context of their own and owned by the scheduler's only thread:

* ``sock`` ROUTER (bound, CURVE server): one DEALER per remote box (``hearth worker --join``),
  frames as scheduler/messages.py describes (``L`` link messages, ``W`` worker messages, ``E``
  event batches);
* ``zap`` REP on ``inproc://zeromq.zap.01``: ZeroMQ's authentication handler (ZAP, RFC 27) for
  this context. libzmq asks it about each CURVE handshake, before the peer can send anything;
  a key that is not listed is refused here and logged; a listed one is given its name, which
  every message of that connection then carries (ZeroMQ's ``User-Id`` property);
* ``monitor`` PAIR: the ROUTER's socket events, to log handshakes that fail before ZAP is asked
  (a plaintext peer, a peer that has the wrong server key).

A remote box's workers become WorkerHandles of the one :class:`Scheduler` (``add_remote``), so
queueing, fairness and dispatch treat them as local ones; their token events come over the same
link and are republished on the scheduler's publisher to the api. The bookkeeping (who joined,
heartbeats, silence) is scheduler/remote_links.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import zmq
import zmq.utils.monitor
import zmq.utils.z85
from hearth.scheduler.core import Scheduler
from hearth.scheduler.messages import (
    Codec,
    Join,
    Ping,
    Pong,
    RemoteStatus,
    ToWorker,
    Welcome,
)
from hearth.scheduler.publisher import EventPublisher
from hearth.scheduler.remote_links import Link, RemoteLinks
from hearth.tools.curve_keys import file_stamp, read_worker_keys
from hearth.tools.gguf_header import header_sha256
from hearth.tools.key_file import KeyFileError, Stamp
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

log = logging.getLogger("hearth.scheduler")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
ZAP_DOMAIN = b"hearth-workers"
KEYS_CHECK_S = 1.0  # how often the workers' key file's stamp is looked at
_FAILED_HANDSHAKE = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def zap_reply(request: list[bytes], allowed: dict[str, str]) -> tuple[list[bytes], str | None]:
    """The answer to one ZAP request (RFC 27 frames), and the name it authenticated (None:
    refused). ``allowed``: public key (Z85) -> name. Only CURVE is accepted; the refusal's
    reason is logged with the peer's address and its public key (public: safe to log)."""
    if len(request) < 6:
        return [b"1.0", b"", b"500", b"bad ZAP request", b"", b""], None
    version, request_id, _domain, address, _identity, mechanism = request[:6]
    addr = address.decode(errors="replace")
    if mechanism != b"CURVE" or len(request) < 7 or len(request[6]) != 32:
        log.warning("refused a worker connection from %s: it does not use CURVE (%s)", addr,
                    mechanism.decode(errors="replace"))
        return [version, request_id, b"400", b"CURVE only", b"", b""], None
    key = zmq.utils.z85.encode(request[6]).decode()
    name = allowed.get(key)
    if name is None:
        log.warning("refused a worker connection from %s: its public key %s is not listed "
                    "([workers] or --worker-keys-file)", addr, key)
        return [version, request_id, b"400", b"key not listed", b"", b""], None
    return [version, request_id, b"200", b"OK", name.encode(), b""], name


class WorkerListener:
    """Binds ``settings.worker_listen`` and runs the links beside the scheduler's loop:
    ``poll_sockets`` join that loop's poll, ``turn`` takes in what arrived and keeps the
    heartbeats, ``send`` carries a message to a remote worker."""

    def __init__(self, settings: Settings, sched: Scheduler, publisher: EventPublisher,
                 secret_key: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.sched = sched
        self.publisher = publisher
        self.codec = Codec()
        self.clock = clock
        self.links = RemoteLinks()
        self._fixed = dict(settings.worker_keys)  # name -> key, from the config
        self._file_keys: dict[str, str] = {}
        self._names: set[str] = set(self._fixed)  # every listed name
        self._file_stamp: Stamp | None = None
        self._keys_at = float("-inf")
        self._check_key_file(force=True)
        self._local_headers = ModelRegistry(settings.models_dir, {})
        self._headers: dict[str, tuple[object, str]] = {}  # model -> (file stamp, sha256)
        # its own context: a ZAP handler is per context, and the local ipc sockets need none
        self.ctx = zmq.Context()
        self.zap = self.ctx.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.CURVE_SERVER, 1)
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key.encode())
        self.sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        self.monitor = self.sock.get_monitor_socket(_FAILED_HANDSHAKE | zmq.EVENT_ACCEPTED)
        self.sock.bind(settings.worker_listen)
        sched.remote_status = self.status

    @property
    def poll_sockets(self) -> list[zmq.SyncSocket]:
        return [self.sock, self.zap, self.monitor]

    # ---- keys -------------------------------------------------------------------------------

    def allowed(self) -> dict[str, str]:
        """public key -> name, of every listed worker."""
        return {key: name for name, key in {**self._file_keys, **self._fixed}.items()}

    def _check_key_file(self, force: bool = False) -> None:
        path = self.settings.worker_keys_file
        now = self.clock()
        if not path or (not force and now - self._keys_at < KEYS_CHECK_S):
            return
        self._keys_at = now
        stamp = file_stamp(path)
        if stamp is None or stamp == self._file_stamp:
            return
        try:
            self._file_stamp, keys = read_worker_keys(path)
        except KeyFileError as exc:
            self._file_stamp = stamp
            log.warning("%s; the workers' keys stay as they were", exc)
            return
        if not force:
            log.info("re-read %s: %d worker key(s)", path, len(keys))
        self._file_keys = keys
        names = self._names = set(self.allowed().values())
        for link in list(self.links.links.values()):
            if link.name not in names:
                self._drop(link, "its key is no longer listed")

    # ---- the loop's side --------------------------------------------------------------------

    def turn(self) -> None:
        self._answer_zap()
        self._read_monitor()
        self._drain()
        self._check_key_file()
        now = self.clock()
        for link in self.links.silent(now):
            self._drop(link, f"nothing heard for {now - link.last_heard:.1f} s")
        for link in self.links.pings_due(now):
            self._send_link(link, Ping(now))

    def wait_s(self) -> float:
        return self.links.next_due(self.clock())

    def _answer_zap(self) -> None:
        allowed: dict[str, str] | None = None
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            allowed = allowed if allowed is not None else self.allowed()
            reply, _name = zap_reply(request, allowed)
            self.zap.send_multipart(reply)

    def _read_monitor(self) -> None:
        while True:
            try:
                event = zmq.utils.monitor.recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            if kind & _FAILED_HANDSHAKE and kind != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                # AUTH failures were logged by the ZAP handler, with the key
                log.warning("refused a worker connection on %s: the CURVE handshake failed "
                            "(a plaintext peer, or one given the wrong --server-key)",
                            event["endpoint"].decode(errors="replace"))

    def _drain(self) -> None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 3:
                continue
            name = str(frames[1].get("User-Id"))
            if name not in self._names:
                continue  # authenticated under a key revoked since: ignored
            try:
                address = str(frames[1].get("Peer-Address"))
            except zmq.ZMQError:
                address = "?"
            ident = frames[0].bytes
            kind = frames[1].bytes
            link = self.links.heard(ident, name, address, self.clock())
            try:
                self._on_frames(link, kind, [f.bytes for f in frames[2:]])
            except msgspec.DecodeError:
                log.warning("remote worker '%s' sent a message this server cannot read; "
                            "ignored (are both ends the same hearth version?)", link.name)

    def _on_frames(self, link: Link, kind: bytes, rest: list[bytes]) -> None:
        if kind == b"L":
            msg = self.codec.link_up.decode(rest[0])
            if isinstance(msg, Join):
                self._join(link, msg)
            elif isinstance(msg, Pong):
                self.links.pong(link, msg.sent_at, self.clock())
        elif kind == b"W" and link.joined is not None:
            wmsg = self.codec.from_worker.decode(rest[0])
            if wmsg.worker_id in link.workers:  # only its own workers' messages
                self.sched.on_worker_message(wmsg)
        elif kind == b"E" and link.joined is not None and len(rest) == 2:
            batch = self.codec.events.decode(rest[1])
            self.publisher.publish(rest[0].decode(errors="replace"), batch.events)

    def _local_header(self, model: str) -> str | None:
        """The sha256 of this server's own file of ``model``'s header, None if it has none."""
        entry = self._local_headers.get(model)
        if entry is None or entry.info is None:
            return None
        cached = self._headers.get(model)
        if cached is not None and cached[0] == entry.stamp:
            return cached[1]
        digest = header_sha256(entry.path, entry.info.data_offset)
        self._headers[model] = (entry.stamp, digest)
        return digest

    def _join(self, link: Link, msg: Join) -> None:
        first = link.joined is None
        plan = self.links.join(link, msg, self._local_header)
        for old in plan.replaces:
            self._drop(old, "the box connected again")
        for wid in plan.drop:
            self.sched.drop_remote(wid, "its box no longer lists it")
        sizes = {m.id: m.size for m in msg.models}
        for w in plan.add:
            self.sched.add_remote(w.worker_id, w.model, w.slots, link.name,
                                  sizes.get(w.model, 0), w.cache, w.embeddings, host=msg.host)
        for model, why in plan.refused.items():
            log.warning("remote worker '%s': not routing model '%s' to it: %s", link.name,
                        model, why)
        if first or plan.add or plan.drop:
            models = ", ".join(sorted({w.model for w in link.workers.values()})) or "none yet"
            log.info("remote worker '%s' (%s, %s) %s; it serves: %s", link.name, msg.host,
                     link.address, "joined" if first else "changed", models)
        self._send_link(link, Welcome(link.name, plan.refused))

    def _drop(self, link: Link, why: str) -> None:
        if self.links.drop(link.ident) is None:
            return
        log.warning("remote worker '%s' (%s) dropped: %s", link.name, link.address, why)
        for wid in list(link.workers):
            self.sched.drop_remote(wid, why)

    # ---- out --------------------------------------------------------------------------------

    def _send_link(self, link: Link, msg: msgspec.Struct) -> None:
        try:
            self.sock.send_multipart([link.ident, b"L", self.codec.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:  # gone, or its queue is full: its silence will drop it
            pass

    def send(self, worker_id: str, msg: ToWorker) -> bool:
        """Carry ``msg`` to a remote worker; False if its link is gone or cannot take it."""
        link = self.links.owner_of(worker_id)
        if link is None:
            return False
        try:
            self.sock.send_multipart([link.ident, b"W", worker_id.encode(),
                                      self.codec.encode(msg)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def status(self) -> list[RemoteStatus]:
        now = self.clock()
        out = []
        for link in self.links.links.values():
            if link.joined is None:
                continue
            handles = [self.sched.workers[w] for w in link.workers if w in self.sched.workers]
            tokens = sum(h.times.tokens for h in handles)
            self.links.sample_tokens(link, tokens, now)
            out.append(RemoteStatus(
                link.name, link.host, link.address,
                sorted({h.model for h in handles}), sum(h.slots for h in handles),
                sum(h.busy_slots for h in handles), round(link.rtt_s * 1000, 3),
                round(now - link.last_heard, 3), tokens, round(link.tokens_per_s, 2),
                link.joined.memory_budget if link.joined else 0))
        return sorted(out, key=lambda r: r.name)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close()
        self.sock.close(linger=500)  # the boxes' last Cancels may leave
        self.zap.close()
        self.ctx.term()
