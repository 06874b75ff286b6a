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

import time

from hearth.api import completion_types as ct
from hearth.api import errors as mapper
from hearth.api import sse
from hearth.api.handlers.jobs import Finishes, JobHandler, error_of
from hearth.api.logprobs import CompletionLogprobs, LegacyLogprobs
from hearth.api.openai_types import sampling_of
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
        entry = self.resolve_model(req.model)
        frontend, key_name = self.job_owner()
        jobs: list[Job] = [ChatJob(self.new_request_id(), frontend, key_name, entry.id, [],
                                   params, prompt=prompt, n=n, logprobs=req.logprobs)
                           for prompt in prompts]
        ids = [job.request_id for job in jobs]
        async with self.submitted_all(jobs) as firsts:
            if firsts is None:
                return
            created = int(time.time())
            # (with echo, the engine's echo delta brings the prompt tokens' entries first)
            legacy = None if req.logprobs is None else \
                [LegacyLogprobs() for _ in range(len(ids) * n)]
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                await self._stream(ids, n, created, req.model, include_usage, legacy)
            else:
                await self._collect(ids, n, created, req.model, legacy)

    async def _collect(self, ids: list[str], n: int, created: int, model: str,
                       legacy: list[LegacyLogprobs] | None) -> None:
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
        self.write_json(ct.Completion(
            id=ids[0], created=created, model=model,
            choices=[self._choice("".join(parts[i]), i, fin.finish_reason, legacy)
                     for fin in done for i in (first[fin.request_id] + fin.index,)],
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
