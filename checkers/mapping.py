"""From a history of events (``checkers.history.Op``) to a model's operations.

Invocations and completions are paired per process.  The rules (Knossos' and the
project's, see DESIGN.md):

- ops of the nemesis are not client operations and are ignored;
- ``fail``: the op certainly did not take effect, so it is dropped;
- ``info``, or an invocation never completed: the op is pending, placed at infinity
  with any output allowed (it may take effect at any time after its call, or never);
- ``ok``: the op took effect with the completion's value.

Times are positions in the history, not clocks: the recorder appends an invocation
before it sends a request and a completion after it sees the reply, so history order
is a real-time order, and position never ties.

:class:`Conventions` covers what other tools mean by the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from checkers.history import HistoryError, Op
from checkers.model import UNKNOWN, Operation
from checkers.models import APPEND, CAS, DELETE, FENCED_PUT, READ, WRITE


class OperationError(HistoryError):
    """A history event that reads fine but makes no sense as an operation; names the op index."""

    def __init__(self, op: Op, message: str) -> None:
        ValueError.__init__(self, f"op index {op.index} (process {op.process!r}): {message}")
        self.line_number = op.index + 1  # the harness writes op index i on line i + 1
        self.op_index = op.index


@dataclass(frozen=True)
class Conventions:
    """How to read a history another tool wrote.

    ``nil_read_is_unknown``: Knossos treats an ``ok`` read of ``nil`` as a read whose
    value is unknown (Jepsen's ``history.edn``).  ``failed_cas_returned_false``: in
    Porcupine's etcd logs ``:fail :cas`` is a cas that completed and returned false
    (the compare failed), which the model must confirm, instead of "did not happen".
    """

    nil_read_is_unknown: bool = False
    failed_cas_returned_false: bool = False


PROJECT = Conventions()
KNOSSOS = Conventions(nil_read_is_unknown=True)
PORCUPINE_ETCD = Conventions(failed_cas_returned_false=True)

# f names per model -> kind.  Unknown f names are an error, except those listed as
# ignored (they belong to another checker of the same workload).
_KINDS: dict[str, dict[str, int]] = {
    "register": {"read": READ, "write": WRITE},
    "cas-register": {"read": READ, "write": WRITE, "cas": CAS},
    "kv": {"get": READ, "read": READ, "put": WRITE, "write": WRITE, "delete": DELETE, "cas": CAS},
    "porcupine-kv": {"get": READ, "put": WRITE, "append": APPEND},
    "fenced-register": {"read": READ, "get": READ, "fenced-put": FENCED_PUT},
}
_IGNORED: dict[str, frozenset[str]] = {
    "fenced-register": frozenset({"acquire", "release"}),
}


def _pair(value: Any, op: Op, what: str) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise OperationError(op, f"{op.f} needs a value [{what}], got {value!r}")


def _input(model_name: str, kind: int, invoke: Op) -> tuple:
    key = invoke.key
    if kind == CAS:
        old, new = _pair(invoke.value, invoke, "old new")
        return (CAS, key, old, new)
    if kind == FENCED_PUT:
        value, token = _pair(invoke.value, invoke, "value token")
        if not isinstance(token, int) or isinstance(token, bool):
            raise OperationError(invoke, f"fenced-put token must be an integer, got {token!r}")
        return (FENCED_PUT, key, value, token)
    if kind in (WRITE, APPEND):
        return (kind, key, invoke.value, None)
    return (kind, key, None, None)


def to_operations(history: Sequence[Op], model_name: str,
                  conventions: Conventions = PROJECT) -> list[Operation]:
    """Pair invocations with completions and encode them for ``model_name``.

    Raises :class:`HistoryError` (naming the op index) for an f the model cannot
    apply, a completion with no open invocation, or a process that invokes twice.
    """
    try:
        kinds = _KINDS[model_name]
    except KeyError:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(_KINDS)}") from None
    ignored = _IGNORED.get(model_name, frozenset())
    open_ops: dict[Any, tuple[int, Op, int]] = {}  # process -> (position, invoke, kind)
    done: list[tuple[int, Operation]] = []
    for position, op in enumerate(history):
        if not op.is_client or op.f in ignored:
            continue
        if op.type == "invoke":
            if op.process in open_ops:
                _, earlier, _ = open_ops[op.process]
                raise OperationError(op, f"invoked while its op index {earlier.index} is still open; "
                                     "a process may have one outstanding op (give a retired "
                                     "process a fresh id)")
            kind = kinds.get(op.f)
            if kind is None:
                raise OperationError(op, f"the {model_name} model has no operation {op.f!r} (it "
                                     f"knows {', '.join(sorted(kinds))}); choose another --model")
            open_ops[op.process] = (position, op, kind)
            continue
        opened = open_ops.pop(op.process, None)
        if opened is None:
            raise OperationError(op, f"{op.type} of {op.f!r} has no earlier invocation")
        call, invoke, kind = opened
        if op.f != invoke.f:
            raise OperationError(op, f"completion {op.f!r} does not match the invocation "
                                 f"{invoke.f!r} (op index {invoke.index})")
        inp = _input(model_name, kind, invoke)
        if op.type == "fail":
            if kind == CAS and conventions.failed_cas_returned_false:
                done.append((call, Operation(op.process, inp, call, False, position, invoke.index)))
            continue
        if op.type == "info":
            done.append((call, Operation(op.process, inp, call, UNKNOWN, None, invoke.index)))
            continue
        if kind == READ:
            output = op.value
            if output is None and conventions.nil_read_is_unknown:
                output = UNKNOWN
        elif kind in (CAS, FENCED_PUT):
            output = True
        else:
            output = None
        done.append((call, Operation(op.process, inp, call, output, position, invoke.index)))
    for call, invoke, kind in open_ops.values():
        inp = _input(model_name, kind, invoke)
        done.append((call, Operation(invoke.process, inp, call, UNKNOWN, None, invoke.index)))
    done.sort(key=lambda pair: pair[0])
    return [operation for _, operation in done]


def infer_model(history: Sequence[Op]) -> str:
    """A sensible model for a history from the f names it uses."""
    fs = {op.f for op in history if op.is_client}
    if fs & {"acquire", "fenced-put"}:
        return "fenced-register"
    if "append" in fs:
        return "porcupine-kv"
    if fs & {"get", "put", "delete"}:
        return "kv"
    if fs <= {"read", "write"}:
        return "register" if fs else "cas-register"
    return "cas-register"
