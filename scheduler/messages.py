"""Every ZeroMQ message in hearth, as msgspec Structs encoded with msgpack.

Three channels, each carrying one tagged union:

* api -> scheduler (PUSH/PULL): ``ToScheduler`` — ChatJob, EmbedJob, TokenizeJob, Cancel.
* scheduler <-> worker (ROUTER/DEALER): ``ToWorker`` — Assign, Cancel, Shutdown;
  ``FromWorker`` — WorkerReady, WorkerFailed, SlotFreed, WorkerStats.
* worker or scheduler -> api (PUB/SUB, topic = frontend id): ``EventBatch`` — one message per
  frontend per step carrying every request's events (Started, TextDelta, Finished, Failed,
  Embedded, Tokenized); and on ``STATUS_TOPIC`` the scheduler's ``SchedulerStatus`` (what /health
  reports).

No pickles, no dicts-of-anything: a peer that sends something else gets a decode error.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec
from hearth.scheduler.errors import ErrorKind, HearthError
from hearth.tools.model_config import SamplingDefaults, WorkerConfig

FinishReason = Literal["stop", "length", "cancelled"]
T = TypeVar("T")


class ToolCall(msgspec.Struct, frozen=True):
    """A function call an assistant message made earlier in the conversation (OpenAI's
    ``tool_calls[i]``): ``arguments`` is the JSON text of the arguments, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


class ChatMessage(msgspec.Struct, frozen=True):
    """One message to render. ``tool_calls``: an assistant's calls (its content may then be
    empty); ``tool_call_id``: which call a ``tool`` message answers."""

    role: str
    content: str
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    name: str | None = None  # the participant's name, passed to the template (HF convention)
    # an assistant's earlier thinking, passed to the template as ``reasoning_content`` (the
    # convention of Qwen 3's and DeepSeek-R1's templates, which show it again only where the
    # model expects it: the turns after the last user message, i.e. inside a tool loop)
    reasoning_content: str | None = None


class ToolSpec(msgspec.Struct, frozen=True):
    """A function the model may call, for the chat template's ``tools``: ``parameters`` is its
    JSON Schema as JSON text (the wire carries no dicts of anything)."""

    name: str
    description: str | None = None
    parameters: str = "{}"


class RequestedSampling(msgspec.Struct, frozen=True):
    """The sampling values a request set; None means "not set": the model's configured default
    applies, else the built-in one (see :func:`resolve_sampling`)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[int, float] = {}
    stop: list[str] = []
    # hearth's ``speculative_decoding`` field: None = the model's setting; False = never draft;
    # True = draft where the request can (no grammar or logprobs), whatever the setting
    # (engine/speculation.py)
    speculative_decoding: bool | None = None


class ResolvedSampling(msgspec.Struct, frozen=True):
    """Resolved values a slot's sampler chain is built from. ``temperature == 0`` is greedy."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = {}
    stop: list[str] = []
    speculative_decoding: bool | None = None  # as requested (the worker's setting decides None)


def _first(request: T | None, model: T | None, built_in: T) -> T:
    if request is not None:
        return request
    return model if model is not None else built_in


def resolve_sampling(p: RequestedSampling, d: SamplingDefaults | None = None) -> ResolvedSampling:
    """The request's value, else the model's default, else the built-in one (ResolvedSampling's)."""
    d = d or SamplingDefaults()
    base = ResolvedSampling()
    return ResolvedSampling(
        max_tokens=_first(p.max_tokens, d.max_tokens, base.max_tokens),
        temperature=_first(p.temperature, d.temperature, base.temperature),
        top_p=_first(p.top_p, d.top_p, base.top_p),
        top_k=_first(p.top_k, d.top_k, base.top_k),
        min_p=_first(p.min_p, d.min_p, base.min_p),
        seed=p.seed,
        frequency_penalty=_first(p.frequency_penalty, d.frequency_penalty, base.frequency_penalty),
        presence_penalty=_first(p.presence_penalty, d.presence_penalty, base.presence_penalty),
        logit_bias=p.logit_bias,
        stop=p.stop,
        speculative_decoding=p.speculative_decoding,
    )


