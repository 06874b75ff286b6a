"""POST {prefix}/completions — OpenAI's legacy completions, with fill-in-the-middle.

Each prompt of the request is one job (a ChatJob whose ``prompt`` skips the chat template),
submitted together so they queue, batch and share cached prefixes like any other requests; the
answer merges them as choices in prompt order. Usage sums every prompt and choice; a client that
leaves cancels every job; one job's error ends the request (the others are cancelled). Streamed,
each ``text_completion`` chunk carries its choice's ``index``; a choice's last chunk has its
``finish_reason``; then the usage chunk (``stream_options.include_usage``) and ``[DONE]``.

With ``n`` > 1 each prompt's job has n choices (its prompt evaluated once, see
scheduler.messages.ChatJob), and choice ``i`` of prompt ``p`` is the answer's choice
``p * n + i``: OpenAI's order (the official SDK's reference: "choices" holds n per prompt).
"""

from __future__ import annotations

import math
import time

from hearth.api import completion_types as ct
from hearth.api import errors as mapper
from hearth.api import sse
from hearth.api.handlers.jobs import Finishes, JobHandler, error_of
from hearth.api.logprobs import CompletionLogprobs, LegacyLogprobs
from hearth.api.openai_types import sampling_of
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatJob, Event, Failed, Finished, Job, TextDelta


class CompletionsHandler(JobHandler):
    endpoint = "completions"
    id_prefix = "cmpl-"

    async def post(self) -> None:
        req = ct.parse_completion_request(self.body)
        self.log_model = req.model
        prompts = ct.raw_prompts(req)
        params = sampling_of(req, req.max_tokens)
        n = self.choices(req.n)
        runs = self._runs(req, n)  # choices generated per prompt: best_of, else n
        entry = self.resolve_model(req.model)
        frontend, key_name = self.job_owner()
        # best_of > n ranks its choices by their tokens' log-probabilities: it needs them
        logprobs = req.logprobs if runs == n else (req.logprobs or 0)
        jobs: list[Job] = [ChatJob(self.new_request_id(), frontend, key_name, entry.id, [],
                                   params, prompt=prompt, n=runs, logprobs=logprobs)
                           for prompt in prompts]
        ids = [job.request_id for job in jobs]
        try:
            async with self.submitted_all(jobs) as firsts:
                if firsts is None:
                    return
                created = int(time.time())
                # (with echo, the engine's echo delta brings the prompt tokens' entries first)
                legacy = None if logprobs is None else \
                    [LegacyLogprobs() for _ in range(len(ids) * runs)]
                if req.stream:  # (never with best_of > n)
                    include_usage = bool(req.stream_options and
                                         req.stream_options.include_usage)
                    await self._stream(ids, n, created, req.model, include_usage, legacy)
                else:
                    await self._collect(ids, runs, created, req.model, legacy,
                                        keep=n, show_logprobs=req.logprobs is not None)
        except InvalidRequest as exc:
            if runs > n and exc.param == "n":  # the scheduler counts choices as n
                raise InvalidRequest(exc.message.replace("'n' is", "'best_of' is", 1),
                                     param="best_of") from exc
            raise

    def _runs(self, req: ct.CompletionRequest, n: int) -> int:
        """How many choices to generate per prompt: ``best_of`` (at least ``n`` and not
        streamed when larger, checked when the request was parsed), else ``n``; above --max-n a
        400 naming it."""
        runs = req.best_of or n
        if runs > self.state.settings.max_n:
            raise InvalidRequest(f"'best_of' is {runs}; this server gives at most "
                                 f"{self.state.settings.max_n} choices per request (--max-n).",
                                 param="best_of")
        return runs

    async def _collect(self, ids: list[str], n: int, created: int, model: str,
                       legacy: list[LegacyLogprobs] | None, keep: int | None = None,
                       show_logprobs: bool = True) -> None:
        """Each prompt's ``n`` choices; with ``keep`` < ``n`` (``best_of``), only the ``keep``
        with the highest mean token log-probability, best first, as choices ``p * keep + r``
        (their logprobs shown only if the request asked, ``show_logprobs``)."""
        first = {rid: i * n for i, rid in enumerate(ids)}  # each prompt's first choice
        parts: list[list[str]] = [[] for _ in range(len(ids) * n)]

        def on_delta(d: TextDelta) -> None:
            i = first[d.request_id] + d.index
            parts[i].append(d.text)
            if legacy is not None and d.logprobs:
                legacy[i].add(d.logprobs)

        done = await self.gather_all(on_delta, ids, n)
        if done is None:
            return
        tally = Finishes(ids, n)
        for fin in done:
            tally.add(fin)
        choices = [self._choice("".join(parts[i]), i, fin.finish_reason, legacy)
                   for fin in done for i in (first[fin.request_id] + fin.index,)]
        if keep is not None and keep < n:
            # (an echoed prompt's entries come first: only the generated tokens count)
            generated = {first[fin.request_id] + fin.index: fin.completion_tokens
                         for fin in done}
            choices = best_choices(choices, n, keep, generated)
        if not show_logprobs:
            for choice in choices:
                choice.logprobs = None
        self.write_json(ct.Completion(
            id=ids[0], created=created, model=model, choices=choices,
            usage=ct.usage(*tally.totals())))

    @staticmethod
    def _choice(text: str, i: int, finish: str, legacy: list[LegacyLogprobs] | None
                ) -> ct.CompletionChoice:
        return ct.CompletionChoice(text, i, finish, None if legacy is None else legacy[i].whole)

    async def _stream(self, ids: list[str], n: int, created: int, model: str,
                      include_usage: bool, legacy: list[LegacyLogprobs] | None) -> None:
        """With ``legacy`` (logprobs asked), a delta's chunk carries its tokens in the legacy
        shape, ``text_offset`` counted from the choice's start; a delta of tokens whose text
        is not out yet (an unfinished character, a possible stop string) is a chunk with empty
        text and those tokens."""
        first = {rid: i * n for i, rid in enumerate(ids)}
        finished = Finishes(ids, n)

        def chunk(i: int, text: str, finish: str | None = None,
                  logprobs: CompletionLogprobs | None = None) -> bytes:
            return sse.event(ct.Completion(id=ids[0], created=created, model=model,
                                           choices=[ct.CompletionChoice(text, i, finish,
                                                                        logprobs)]))

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                i = first[ev.request_id] + ev.index
                if legacy is not None and ev.logprobs:
                    return chunk(i, ev.text, logprobs=legacy[i].add(ev.logprobs))
                return chunk(i, ev.text) if ev.text else b""
            if isinstance(ev, Finished):
                out = chunk(first[ev.request_id] + ev.index, "", ev.finish_reason)
                if not finished.add(ev):
                    return out
                if include_usage:
                    out += sse.event(ct.Completion(id=ids[0], created=created, model=model,
                                                   choices=[],
                                                   usage=ct.usage(*finished.totals())))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        if not await self.open_stream(b""):
            return
        await self.stream(render, ids, n)


