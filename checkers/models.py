"""The models the checker ships: registers, a multi-key kv, Porcupine's string kv, a fenced register.

Every model here keys its operations (input ``(kind, key, a, b)``) and partitions the
history per key (P-compositionality: a history is linearizable iff each key's
sub-history is), so a state is one key's value.  States are plain hashable values or
tuples, inputs tuples with small-int kinds, and the step functions are module-level
so that worker processes can use them.

Outputs: a read returns the value read; a write returns ``None``; a cas returns
``True`` (it swapped) or ``False`` (the compare failed); a fenced put returns ``True``
(accepted) or ``False`` (refused); :data:`UNKNOWN` means nobody saw the result.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from checkers.model import UNKNOWN, Model, Operation

READ, WRITE, CAS, DELETE, APPEND, FENCED_PUT = 0, 1, 2, 3, 4, 5
KIND_NAMES = {READ: "read", WRITE: "write", CAS: "cas", DELETE: "delete", APPEND: "append",
              FENCED_PUT: "fenced-put"}


def partition_by_key(operations: Sequence[Operation]) -> list[list[Operation]]:
    """Split per key (``input[1]``), keeping each key's operations in their order."""
    groups: dict[Any, list[Operation]] = {}
    for op in operations:
        groups.setdefault(op.input[1], []).append(op)
    return list(groups.values())


def _show(value: Any) -> str:
    return "nil" if value is None else repr(value)


def describe_operation(inp: tuple, output: Any) -> str:
    """``k1: write 3``, ``read -> 3``, ``cas 1->2 -> ok``; ``?`` when unknown."""
    kind, key, a, b = inp
    prefix = "" if key is None else f"{key}: "
    if kind == READ:
        return f"{prefix}read -> {'?' if output is UNKNOWN else _show(output)}"
    if kind == WRITE:
        return f"{prefix}write {_show(a)}" + (" (?)" if output is UNKNOWN else "")
    if kind == DELETE:
        return f"{prefix}delete" + (" (?)" if output is UNKNOWN else "")
    if kind == APPEND:
        return f"{prefix}append {_show(a)}" + (" (?)" if output is UNKNOWN else "")
    if kind == CAS:
        verdict = "?" if output is UNKNOWN else ("ok" if output else "fail")
        return f"{prefix}cas {_show(a)}->{_show(b)} -> {verdict}"
    if kind == FENCED_PUT:
        verdict = "?" if output is UNKNOWN else ("accepted" if output else "refused")
        return f"{prefix}fenced-put {_show(a)} token {b} -> {verdict}"
    return f"{prefix}{kind!r} {a!r} {b!r} -> {output!r}"


def is_read(inp: tuple) -> bool:
    """Reads change no state and accept any output when it is unknown."""
    return inp[0] == READ


def describe_value(state: Any) -> str:
    return _show(state)


# ---- register / cas-register / kv: state = the key's value (None = never written) ----

def register_step(state: Any, inp: tuple, output: Any) -> tuple[bool, Any]:
    kind = inp[0]
    if kind == READ:
        return (output is UNKNOWN or output == state), state
    if kind == WRITE:
        return True, inp[2]
    if kind == CAS:
        if output is UNKNOWN:
            return True, (inp[3] if state == inp[2] else state)
        if output:
            return state == inp[2], inp[3]
        return state != inp[2], state
    if kind == DELETE:
        return True, None
    raise ValueError(f"the register model cannot apply {KIND_NAMES.get(kind, kind)!r}")


def _const(value: Any) -> Any:
    return value


def register_model(initial: Any = None) -> Model:
    """A read/write register per key; ``initial`` is every key's value before any write."""
    return Model(name="register", init=functools.partial(_const, initial), step=register_step,
                 partition=partition_by_key, describe_operation=describe_operation,
                 describe_state=describe_value, read_only=is_read, params={"initial": initial})


def cas_register_model(initial: Any = None) -> Model:
    """A register with compare-and-set; an unwritten register reads as ``None`` (nil)."""
    return Model(name="cas-register", init=functools.partial(_const, initial), step=register_step,
                 partition=partition_by_key, describe_operation=describe_operation,
                 describe_state=describe_value, read_only=is_read, params={"initial": initial})


def kv_model() -> Model:
    """A multi-key map (get/put/delete/cas), checked key by key; absent keys read ``None``."""
    return Model(name="kv", init=functools.partial(_const, None), step=register_step,
                 partition=partition_by_key, describe_operation=describe_operation,
                 describe_state=describe_value, read_only=is_read)


# ---- Porcupine's kv: string values, absent = "", append concatenates ----

def porcupine_kv_step(state: str, inp: tuple, output: Any) -> tuple[bool, str]:
    kind = inp[0]
    if kind == READ:
        return (output is UNKNOWN or output == state), state
    if kind == WRITE:
        return True, inp[2]
    if kind == APPEND:
        return True, state + inp[2]
    raise ValueError(f"the porcupine-kv model cannot apply {KIND_NAMES.get(kind, kind)!r}")


def porcupine_kv_model() -> Model:
    """Porcupine's test kv: get/put/append on strings, a missing key reads ``""``."""
    return Model(name="porcupine-kv", init=functools.partial(_const, ""), step=porcupine_kv_step,
                 partition=partition_by_key, describe_operation=describe_operation,
                 describe_state=describe_value, read_only=is_read)


# ---- fenced register: state = (value, highest accepted token) ----

def fenced_register_step(state: tuple, inp: tuple, output: Any) -> tuple[bool, tuple]:
    value, highest = state
    kind = inp[0]
    if kind == READ:
        return (output is UNKNOWN or output == value), state
    if kind == FENCED_PUT:
        token = inp[3]
        # Ukehi refuses a put whose token is lower than the highest accepted one.
        accepted = highest is None or token >= highest
        if output is UNKNOWN:
            return True, ((inp[2], token) if accepted else state)
        if output:
            return accepted, (inp[2], token)
        return not accepted, state
    raise ValueError(f"the fenced-register model cannot apply {KIND_NAMES.get(kind, kind)!r}")


def describe_fenced_state(state: tuple) -> str:
    value, highest = state
    return f"{_show(value)} (highest token {'none' if highest is None else highest})"


def fenced_register_model(initial: Any = None) -> Model:
    """A register per key written only by fenced puts; a put with a lower token is refused."""
    return Model(name="fenced-register", init=functools.partial(_const, (initial, None)),
                 step=fenced_register_step, partition=partition_by_key,
                 describe_operation=describe_operation, describe_state=describe_fenced_state, read_only=is_read,
                 params={"initial": initial})


MODEL_FACTORIES: dict[str, Callable[..., Model]] = {
    "register": register_model,
    "cas-register": cas_register_model,
    "kv": lambda initial=None: kv_model(),
    "porcupine-kv": lambda initial=None: porcupine_kv_model(),
    "fenced-register": fenced_register_model,
}


def make_model(name: str, initial: Any = None) -> Model:
    """The model called ``name`` (one of :data:`MODEL_FACTORIES`)."""
    try:
        factory = MODEL_FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_FACTORIES)}") from None
    return factory(initial)