class Grammar(msgspec.Struct, frozen=True):
    """A constraint on what a slot may generate: a llama.cpp GBNF grammar (root rule ``root``).

    ``triggers`` empty: the grammar applies from the first generated token. Otherwise it is
    lazy: output is free until one of the trigger strings appears in it, and from there on the
    text from the trigger's first character must match the grammar (how tool calls start at a
    template family's marker, e.g. ``<tool_call>``).

    ``param``: the request field the grammar came from (``response_format``, ``tools``), named
    in the 400 if llama.cpp cannot parse the grammar."""

    gbnf: str
    triggers: list[str] = []
    param: str | None = None


# The built-in max_tokens of a completion (OpenAI's default for /v1/completions), used when
# neither the request nor the model's configuration sets one (a chat's built-in is the context).
COMPLETION_MAX_TOKENS = 16


class RawPrompt(msgspec.Struct, frozen=True):
    """A prompt sent to the model as it is, without the chat template (the completions
    endpoint's). Either ``text`` — tokenized with special-token text parsed as special tokens,
    and BOS added when the model's ``add_bos_token`` says so — or ``tokens`` (non-empty), token
    ids used exactly as given.

    ``suffix`` not None: fill-in-the-middle. The prompt is the text before the gap and
    ``suffix`` the text after it; the worker lays them out with the model's FIM tokens
    (engine/prompts.py), special-token text in them left as text. ``echo``: the prompt's
    text comes back first, as a delta of 0 tokens; with the job's ``logprobs``, that delta
    carries an entry for each prompt token (the prompt is then evaluated whole, no cached
    prefix reused: each token's entry comes from the logits of the position before it)."""

    text: str = ""
    tokens: list[int] = []
    suffix: str | None = None
    echo: bool = False


class ChatJob(msgspec.Struct, frozen=True, tag="chat"):
    """A generation in one slot. ``prompt`` None: a chat, its prompt rendered from ``messages``
    with the model's chat template; otherwise a completion (``messages`` empty) whose prompt
    skips the template. One job type for both, because everything after the prompt's tokens
    (queue, fairness, slots, prefix cache, sampling, cancellation) is the same."""

    request_id: str
    frontend: str  # the api process to publish events to (its SUB topic)
    key_name: str  # name of the API key that made the request; fairness groups by it
    model: str
    messages: list[ChatMessage]
    params: RequestedSampling
    grammar: Grammar | None = None  # None: unconstrained
    prompt: RawPrompt | None = None  # a completion's prompt (None: a chat)
    tools: list[ToolSpec] = []  # passed to the chat template as ``tools`` (HF convention)
    # special tokens (by their text) whose text the answer's parser reads, e.g. Mistral's
    # "[TOOL_CALLS]": streamed as that text, where other control tokens are streamed as nothing
    shown_tokens: list[str] = []
    # None: no log-probabilities; k >= 0: each generated token's, with the k most likely
    # alternatives (chat's top_logprobs, completions' logprobs); see engine/logprobs.py
    logprobs: int | None = None
    # choices (OpenAI's ``n``): the prompt is evaluated once and its KV cache copied into n - 1
    # more slots; the job takes n slots at once (or waits for them) and each choice has its own
    # sampler, seeded ``seed + i`` when the request has a seed
    n: int = 1


class EmbedJob(msgspec.Struct, frozen=True, tag="embed"):
    """An embeddings request: each input is text, or token ids (``tokens``).

    ``dimensions``: the width the client asked for, or None. Any width but the model's own is
    refused (vectors are never shortened): by the scheduler from the GGUF header, and again by
    the worker, which knows it from llama.cpp."""

    request_id: str
    frontend: str
    key_name: str
    model: str
    texts: list[str] = []
    tokens: list[list[int]] = []
    dimensions: int | None = None