def mean_logprob(choice: ct.CompletionChoice, generated: int | None = None) -> float:
    """The mean log-probability of a choice's last ``generated`` tokens (None: all; an echoed
    prompt's entries come first), ``-inf`` for none: a choice that ended at once ranks last."""
    values = choice.logprobs.token_logprobs if choice.logprobs else []
    if generated is not None:
        values = values[len(values) - generated:] if generated else []
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else -math.inf


def best_choices(choices: list[ct.CompletionChoice], runs: int, keep: int,
                 generated: dict[int, int] | None = None) -> list[ct.CompletionChoice]:
    """``best_of``: of each prompt's ``runs`` choices (``choices`` in prompt order, ``runs``
    each, as generated), the ``keep`` with the highest mean token log-probability, best first
    (ties: the earlier), re-indexed ``p * keep + r``. ``generated``: each choice's generated
    tokens by its index (None: every entry is one). OpenAI's rule: "Generates best_of
    completions server-side and returns the best (the one with the highest log probability per
    token)" (API reference, ``best_of``)."""
    out: list[ct.CompletionChoice] = []
    for p in range(len(choices) // runs):
        group = choices[p * runs:(p + 1) * runs]
        def score(c: ct.CompletionChoice) -> float:
            return mean_logprob(c, None if generated is None else generated[c.index])

        ranked = sorted(group, key=lambda c: (-score(c), c.index))[:keep]
        for r, choice in enumerate(ranked):
            choice.index = p * keep + r
            out.append(choice)
    return out
