"""The road from a chat-shaped request to its job and its answer's parser, for every API whose
answer comes from a chat job: chat completions, and the Responses API and Anthropic's Messages
(each translates its request into a :class:`~hearth.api.openai_types.ChatCompletionRequest`
first, so that tools, ``response_format`` grammars, thinking and every 400 are chat's).
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth.api import openai_types
from hearth.api.chat_answer import Answer
from hearth.api.handlers.jobs import JobHandler
from hearth.api.tool_calling import ToolPlan, generic_messages, plan_tools
from hearth.api.tool_families import Family, Thinking, after_thinking
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatJob, ChatMessage


@dataclass
class ChatTurn:
    """A chat request made ready: the job to submit, the tool plan, and the answer's parser
    (None: the text goes out as it comes — no tools offered and a model that does not think);
    with ``n`` > 1 choices, each choice's answer has a parser of its own (:meth:`answers`)."""

    job: ChatJob
    plan: ToolPlan
    answer: Answer | None

    def answers(self) -> list[Answer] | None:
        """One answer's parser per choice (the first is :attr:`answer`), or None."""
        if self.answer is None:
            return None
        return [self.answer, *(Answer(self.plan) for _ in range(self.job.n - 1))]


class ChatJobHandler(JobHandler):
    """A :class:`JobHandler` whose requests run as chat jobs."""

    def chat_prompt(self, req: openai_types.ChatCompletionRequest
                    ) -> tuple[str, list[ChatMessage], ToolPlan]:
        """The model id, the messages to render and the tool plan of ``req`` (InvalidRequest
        naming the field; the model's 404): what its prompt is made of. A request that only
        counts the prompt's tokens (Anthropic's count_tokens) stops here."""
        return self._prompt(req, openai_types.chat_messages(req))

    def _prompt(self, req: openai_types.ChatCompletionRequest, messages: list[ChatMessage]
                ) -> tuple[str, list[ChatMessage], ToolPlan]:
        entry = self.resolve_model(req.model)
        template = self.state.settings.model_config(entry.id).chat_template or (
            entry.info.chat_template if entry.info is not None else None)
        plan = plan_tools(req, messages, template)
        if plan.family is Family.GENERIC:
            messages = generic_messages(plan, messages, req)
        return entry.id, messages, plan

    def chat_turn(self, req: openai_types.ChatCompletionRequest) -> ChatTurn:
        """Check ``req`` and build its job (InvalidRequest naming the field; the model's 404).
        Takes the request's id (:meth:`new_request_id`)."""
        messages = openai_types.chat_messages(req)
        params = openai_types.requested_sampling(req)
        n = self.choices(req.n)
        grammar = openai_types.response_grammar(req)
        model, messages, plan = self._prompt(req, messages)
        if plan.active:  # the plan's grammar holds response_format's JSON too, if any
            grammar = plan.grammar
        elif grammar is not None:  # response_format's JSON comes after the thinking
            grammar = after_thinking(grammar, plan.thinking)
        if grammar is not None and params.stop:
            # a stop string matched inside the JSON or a call would cut it: with a grammar the
            # only incomplete answer is one that ran out of tokens (finish_reason "length")
            raise InvalidRequest("'stop' together with 'response_format' JSON or 'tools' is not "
                                 "supported by this server: a stop string would cut the JSON.",
                                 param="stop")
        answer = Answer(plan) if plan.active or plan.thinking is not Thinking.NONE else None
        logprobs = openai_types.chat_logprobs(req)
        if logprobs is not None and answer is not None:
            # the parser moves text between content, reasoning and calls and holds some back:
            # a token's entry would not line up with the content its text ends up in
            raise InvalidRequest("'logprobs' together with 'tools' (or with a model whose answer "
                                 "is split into reasoning and content) is not supported by this "
                                 "server.", param="logprobs")
        rid = self.new_request_id()
        frontend, key_name = self.job_owner()
        job = ChatJob(rid, frontend, key_name, model, messages, params,
                      grammar=grammar, tools=plan.job_tools(),
                      shown_tokens=plan.shown_tokens(), logprobs=logprobs, n=n)
        return ChatTurn(job, plan, answer)
