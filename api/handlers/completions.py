"""POST {prefix}/completions — OpenAI's legacy completions, with fill-in-the-middle.

Each prompt of the request is one job (a ChatJob whose ``prompt`` skips the chat template),
submitted together so they queue, batch and share cached prefixes like any other requests; the
answer merges them as choices in prompt order. Usage sums every prompt and choice; a client that
leaves cancels every job; one job's error ends the request (the others are cancelled). Streamed,
each ``text_completion`` chunk carries its choice's ``index``; a choice's last chunk has its
``finish_reason``; then the usage chunk (``stream_options.include_usage``) and ``[DONE]``.
"""

from __future__ import annotations

import time

from hearth.api import completion_types as ct
from hearth.api import errors as mapper
from hearth.api import sse
from hearth.api.handlers.jobs import JobHandler, error_of
from hearth.api.logprobs import CompletionLogprobs, LegacyLogprobs
from hearth.api.openai_types import Usage, sampling_of
from hearth.scheduler.messages import ChatJob, Event, Failed, Finished, Job, TextDelta


class CompletionsHandler(JobHandler):
    endpoint = "completions"
    id_prefix = "cmpl-"

    async def post(self) -> None:
        req = ct.parse_completion_request(self.body)
        self.log_model = req.model
        prompts = ct.raw_prompts(req)
        params = sampling_of(req, req.max_tokens)
        entry = self.resolve_model(req.model)
        frontend, key_name = self.job_owner()
        jobs: list[Job] = [ChatJob(self.new_request_id(), frontend, key_name, entry.id, [],
                                   params, prompt=prompt, logprobs=req.logprobs)
                           for prompt in prompts]
        ids = [job.request_id for job in jobs]
        async with self.submitted_all(jobs) as firsts:
            if firsts is None:
                return
            created = int(time.time())
            # (echo is refused with logprobs: the choice's text starts with the completion)
            legacy = None if req.logprobs is None else [LegacyLogprobs() for _ in ids]
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                await self._stream(ids, created, req.model, include_usage, legacy)
            else:
                await self._collect(ids, created, req.model, legacy)

    async def _collect(self, ids: list[str], created: int, model: str,
                       legacy: list[LegacyLogprobs] | None) -> None:
        index = {rid: i for i, rid in enumerate(ids)}
        parts: list[list[str]] = [[] for _ in ids]

        def on_delta(d: TextDelta) -> None:
            i = index[d.request_id]
            parts[i].append(d.text)
            if legacy is not None and d.logprobs:
                legacy[i].add(d.logprobs)

        done = await self.gather_all(on_delta, ids)
        if done is None:
            return
        self.write_json(ct.Completion(
            id=ids[0], created=created, model=model,
            choices=[ct.CompletionChoice("".join(p), i, fin.finish_reason,
                                         None if legacy is None else legacy[i].whole)
                     for i, (p, fin) in enumerate(zip(parts, done, strict=True))],
            usage=_usage(done)))

    async def _stream(self, ids: list[str], created: int, model: str,
                      include_usage: bool, legacy: list[LegacyLogprobs] | None) -> None:
        """With ``legacy`` (logprobs asked), a delta's chunk carries its tokens in the legacy
        shape, ``text_offset`` counted from the choice's start; a delta of tokens whose text
        is not out yet (an unfinished character, a possible stop string) is a chunk with empty
        text and those tokens."""
        index = {rid: i for i, rid in enumerate(ids)}
        finished: list[Finished] = []

        def chunk(i: int, text: str, finish: str | None = None,
                  logprobs: CompletionLogprobs | None = None) -> bytes:
            return sse.event(ct.Completion(id=ids[0], created=created, model=model,
                                           choices=[ct.CompletionChoice(text, i, finish,
                                                                        logprobs)]))

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                i = index[ev.request_id]
                if legacy is not None and ev.logprobs:
                    return chunk(i, ev.text, logprobs=legacy[i].add(ev.logprobs))
                return chunk(i, ev.text) if ev.text else b""
            if isinstance(ev, Finished):
                finished.append(ev)
                out = chunk(index[ev.request_id], "", ev.finish_reason)
                if len(finished) < len(ids):
                    return out
                if include_usage:
                    out += sse.event(ct.Completion(id=ids[0], created=created, model=model,
                                                   choices=[], usage=_usage(finished)))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        if not await self.open_stream(b""):
            return
        await self.stream(render, ids)


def _usage(done: list[Finished]) -> Usage:
    return ct.usage(sum(f.prompt_tokens for f in done), sum(f.completion_tokens for f in done),
                    sum(f.cached_tokens for f in done))
