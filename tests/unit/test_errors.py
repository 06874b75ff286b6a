"""scheduler/errors.py: each error that crosses a process declares one ErrorKind, the kind ->
class table is derived from the classes, and ``rebuild`` turns a Failed event's kind back into
its exception (an unknown kind into InternalError)."""

from __future__ import annotations

from collections import Counter

import pytest
from hearth.scheduler import errors as e

CROSS_PROCESS = e.cross_process_classes()


def test_every_kind_has_exactly_one_class() -> None:
    counts = Counter(cls.kind for cls in CROSS_PROCESS)
    assert counts == Counter(set(e.ErrorKind))


def test_every_class_here_declares_its_own_kind() -> None:
    defined = {cls for cls in vars(e).values()
               if isinstance(cls, type) and issubclass(cls, e.HearthError)
               and cls is not e.HearthError}
    assert defined == set(CROSS_PROCESS)
    assert all("kind" in vars(cls) for cls in defined)


@pytest.mark.parametrize("cls", CROSS_PROCESS, ids=lambda c: c.__name__)
def test_a_kind_is_its_class_name_on_the_wire(cls: type[e.HearthError]) -> None:
    # the wire carries the value, which was the class name before kinds were typed
    assert cls.kind.value == cls.__name__
    assert isinstance(cls.kind, e.ErrorKind)


@pytest.mark.parametrize("cls", CROSS_PROCESS, ids=lambda c: c.__name__)
def test_rebuild_round_trips(cls: type[e.HearthError]) -> None:
    original = cls("over the wire", param="stop")
    kind = original.kind
    assert kind == cls.__name__
    back = e.rebuild(kind, original.message, original.param)
    assert type(back) is cls
    assert back.message == "over the wire"
    assert back.param == "stop"
    assert str(back) == "over the wire"


def test_rebuild_unknown_kind_is_internal_error() -> None:
    # a peer's kind arrives typed; a plain string (an older caller) is looked up the same way
    back = e.rebuild("KeyError", "boom")  # type: ignore[arg-type]
    assert type(back) is e.InternalError
    assert back.message == "boom"
    assert back.param is None
    assert type(e.rebuild("HearthError", "x")) is e.InternalError  # type: ignore[arg-type]
    assert type(e.rebuild("", "x")) is e.InternalError  # type: ignore[arg-type]


def test_an_unknown_kind_value_is_internal_error() -> None:
    assert e.ErrorKind("FromANewerWorker") is e.ErrorKind.INTERNAL_ERROR
    assert e.ErrorKind("WorkerDied") is e.ErrorKind.WORKER_DIED


def test_a_subclass_keeps_its_parents_kind_and_adds_none() -> None:
    class VeryLong(e.ContextLengthExceeded):
        pass

    assert VeryLong("x").kind is e.ErrorKind.CONTEXT_LENGTH_EXCEEDED
    assert VeryLong not in e.cross_process_classes()
    assert type(e.rebuild(VeryLong.kind, "x")) is e.ContextLengthExceeded


def test_an_error_without_a_kind_crosses_as_internal() -> None:
    assert e.HearthError("?").kind is e.ErrorKind.INTERNAL_ERROR