class TokenizeJob(msgspec.Struct, frozen=True, tag="tokenize"):
    """Tokenize (``detokenize`` False) ``text``, or ``messages`` rendered with the chat template
    when ``messages`` is non-empty; or detokenize ``tokens`` (``detokenize`` True). Answered by a
    worker of the model at once, without a slot: it needs the model's own tokenizer.
    ``add_special``: add BOS as the model does (tokenize only); special-token text is always
    parsed. ``with_pieces``: also each token's bytes."""

    request_id: str
    frontend: str
    key_name: str
    model: str
    text: str = ""
    messages: list[ChatMessage] = []
    tools: list[ToolSpec] = []  # rendered with ``messages``, as a ChatJob's are
    tokens: list[int] = []
    detokenize: bool = False
    add_special: bool = False
    with_pieces: bool = False


Job = ChatJob | EmbedJob | TokenizeJob  # what waits in the scheduler's queue and runs on a worker


class Cancel(msgspec.Struct, frozen=True, tag="cancel"):
    request_id: str


class Assign(msgspec.Struct, frozen=True, tag="assign"):
    request: ChatJob | EmbedJob | TokenizeJob


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How the scheduler starts a worker process (its only argument, as msgpack)."""

    worker_id: str
    model: str
    control_endpoint: str  # scheduler's ROUTER
    events_endpoint: str  # api's SUB
    config: WorkerConfig  # the model's file and knobs, resolved by Settings.worker_config


class Shutdown(msgspec.Struct, frozen=True, tag="shutdown"):
    pass


class Placement(msgspec.Struct, frozen=True):
    """Where a worker's model runs, as the llama.cpp build it loaded did it: on the CPU, or
    ``gpu_layers`` of its ``layers`` repeating layers on a GPU. ``warning``: what the scheduler
    logs when this is not what the settings asked for (a CPU build asked for GPU layers)."""

    device: Literal["cpu", "gpu"]
    gpu_layers: int
    layers: int
    warning: str = ""


class WorkerReady(msgspec.Struct, frozen=True, tag="ready"):
    worker_id: str
    model: str
    slots: int
    placement: Placement | None = None


class WorkerFailed(msgspec.Struct, frozen=True, tag="failed"):
    """The worker could not start (bad GGUF, out of memory...). It exits after sending this."""

    worker_id: str
    model: str
    message: str


class SlotFreed(msgspec.Struct, frozen=True, tag="freed", omit_defaults=True):
    """A request left the worker (finished, failed or cancelled): its slot is free again.

    ``cache``: what the worker's slots hold now, as the prefix-block hashes
    (scheduler/prefix_blocks.py) of the chat jobs whose KV cache they keep, each hash once, in
    no order; None (left off the wire) when that has not changed since the worker last said.
    At most slots x MAX_BLOCKS x HASH_BYTES bytes (8 slots: 2 KiB); the scheduler routes a
    conversation's next turn by it (scheduler/routing.py)."""

    worker_id: str
    request_id: str
    cache: bytes | None = None


class EngineTimes(msgspec.Struct, frozen=True):
    """Where a worker's chat step loop spent its time, cumulative since the worker started.
    ``busy_s`` is the loop's wall time while requests were running; what is in neither
    ``decode_s`` (llama_decode, building its batch included) nor ``sample_s`` (sampling, wall
    time) is the server's own per-step overhead: scheduling, detokenizing, stop strings,
    events and ZeroMQ."""

    busy_s: float = 0.0
    decode_s: float = 0.0
    sample_s: float = 0.0
    steps: int = 0
    tokens: int = 0  # tokens generated
    draft_proposed: int = 0  # speculative draft tokens fed to llama_decode
    draft_accepted: int = 0  # of which accepted (the rest were rolled back)

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.busy_s - self.decode_s - self.sample_s)

    def plus(self, other: EngineTimes) -> EngineTimes:
        return EngineTimes(self.busy_s + other.busy_s, self.decode_s + other.decode_s,
                           self.sample_s + other.sample_s, self.steps + other.steps,
                           self.tokens + other.tokens,
                           self.draft_proposed + other.draft_proposed,
                           self.draft_accepted + other.draft_accepted)


