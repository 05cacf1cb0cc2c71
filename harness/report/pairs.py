"""Invocations paired with their completions: the unit every plot and the timeline draw.

A history holds an ``invoke`` and later an ``ok``/``fail``/``info`` for the same
process. A completion without an invocation (the nemesis may log faults as lone
``info`` ops) stands alone with zero latency; an invocation never completed (a
run cut short) becomes ``info`` ending at the last time of the history, marked
``incomplete`` so latency plots can leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from checkers.history import NEMESIS, Op

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class OpPair:
    process: int | str
    f: str
    type: str  # the completion's type: ok, fail or info
    start_s: float  # invocation time, seconds since test start
    end_s: float  # completion time
    key: Any = None
    value: Any = None  # the completion's value when it has one, else the invocation's
    error: Any = None
    index: int = 0  # the invocation's history index
    incomplete: bool = False

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.start_s) * 1000.0

    @property
    def is_client(self) -> bool:
        return self.process != NEMESIS


def pair_ops(history: Iterable[Op]) -> list[OpPair]:
    """Pair every invocation with the next completion of the same process, in invocation order."""
    pending: dict[int | str, Op] = {}
    out: list[OpPair] = []
    last_time = 0
    for op in history:
        last_time = max(last_time, op.time)
        if op.type == "invoke":
            prev = pending.pop(op.process, None)
            if prev is not None:  # a process invoked twice without completing: keep both visible
                out.append(_pair(prev, None, op.time))
            pending[op.process] = op
            continue
        inv = pending.pop(op.process, None)
        out.append(_pair(inv, op, op.time) if inv is not None else _pair(op, op, op.time))
    for inv in pending.values():
        out.append(_pair(inv, None, last_time))
    out.sort(key=lambda p: (p.start_s, p.index))
    return out


def _pair(inv: Op, done: Op | None, end_time: int) -> OpPair:
    value = done.value if done is not None and done.value is not None else inv.value
    return OpPair(process=inv.process, f=inv.f, type=done.type if done is not None else "info",
                  start_s=inv.time / NS_PER_S, end_s=end_time / NS_PER_S, key=inv.key, value=value,
                  error=done.error if done is not None else None, index=inv.index,
                  incomplete=done is None)


def history_span_s(history: Sequence[Op]) -> tuple[float, float]:
    """(first, last) op time in seconds; (0, 0) for an empty history."""
    if not history:
        return 0.0, 0.0
    times = [op.time for op in history]
    return min(times) / NS_PER_S, max(times) / NS_PER_S
