"""Typed errors a request can end with, that cross process boundaries.

A worker or the scheduler ends a request with ``Failed.of(request_id, exc)``, which carries the
exception's :class:`ErrorKind`, message and param; the api rebuilds the exception with
:func:`rebuild` and its error mapper (api/errors.py) turns it into an HTTP status and the OpenAI
envelope. Nobody matches on message text. Errors that only the api raises (a bad URL, a missing
key...) never cross a process and live in api/errors.py.

Each class names its own kind once; the kind -> class table below is derived from the classes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar


class ErrorKind(enum.StrEnum):
    """The kinds of error on the wire. Each value is its class's name, as it always was."""

    INVALID_REQUEST = "InvalidRequest"
    CONTEXT_LENGTH_EXCEEDED = "ContextLengthExceeded"
    MODEL_NOT_FOUND = "ModelNotFound"
    OVERLOADED = "Overloaded"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    WORKER_DIED = "WorkerDied"
    SHUTTING_DOWN = "ShuttingDown"
    INTERNAL_ERROR = "InternalError"

    @classmethod
    def _missing_(cls, value: object) -> ErrorKind:
        # A kind this process does not know (a newer peer) still ends its request, as an
        # internal error: msgspec calls this while decoding, so the event batch that carries it
        # is not rejected with every other request's events in it.
        return cls.INTERNAL_ERROR


class HearthError(Exception):
    """Base class. ``param`` names the request field at fault, when there is one.

    ``kind`` is what the error crosses a process as; each class below declares its own. An error
    without one (the api's HTTP-only errors) would cross as an internal error.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL_ERROR

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(HearthError):
    kind = ErrorKind.INVALID_REQUEST

    @classmethod
    def wrong_dimensions(cls, model: str, width: int) -> InvalidRequest:
        """An embeddings request's ``dimensions`` other than the model's own width: hearth
        never shortens vectors. Raised by the scheduler from the GGUF header's
        ``embedding_length``, and by the worker (which asks llama.cpp) as a backstop."""
        return cls(f"'{model}' does not support shortening its embeddings: its vectors have "
                   f"{width} dimensions.", param="dimensions")


    @classmethod
    def token_outside_vocab(cls, where: str, token: int, n_vocab: int,
                            param: str) -> InvalidRequest:
        """A token id a request sent (``where``: "logit_bias", "input[2]"…) that the model's
        vocabulary of ``n_vocab`` ids (0 to n_vocab - 1) does not hold. Raised by the scheduler
        from the GGUF header's token list, and by the worker (which asks llama.cpp) as a
        backstop."""
        return cls(f"{where} holds token id {token}, outside this model's vocabulary of "
                   f"{n_vocab} tokens (ids 0 to {n_vocab - 1}).", param=param)


class ContextLengthExceeded(HearthError):
    kind = ErrorKind.CONTEXT_LENGTH_EXCEEDED


class ModelNotFound(HearthError):
    kind = ErrorKind.MODEL_NOT_FOUND

    @classmethod
    def named(cls, model: str) -> ModelNotFound:
        """The one error for a request's ``model`` that names no model (neither a file stem
        nor an alias), whichever process finds it: the api, or the scheduler when the file went
        away in between."""
        return cls(f"The model '{model}' does not exist. The models endpoint lists the models "
                   "this server has.", param="model")


class Overloaded(HearthError):
    """The queue is full; the client should retry later."""

    kind = ErrorKind.OVERLOADED


class ModelLoadFailed(HearthError):
    kind = ErrorKind.MODEL_LOAD_FAILED

    @classmethod
    def named(cls, model: str, reason: str) -> ModelLoadFailed:
        """The one error for a model whose file is unreadable or whose worker could not load
        it (``reason`` says why: the GGUF reader's or llama.cpp's words)."""
        return cls(f"The model '{model}' could not be loaded: {reason}")


class WorkerDied(HearthError):
    kind = ErrorKind.WORKER_DIED


class ShuttingDown(HearthError):
    kind = ErrorKind.SHUTTING_DOWN


class InternalError(HearthError):
    kind = ErrorKind.INTERNAL_ERROR


def cross_process_classes() -> list[type[HearthError]]:
    """The classes of this module that declare their own ``kind``, found by walking
    HearthError's subclasses (a subclass that only inherits its parent's kind, or one defined
    elsewhere, is not a kind of its own)."""
    found: list[type[HearthError]] = []
    todo = list(HearthError.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__ and "kind" in vars(cls):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


# kind -> class, derived from the classes above (tests/unit/test_errors.py checks that each kind
# has exactly one); read-only, so nothing adds to it later.
_BY_KIND: Mapping[ErrorKind, type[HearthError]] = MappingProxyType(
    {cls.kind: cls for cls in cross_process_classes()})


def rebuild(kind: ErrorKind, message: str, param: str | None = None) -> HearthError:
    """The exception a ``Failed`` event stands for (unknown kinds become InternalError)."""
    return _BY_KIND.get(ErrorKind(kind), InternalError)(message, param=param)
