"""Typed errors a request can end with, shared by every process.

They cross process boundaries as ``Failed(kind=<class name>, message, param)`` events and are
rebuilt on the api side with :func:`rebuild`; the api's error mapper turns them into HTTP status
codes and the OpenAI envelope. Nobody matches on message text.
"""

from __future__ import annotations


class HearthError(Exception):
    """Base class. ``param`` names the request field at fault, when there is one."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(HearthError):
    pass


class ContextLengthExceeded(HearthError):
    pass


class ModelNotFound(HearthError):
    @classmethod
    def named(cls, model: str) -> ModelNotFound:
        """The one error for a request's ``model`` that names no model (neither a file stem
        nor an alias), whichever process finds it: the api, or the scheduler when the file went
        away in between."""
        return cls(f"The model '{model}' does not exist. The models endpoint lists the models "
                   "this server has.", param="model")


class NotFound(HearthError):
    """A path that is not an endpoint."""


class MethodNotAllowed(HearthError):
    pass


class Unauthorized(HearthError):
    pass


class ForbiddenHost(HearthError):
    pass


class PayloadTooLarge(HearthError):
    pass


class Overloaded(HearthError):
    """The queue is full; the client should retry later."""


class ModelLoadFailed(HearthError):
    pass


class WorkerDied(HearthError):
    pass


class ShuttingDown(HearthError):
    pass


class InternalError(HearthError):
    pass


_KINDS: dict[str, type[HearthError]] = {
    cls.__name__: cls
    for cls in (
        InvalidRequest,
        ContextLengthExceeded,
        ModelNotFound,
        NotFound,
        MethodNotAllowed,
        Unauthorized,
        ForbiddenHost,
        PayloadTooLarge,
        Overloaded,
        ModelLoadFailed,
        WorkerDied,
        ShuttingDown,
        InternalError,
    )
}


def kind_of(err: HearthError) -> str:
    return type(err).__name__


def rebuild(kind: str, message: str, param: str | None = None) -> HearthError:
    """The exception a ``Failed`` event stands for (unknown kinds become InternalError)."""
    return _KINDS.get(kind, InternalError)(message, param=param)