class RamCacheStats(msgspec.Struct, frozen=True):
    """A worker's host-RAM prompt cache (engine/ram_cache.py): ``bytes`` and ``entries`` now,
    the rest cumulative since the worker started. ``hits``: admissions that restored a saved
    state; ``misses``: admissions (with the cache on) it had nothing better for than the slots;
    ``saves``: states saved; ``evictions``: states dropped for room (LRU); ``failures``:
    restores llama.cpp refused (evaluated cold instead); ``restore_s``: seconds restoring."""

    bytes: int = 0
    entries: int = 0
    hits: int = 0
    misses: int = 0
    saves: int = 0
    evictions: int = 0
    failures: int = 0
    restore_s: float = 0.0

    def plus(self, other: RamCacheStats) -> RamCacheStats:
        return RamCacheStats(self.bytes + other.bytes, self.entries + other.entries,
                             self.hits + other.hits, self.misses + other.misses,
                             self.saves + other.saves, self.evictions + other.evictions,
                             self.failures + other.failures, self.restore_s + other.restore_s)

    def counters(self) -> RamCacheStats:
        """Only the cumulative counters (a worker that exited holds no bytes any more)."""
        return msgspec.structs.replace(self, bytes=0, entries=0)


class WorkerStats(msgspec.Struct, frozen=True, tag="stats"):
    """Sent by a worker about once a second while it generates, and when it goes idle."""

    worker_id: str
    times: EngineTimes
    ram_cache: RamCacheStats = RamCacheStats()


ToScheduler = ChatJob | EmbedJob | TokenizeJob | Cancel
ToWorker = Assign | Cancel | Shutdown
FromWorker = WorkerReady | WorkerFailed | SlotFreed | WorkerStats


# ---- the link of a remote ``hearth worker`` (tcp + CURVE, scheduler/remote_link.py) -----------
# One DEALER (the remote box's agent) to the scheduler's worker ROUTER, multipart frames:
#   agent -> scheduler:  [b"L", LinkUp]   [b"W", FromWorker]   [b"E", topic, EventBatch]
#   scheduler -> agent:  [b"L", LinkDown] [b"W", worker id, ToWorker]
# "W" frames are the local channel's messages as they are; "E" frames are a worker's event
# batches, which the scheduler republishes to the api on its own publisher.

LINK_VERSION = 1


class RemoteModel(msgspec.Struct, frozen=True):
    """A model a remote box serves: its id, its GGUF file's size and the sha256 (hex) of the
    file's header bytes (tools/gguf_header.header_sha256), so that the same id names the same
    file on every box."""

    id: str
    size: int
    header_sha256: str


class RemoteWorker(msgspec.Struct, frozen=True):
    """One loaded worker process of a remote box: its id, model and slots; ``cache``: what its
    slots hold, as the last SlotFreed.cache it sent (b"": nothing yet), so a box that joins
    again (a new link: new handles here) is routed to by what it holds from the start;
    ``embeddings``: whether the box serves POST /embeddings for its model (its config's
    ``[models."<id>"] embeddings``)."""

    worker_id: str
    model: str
    slots: int
    cache: bytes = b""
    embeddings: bool = True


class Join(msgspec.Struct, frozen=True, tag="join"):
    """A remote box (re)registers: everything it serves now. Sent on connecting and again
    whenever its set of ready workers changes; each Join replaces the last one."""

    host: str  # the box's host name, for status and logs
    models: list[RemoteModel]
    workers: list[RemoteWorker]
    memory_budget: int  # bytes (its --memory-budget, resolved)
    version: int = LINK_VERSION


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    """The scheduler's heartbeat (about once a second); answered with a Pong carrying the same
    ``sent_at`` (the scheduler's monotonic seconds), which gives the link's round-trip time."""

    sent_at: float


