"""One response's streamed events, built from its answer parser's pieces (:mod:`.tool_parsers`'
``Text``, ``Reasoning``, ``CallStart``, ``CallArguments``). Pure: pieces in, events out, no
model and no I/O (``tests/unit/test_responses_events.py`` feeds it made-up pieces).

The sequence (OpenAI's Responses streaming events; the official SDK's ``responses.stream()``
helper checks that each item is added before its content and done before the response
completes):

* ``response.created``, ``response.in_progress`` (the response with no output yet);
* per output item, in order (``output_index`` counts them from 0):
  ``response.output_item.added``, then for a message ``response.content_part.added``,
  ``response.output_text.delta``…, ``response.output_text.done``,
  ``response.content_part.done``; for thinking the same with ``reasoning_text``; for a
  function call ``response.function_call_arguments.delta`` and ``.done``; then
  ``response.output_item.done`` with the whole item;
* ``response.completed`` or ``response.incomplete`` (``max_output_tokens`` reached) with the
  whole response and its usage — or, when the job fails after the stream began, ``error`` and
  ``response.failed``.

``sequence_number`` counts every event of the stream from 0. The whole (non-streamed) answer is
the same builder's final response, so both ways give the same items.
"""

from __future__ import annotations

import msgspec
from hearth.api import openai_types as ot
from hearth.api import responses_types as rt
from hearth.api.responses_translate import NewId, new_id
from hearth.api.tool_parsers import CallArguments, CallStart, Out, Reasoning, Text


