"""Token ids that come in with a request, checked against the model's vocabulary.

Token ids come in as ``logit_bias`` keys (chat) and as token-array inputs (embeddings; the
completions endpoint's token-array prompts will too). The api knows nothing of vocabularies, so
the scheduler checks them before queueing, from the GGUF header's ``tokenizer.ggml.tokens``
(its length is the vocabulary size), and the worker checks them again with llama.cpp's own
``n_vocab`` (a header may lack the token list). An id outside the vocabulary is a 400 with
``param`` naming the field — never silently dropped (llama.cpp's logit-bias sampler would).
"""

from __future__ import annotations

from hearth.scheduler import errors
from hearth.scheduler.messages import ChatJob, EmbedJob, Job, TokenizeJob
from hearth.tools.gguf_header import GGUFInfo


def check_token_ids(job: Job, n_vocab: int | None) -> None:
    """Raise InvalidRequest (``param``: "logit_bias", "prompt", "input" or "tokens") for the
    first id in ``job``
    outside 0..n_vocab-1. ``n_vocab`` None (unknown): nothing is checked."""
    if n_vocab is None:
        return
    if isinstance(job, ChatJob):
        for token in job.params.logit_bias:
            if not 0 <= token < n_vocab:
                raise errors.InvalidRequest.token_outside_vocab(
                    "logit_bias", token, n_vocab, param="logit_bias")
        if job.prompt is not None:
            bad = next((t for t in job.prompt.tokens if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise errors.InvalidRequest.token_outside_vocab(
                    "prompt", bad, n_vocab, param="prompt")
    elif isinstance(job, EmbedJob):
        for i, tokens in enumerate(job.tokens):
            bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise errors.InvalidRequest.token_outside_vocab(
                    f"input[{i}]", bad, n_vocab, param="input")
    elif isinstance(job, TokenizeJob):
        bad = next((t for t in job.tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise errors.InvalidRequest.token_outside_vocab("tokens", bad, n_vocab,
                                                            param="tokens")


def check_fim(job: Job, info: GGUFInfo) -> None:
    """A completion with a ``suffix`` needs the model's fill-in-the-middle tokens (from its GGUF
    header, see GGUFInfo.fim_tokens): without them, InvalidRequest with ``param: "suffix"``."""
    if isinstance(job, ChatJob) and job.prompt is not None and job.prompt.suffix is not None \
            and info.fim_tokens is None:
        raise errors.InvalidRequest(
            f"The model '{job.model}' has no fill-in-the-middle tokens in its GGUF header "
            "(tokenizer.ggml.fim_pre_token_id, fim_suf_token_id, fim_mid_token_id), so it "
            "cannot complete with a 'suffix'.", param="suffix")
