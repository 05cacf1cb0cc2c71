"""Transactions out of a history.

A transaction is a client op whose value is a list of micro-ops ``[f, key, value]``:
``["r", k, v]`` (a read; ``v`` is ``null`` in the invocation and what was read in the
``ok`` completion), ``["w", k, v]`` (a write) and ``["append", k, v]``. Elle's EDN
histories read the same (``[:append 3 5]`` becomes ``("append", 3, 5)``).

``ok`` transactions took effect and their reads are known; ``info`` ones may have taken
effect (their writes count when some read saw them) and their reads are unknown; ``fail``
ones certainly did not. A ``fail`` completion with ``resolved`` among its extra fields was an
``info`` that the node data shows never committed (checkers/whitebox/resolve.py): the
anomalies it takes part in say so. A completion may carry ``raft_index`` (an int for the whole
transaction, or a list with one entry per micro-op): the position of its writes in the
log, which is the exact version order of every key it wrote.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from checkers.history import NEMESIS, Op

READ, WRITE, APPEND = "r", "w", "append"
MICRO_OPS = (READ, WRITE, APPEND)


class TxnError(ValueError):
    """A history that is not a transactional one; names the op."""


class Txn:
    """One transaction: its micro-ops, how it ended and when (history indices)."""

    __slots__ = ("id", "process", "type", "mops", "invoke", "complete", "invoke_time",
                 "complete_time", "raft_index", "resolved")

    def __init__(self, id: int, process: Any, type: str, mops: tuple, invoke: int,
                 complete: int | None, invoke_time: int, complete_time: int | None,
                 raft_index: Any = None, resolved: str | None = None) -> None:
        self.id = id
        self.process = process
        self.type = type
        self.mops = mops
        self.invoke = invoke
        self.complete = complete
        self.invoke_time = invoke_time
        self.complete_time = complete_time
        self.raft_index = raft_index
        # a ``fail`` that was an ``info`` in the recorded history, which the node data shows
        # never committed (checkers/whitebox/resolve.py): why, in words
        self.resolved = resolved

    @property
    def name(self) -> str:
        """``T<n>``, n being the history index of the invocation: findable in the file."""
        return f"T{self.invoke}"

    def raft_index_of(self, position: int) -> int | None:
        """The log index micro-op ``position`` was applied at, when the completion said."""
        ri = self.raft_index
        if ri is None:
            return None
        if isinstance(ri, int):
            return ri
        if position < len(ri) and isinstance(ri[position], int):
            return ri[position]
        return None

    def describe(self) -> str:
        kind = "info, never committed" if self.resolved else self.type
        return f"{self.name} ({kind}, process {self.process}): " + " ".join(
            describe_mop(m) for m in self.mops)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<{self.describe()}>"


def why_failed(t: Txn) -> str:
    """How an anomaly names a failed writer: aborted, or resolved from the node data."""
    if t.resolved:
        return ("an info transaction whose writes never reached any node's log or state machine "
                "(resolved from the node logs)")
    return "which failed (aborted)"


def describe_mop(mop: tuple) -> str:
    f, k, v = mop
    if f == READ:
        return f"r {k} {_show(v)}"
    return f"{f} {k} {_show(v)}"


def _show(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, (tuple, list)):
        return "[" + " ".join(_show(x) for x in v) + "]"
    return str(v)


_MICRO = frozenset(MICRO_OPS)


def _mops(op: Op) -> tuple:
    value = op.value
    if value.__class__ is tuple and all(m.__class__ is tuple and len(m) == 3 and m[0] in _MICRO
                                        and m[1].__class__ is not list and m[2].__class__ is not list
                                        for m in value):
        return value  # the common case: histories freeze JSON arrays into tuples
    if not isinstance(value, (tuple, list)):
        raise TxnError(f"op index {op.index}: a transaction's value is a list of [f key value] "
                       f"micro-ops, got {value!r}")
    out = []
    for m in value:
        if not isinstance(m, (tuple, list)) or len(m) != 3 or m[0] not in MICRO_OPS:
            raise TxnError(f"op index {op.index}: micro-op {m!r} is not [r|w|append key value]")
        f, k, v = m
        if isinstance(k, list):
            k = tuple(k)
        if isinstance(v, list):
            v = tuple(v)
        out.append((f, k, v))
    return tuple(out)


def is_txn_op(op: Op) -> bool:
    return op.process != NEMESIS and op.f == "txn"


def transactions(history: Iterable[Op]) -> tuple[list[Txn], list[Txn]]:
    """(``ok`` and ``info`` transactions numbered 0.., ``fail`` ones) in invocation order.

    Invocations pair with the next completion of the same process. An invocation that
    never completed is ``info``. Non-``txn`` client ops are an error: this checker
    needs every client op to be a transaction.
    """
    pending: dict[Any, int] = {}
    invokes: list[Op] = []
    completions: list[Op | None] = []
    for op in history:
        if op.process == NEMESIS:
            continue
        if op.f != "txn":
            raise TxnError(f"op index {op.index}: f is {op.f!r}; a transactional history has only "
                           f"txn ops (value [[f key value] ...])")
        if op.type == "invoke":
            if op.process in pending:
                raise TxnError(f"op index {op.index}: process {op.process!r} invoked again before "
                               f"its op {invokes[pending[op.process]].index} completed")
            pending[op.process] = len(invokes)
            invokes.append(op)
            completions.append(None)
            continue
        slot = pending.pop(op.process, None)
        if slot is None:
            raise TxnError(f"op index {op.index}: a completion of process {op.process!r} with no "
                           f"invocation before it")
        completions[slot] = op
    ok_info: list[Txn] = []
    failed: list[Txn] = []
    for inv, comp in zip(invokes, completions):
        if comp is None:
            ok_info.append(Txn(len(ok_info), inv.process, "info", _mops(inv), inv.index, None,
                               inv.time, None))
        elif comp.type == "ok":
            ok_info.append(Txn(len(ok_info), inv.process, "ok",
                               _mops(comp if comp.value is not None else inv), inv.index, comp.index,
                               inv.time, comp.time, comp.extra.get("raft_index") if comp.extra else None))
        elif comp.type == "fail":
            failed.append(Txn(len(failed), inv.process, "fail", _mops(inv), inv.index, comp.index,
                              inv.time, comp.time,
                              resolved=comp.extra.get("resolved") if comp.extra else None))
        else:
            ok_info.append(Txn(len(ok_info), inv.process, "info", _mops(inv), inv.index, None,
                               inv.time, None))
    return ok_info, failed


def txns_from_values(specs: Sequence[tuple[Any, str, Sequence]], *, start: int = 0) -> list[Op]:
    """A history from ``(process, type, mops)`` triples run one after another (each
    invocation completes before the next starts): for tests and examples."""
    ops: list[Op] = []
    i = start
    for process, kind, mops in specs:
        inv_value = tuple((f, k, None if f == READ else v) for f, k, v in mops)
        ops.append(Op(index=i, time=i, process=process, type="invoke", f="txn", value=inv_value))
        ops.append(Op(index=i + 1, time=i + 1, process=process, type=kind, f="txn",
                      value=tuple(tuple(m) for m in mops)))
        i += 2
    return ops


def history_of(specs: Sequence[tuple], raft: dict[int, Any] | None = None) -> list[Op]:
    """A history from ``(process, type, mops, start, end)`` tuples: each transaction is
    invoked at slot ``start`` and completes at slot ``end`` (``end=None``: never); slots
    only order events (an invocation at the same slot as a completion comes after it).
    ``raft`` maps a spec's position to the ``raft_index`` its completion reports. Ops get
    consecutive indices, times in ms. For tests and examples."""
    events = []
    for i, (process, kind, mops, start, end) in enumerate(specs):
        events.append((start, 1, i, "invoke"))
        if end is not None:
            events.append((end, 0, i, kind))
    events.sort()
    ops: list[Op] = []
    for n, (_, _, i, kind) in enumerate(events):
        process, _, mops, _, _ = specs[i]
        if kind == "invoke":
            value = tuple((f, k, None if f == READ else v) for f, k, v in mops)
            extra: dict[str, Any] = {}
        else:
            value = tuple(tuple(m) for m in mops)
            extra = {"raft_index": raft[i]} if raft and i in raft and kind == "ok" else {}
        ops.append(Op(index=n, time=n * 1_000_000, process=process, type=kind, f="txn",  # type: ignore[arg-type]
                      value=value, extra=extra))
    return ops