def usage_of(usage: ot.Usage) -> rt.ResponseUsage:
    """Chat's usage object as the Responses API names it."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    thought = (usage.completion_tokens_details.reasoning_tokens
               if usage.completion_tokens_details else 0)
    return rt.ResponseUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                            rt.InputTokensDetails(cached), rt.OutputTokensDetails(thought))


class _Open:
    """The item being written: a message or a reasoning item (its text so far)."""

    def __init__(self, kind: type[Text] | type[Reasoning], item_id: str, index: int) -> None:
        self.kind, self.id, self.index = kind, item_id, index
        self.parts: list[str] = []


class ResponseEvents:
    """The events of one response, in order. ``response`` is the response object as it starts
    (``status: "in_progress"``, no output); the builder fills in its output, status and usage.
    ``make_id`` makes the items' ids (``msg_…``, ``rs_…``, ``fc_…``)."""

    def __init__(self, response: rt.Response, make_id: NewId = new_id) -> None:
        self.response = response
        self.make_id = make_id
        self.seq = 0
        self._open: _Open | None = None
        self._calls: dict[int, tuple[int, rt.FunctionCallItem]] = {}  # parser index -> call
        self._open_calls: list[int] = []  # parser indexes of calls not yet done

    def _n(self) -> int:
        n = self.seq
        self.seq += 1
        return n

    def start(self) -> list[rt.Event]:
        first = msgspec.structs.replace(self.response, output=[])
        return [rt.ResponseCreated(self._n(), first),
                rt.ResponseInProgress(self._n(), msgspec.structs.replace(first))]

    def feed(self, outs: list[Out]) -> list[rt.Event]:
        events: list[rt.Event] = []
        for o in outs:
            if isinstance(o, (Text, Reasoning)):
                if not o.text:
                    continue
                if self._open is None or self._open.kind is not type(o):
                    self._close(events, "completed")
                    self._open_text(type(o), events)
                assert self._open is not None
                self._open.parts.append(o.text)
                event = rt.OutputTextDelta if isinstance(o, Text) else rt.ReasoningTextDelta
                events.append(event(self._n(), self._open.id, self._open.index, 0, o.text))
            elif isinstance(o, CallStart):
                self._close(events, "completed")
                index = len(self.response.output)
                item = rt.FunctionCallItem(self.make_id("fc"), o.id, o.name, "", "in_progress")
                self.response.output.append(item)
                self._calls[o.index] = (index, item)
                self._open_calls.append(o.index)
                events.append(rt.OutputItemAdded(self._n(), index,
                                                 msgspec.structs.replace(item)))
            elif isinstance(o, CallArguments):
                index, item = self._calls[o.index]
                item.arguments += o.text
                events.append(rt.FunctionCallArgumentsDelta(self._n(), item.id, index, o.text))
        return events

    def _open_text(self, kind: type[Text] | type[Reasoning], events: list[rt.Event]) -> None:
        index = len(self.response.output)
        if kind is Text:
            item: rt.OutputItem = rt.MessageItem(self.make_id("msg"), "assistant", [],
                                                 "in_progress")
            part: rt.OutputTextPart | rt.ReasoningTextPart = rt.OutputTextPart("")
        else:
            item = rt.ReasoningItem(self.make_id("rs"), [], [], "in_progress")
            part = rt.ReasoningTextPart("")
        self.response.output.append(item)
        self._open = _Open(kind, item.id, index)
        events.append(rt.OutputItemAdded(self._n(), index, msgspec.structs.replace(item)))
        events.append(rt.ContentPartAdded(self._n(), item.id, index, 0, part))

    def _close(self, events: list[rt.Event], status: rt.ItemStatus) -> None:
        """End the open message or reasoning item and every open call (``status``: how the
        last of them ends; the others are complete)."""
        for n, key in enumerate(self._open_calls):
            index, item = self._calls[key]
            item.status = status if n == len(self._open_calls) - 1 and self._open is None \
                else "completed"
            events.append(rt.FunctionCallArgumentsDone(self._n(), item.id, index,
                                                       item.arguments))
            events.append(rt.OutputItemDone(self._n(), index, item))
        self._open_calls.clear()
        text_item = self._open
        if text_item is None:
            return
        self._open = None
        text = "".join(text_item.parts)
        index = text_item.index
        done: rt.OutputItem
        if text_item.kind is Text:
            part: rt.OutputTextPart | rt.ReasoningTextPart = rt.OutputTextPart(text)
            events.append(rt.OutputTextDone(self._n(), text_item.id, index, 0, text))
            done = rt.MessageItem(text_item.id, "assistant", [rt.OutputTextPart(text)], status)
        else:
            part = rt.ReasoningTextPart(text)
            events.append(rt.ReasoningTextDone(self._n(), text_item.id, index, 0, text))
            done = rt.ReasoningItem(text_item.id, [], [rt.ReasoningTextPart(text)], status)
        events.append(rt.ContentPartDone(self._n(), text_item.id, index, 0, part))
        self.response.output[index] = done
        events.append(rt.OutputItemDone(self._n(), index, done))

    def finish(self, usage: rt.ResponseUsage, incomplete: bool) -> list[rt.Event]:
        """The answer has ended: close what is open and say how it ended (``incomplete``:
        ``max_output_tokens`` was reached). An answer with no item at all gets an empty
        message, so that there is always one."""
        events: list[rt.Event] = []
        status: rt.ItemStatus = "incomplete" if incomplete else "completed"
        if not self.response.output:
            self._open_text(Text, events)
        self._close(events, status)
        resp = self.response
        resp.usage = usage
        if incomplete:
            resp.status = "incomplete"
            resp.incomplete_details = rt.IncompleteDetails("max_output_tokens")
            events.append(rt.ResponseIncomplete(self._n(), resp))
        else:
            resp.status = "completed"
            events.append(rt.ResponseCompleted(self._n(), resp))
        return events

    def fail(self, code: str, message: str, param: str | None) -> list[rt.Event]:
        """The job failed after the stream began: open items end (incomplete), then an
        ``error`` event and ``response.failed`` with what was said so far."""
        events: list[rt.Event] = []
        self._close(events, "incomplete")
        events.append(rt.ErrorEvent(self._n(), message, code, param))
        self.response.status = "failed"
        self.response.error = rt.ResponseError(code, message)
        events.append(rt.ResponseFailed(self._n(), self.response))
        return events
