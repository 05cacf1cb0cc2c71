"""Porcupine's vocabulary: operations, events, models and the three-valued verdict.

A :class:`Model` is a handful of small functions and knows nothing about any
database; the checker (``checkers.wgl``) knows nothing about any model.  This is
Porcupine's shape (``model.go``), in Python.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal, Sequence


class CheckResult(str, enum.Enum):
    """Outcome of a linearizability check (Porcupine's Ok / Illegal / Unknown)."""

    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


class _Unknown:
    """The output of an operation whose result nobody saw (an ``info`` op, a timed-out read).

    A singleton: compare with ``output is UNKNOWN``.  ``__reduce__`` names the module
    global so the identity survives multiprocessing's transport to worker processes.
    """

    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation with its real-time interval.

    ``return_time`` is ``None`` for a pending operation (invoked, never completed, or
    completed with ``info``): it is placed at infinity, may take effect at any point
    after ``call`` or never, and its ``output`` is normally :data:`UNKNOWN`.
    ``index`` points back into the source history (the invocation's index) for reports.
    """

    client_id: int | str
    input: Any
    call: int
    output: Any
    return_time: int | None
    index: int = -1

    @property
    def pending(self) -> bool:
        return self.return_time is None


@dataclass(frozen=True, slots=True)
class Event:
    """A call or a return, in history order (Porcupine's ``Event``).

    ``id`` pairs a call with its return; a call without a return is pending.
    """

    client_id: int | str
    kind: Literal["call", "return"]
    value: Any
    id: int


def _no_partition(operations: Sequence[Operation]) -> list[list[Operation]]:
    return [list(operations)]


def _describe_any(value: Any, *rest: Any) -> str:
    return " ".join(repr(v) for v in (value, *rest))


@dataclass(frozen=True)
class Model:
    """A sequential specification, Porcupine style.

    - ``init()`` gives the initial state.
    - ``step(state, input, output)`` returns ``(legal, new_state)``: whether the
      operation with that input may return that output in that state.
    - ``equal(a, b)``: state equality; leave ``None`` when states are hashable
      (the memo then uses a set, which is much faster).
    - ``partition(operations)`` splits a history into independent sub-histories
      (P-compositionality, e.g. per key); the default keeps it whole.
    - ``describe_operation(input, output)`` and ``describe_state(state)`` are for people.
    - ``read_only(input)`` (optional) marks state-preserving ops, which prunes the search.

    Define the functions at module level if you want partitions checked in worker
    processes (they travel by reference); lambdas still work, in-process.
    """

    name: str
    init: Callable[[], Hashable]
    step: Callable[[Any, Any, Any], tuple[bool, Any]]
    equal: Callable[[Any, Any], bool] | None = None
    partition: Callable[[Sequence[Operation]], list[list[Operation]]] = _no_partition
    describe_operation: Callable[[Any, Any], str] = _describe_any
    describe_state: Callable[[Any], str] = repr
    # Optional: ``read_only(input)`` is True for an op that never changes the state
    # and accepts an UNKNOWN output in any state (a read).  The search then never
    # re-tries such an op later once it fitted, and drops those with unknown output.
    read_only: Callable[[Any], bool] | None = None
    # Free-form parameters (e.g. the initial value) shown in reports.
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def events_to_operations(events: Sequence[Event]) -> list[Operation]:
    """Pair calls with returns by ``id``; positions in ``events`` become the times.

    A call with no return is pending.  Raises ``ValueError`` naming the event for a
    return without a call, a duplicated call id, or an unknown kind.
    """
    calls: dict[int, tuple[int, Event]] = {}
    done: dict[int, Operation] = {}
    order: list[int] = []
    for position, event in enumerate(events):
        if event.kind == "call":
            if event.id in calls:
                raise ValueError(f"event {position}: call id {event.id} is used twice")
            calls[event.id] = (position, event)
            order.append(event.id)
        elif event.kind == "return":
            if event.id not in calls:
                raise ValueError(f"event {position}: return for id {event.id} has no earlier call")
            if event.id in done:
                raise ValueError(f"event {position}: id {event.id} returns twice")
            call_pos, call = calls[event.id]
            done[event.id] = Operation(call.client_id, call.value, call_pos, event.value, position,
                                       index=call_pos)
        else:
            raise ValueError(f"event {position}: kind must be 'call' or 'return', got {event.kind!r}")
    operations: list[Operation] = []
    for op_id in order:
        if op_id in done:
            operations.append(done[op_id])
        else:
            call_pos, call = calls[op_id]
            operations.append(Operation(call.client_id, call.value, call_pos, UNKNOWN, None,
                                        index=call_pos))
    return operations