class Pong(msgspec.Struct, frozen=True, tag="pong"):
    """The remote box's heartbeat: the answer to a Ping."""

    sent_at: float


class Welcome(msgspec.Struct, frozen=True, tag="welcome"):
    """The scheduler took a Join: ``name`` is the box's name in its key list; ``refused``
    names the models it will not route to the box (and why)."""

    name: str
    refused: dict[str, str] = {}


LinkUp = Join | Pong
LinkDown = Ping | Welcome


# ---- events, worker/scheduler -> api ----------------------------------------------------------


class Started(msgspec.Struct, frozen=True, tag="started"):
    """The prompt was accepted by a slot: the api may now commit to a 200 response."""

    request_id: str
    prompt_tokens: int
    cached_tokens: int = 0


class TopLogprob(msgspec.Struct, frozen=True, array_like=True):
    """One of the most likely tokens at a step: its id, its bytes as generated text, and its
    log-probability (natural log)."""

    token: int
    piece: bytes
    logprob: float


class TokenLogprob(msgspec.Struct, frozen=True, array_like=True):
    """A generated token's log-probability, for a job that asked (``ChatJob.logprobs``): its
    id, its bytes as generated text (part of a multi-byte character, maybe), its
    log-probability, and the ``k`` most likely tokens of that step, most likely first.
    An echoed prompt's tokens have entries too (``echo`` with ``logprobs``); its first token's
    ``logprob`` is None and its ``top`` empty: nothing predicts it."""

    token: int
    piece: bytes
    logprob: float | None
    top: list[TopLogprob] = []


class TextDelta(msgspec.Struct, frozen=True, tag="delta", omit_defaults=True):
    """Generated text. ``logprobs``: for a job that asked, one entry per token this delta
    accounts for (``tokens`` of them), in order; else empty and left off the wire. A token's
    text may come out in a later delta than its entry (UTF-8 held until a character is
    complete, text held back while it may be the start of a stop string); the entries' bytes
    say which text each token made."""

    request_id: str
    text: str
    tokens: int  # tokens this delta accounts for (text may be empty while UTF-8 is incomplete)
    logprobs: list[TokenLogprob] = []
    index: int = 0  # the choice (0 <= index < the job's n)


class Finished(msgspec.Struct, frozen=True, tag="finished"):
    """One choice ended (a job of n choices sends n of these, one per ``index``; the job is
    over after the last). ``prompt_tokens`` and ``cached_tokens`` are the job's, the same in
    each of its choices' events (the prompt is evaluated once); ``completion_tokens`` are the
    choice's own. ``stop_sequence``: the request's stop string that ended the choice
    (``finish_reason`` is then ``stop``), None when none did (Anthropic's Messages API says
    which one matched)."""

    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    stop_sequence: str | None = None
    index: int = 0  # the choice


class Failed(msgspec.Struct, frozen=True, tag="error"):
    """The request ended with an error: the exception's kind (scheduler/errors.py), message and
    param. A kind this process does not know decodes as ``ErrorKind.INTERNAL_ERROR``."""

    request_id: str
    kind: ErrorKind
    message: str
    param: str | None = None

    @classmethod
    def of(cls, request_id: str, exc: HearthError) -> Failed:
        """The one way to end a request with an exception (the api rebuilds it with
        ``errors.rebuild``)."""
        return cls(request_id, exc.kind, exc.message, exc.param)


class Embedded(msgspec.Struct, frozen=True, tag="embedded"):
    """Every input's vector (L2-normalised little-endian float32), in input order."""

    request_id: str
    vectors: list[bytes]
    prompt_tokens: int


class Tokenized(msgspec.Struct, frozen=True, tag="tokenized"):
    """A TokenizeJob's answer: ``tokens`` (tokenize) or ``text`` (detokenize); ``pieces``: each
    token's bytes when ``with_pieces`` was asked."""

    request_id: str
    tokens: list[int] = []
    pieces: list[bytes] = []
    text: str = ""


Event = Started | TextDelta | Finished | Failed | Embedded | Tokenized


class EventBatch(msgspec.Struct, frozen=True):
    events: list[Event]


class ModelState(msgspec.Struct, frozen=True):
    """One model the scheduler has started a worker for (now or before)."""

    model: str
    state: Literal["loading", "ready", "failed", "stopped"]
    slots: int = 0
    busy: int = 0
    message: str = ""
    size_bytes: int = 0  # the GGUF file's size: what loading it costs, roughly
    starts: int = 0  # worker processes started for it
    crashes: int = 0  # of which exited unexpectedly (crashed, killed, failed to load)
    # chat requests routed to a worker whose slots held the start of their prompt (prefix
    # affinity, scheduler/routing.py), of all chat requests routed: since the server started
    routed_by_prefix: int = 0
    routed: int = 0
    engine: EngineTimes = EngineTimes()  # its workers' step loops, past and present
    ram_cache: RamCacheStats = RamCacheStats()  # its workers' RAM caches (counters: past too)
    # where it is loaded: "local", and the names of remote boxes (their [workers] key names)
    workers: list[str] = []
    placement: Placement | None = None  # where its (first ready) worker runs it


class RemoteStatus(msgspec.Struct, frozen=True):
    """One remote box joined over --worker-listen (for /metrics and ``hearth status``)."""

    name: str  # its key's name in the [workers] table or the workers' key file
    host: str  # the host name it reported
    address: str  # its IP address as the scheduler sees it
    models: list[str]
    slots: int
    busy: int
    rtt_ms: float  # the last heartbeat's round trip
    heartbeat_age_s: float  # seconds since anything was last heard from it
    tokens: int = 0  # generated since it joined
    tokens_per_s: float = 0.0  # over the last seconds
    memory_budget: int = 0  # bytes: the box's own --memory-budget, as its Join said


class WorkerStatus(msgspec.Struct, frozen=True):
    """One worker process, local or on a remote box (for /metrics and ``hearth status``)."""

    worker_id: str
    model: str
    place: str  # "local", or the remote box's name (its [workers] key name)
    host: str  # the host name it runs on
    state: str  # loading, ready, draining, stopping
    slots: int
    busy: int
    tokens: int  # generated since it started
    tokens_per_s: float  # over the last seconds (0 when idle)
    heard_age_s: float  # seconds since it last sent anything (its start, at first)
    pid: int = 0  # its process id on its host (0: not known)


class SchedulerStatus(msgspec.Struct, frozen=True):
    """Published by the scheduler on topic ``STATUS_TOPIC`` every second and on every change."""

    default_model: str
    models: list[ModelState]
    queued: int
    queued_by_key: dict[str, int] = {}
    remotes: list[RemoteStatus] = []
    workers: list[WorkerStatus] = []


STATUS_TOPIC = b"~status"


class Codec:
    """Encoders/decoders for each channel. One instance per socket owner (not thread-safe)."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self.to_scheduler = msgspec.msgpack.Decoder(ToScheduler)
        self.to_worker = msgspec.msgpack.Decoder(ToWorker)
        self.from_worker = msgspec.msgpack.Decoder(FromWorker)
        self.events = msgspec.msgpack.Decoder(EventBatch)
        self.status = msgspec.msgpack.Decoder(SchedulerStatus)
        self.link_up = msgspec.msgpack.Decoder(LinkUp)
        self.link_down = msgspec.msgpack.Decoder(LinkDown)

    def encode(self, msg: msgspec.Struct) -> bytes:
        return self._enc.encode(msg)
