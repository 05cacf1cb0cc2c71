"""Random histories that are linearizable by construction, for tests and benchmarks.

A simulated atomic object is driven by concurrent clients.  Each operation has an
invocation time, a linearization point strictly inside its interval where it is
applied to the object, and a completion time; the recorded history (invocations
and completions in time order) therefore has real overlaps and is linearizable.

With ``info_fraction`` some completions are recorded as ``info`` (the client never
heard back); such an op took effect at its linearization point or, half the time,
never, and its process is retired for a fresh one, as the harness does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Callable

from checkers.history import Op

WORKLOADS = ("register", "cas-register", "kv", "porcupine-kv", "fenced")


@dataclass(frozen=True)
class _Planned:
    f: str
    key: Any
    value: Any


def _plan(workload: str, rng: random.Random, key: Any, values: int, token: int | None) -> _Planned:
    r = rng.random()
    if workload == "register":
        return _Planned("read", key, None) if r < 0.5 else _Planned("write", key, rng.randrange(values))
    if workload == "cas-register":
        if r < 0.4:
            return _Planned("read", key, None)
        if r < 0.7:
            return _Planned("write", key, rng.randrange(values))
        return _Planned("cas", key, (rng.randrange(values), rng.randrange(values)))
    if workload == "kv":
        if r < 0.4:
            return _Planned("get", key, None)
        if r < 0.7:
            return _Planned("put", key, rng.randrange(values))
        if r < 0.8:
            return _Planned("delete", key, None)
        return _Planned("cas", key, (rng.randrange(values), rng.randrange(values)))
    if workload == "porcupine-kv":
        if r < 0.5:
            return _Planned("get", key, None)
        if r < 0.6:
            return _Planned("put", key, f"x{rng.randrange(values)}")
        return _Planned("append", key, f"y{rng.randrange(values)}")
    if workload == "fenced":
        if token is None or r < 0.2:
            return _Planned("acquire", None, None)
        if r < 0.6:
            return _Planned("fenced-put", key, (rng.randrange(values), token))
        return _Planned("read", key, None)
    raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")


class _Object:
    """The atomic object: applies an op at its linearization point, gives (type, value)."""

    def __init__(self, workload: str, initial: Any) -> None:
        self.workload = workload
        self.initial = initial
        self.values: dict[Any, Any] = {}
        self.highest: dict[Any, int] = {}
        self.next_token = 1

    def apply(self, op: _Planned) -> tuple[str, Any]:
        v = self.values
        default = "" if self.workload == "porcupine-kv" else self.initial
        if op.f in ("read", "get"):
            return "ok", v.get(op.key, default)
        if op.f in ("write", "put"):
            v[op.key] = op.value
            return "ok", op.value
        if op.f == "delete":
            v.pop(op.key, None)
            return "ok", None
        if op.f == "append":
            v[op.key] = v.get(op.key, default) + op.value
            return "ok", op.value
        if op.f == "cas":
            old, new = op.value
            if v.get(op.key, default) == old:
                v[op.key] = new
                return "ok", op.value
            return "fail", op.value
        if op.f == "acquire":
            token = self.next_token
            self.next_token += 1
            return "ok", token
        if op.f == "fenced-put":
            value, token = op.value
            if token >= self.highest.get(op.key, 0):
                self.highest[op.key] = token
                v[op.key] = value
                return "ok", op.value
            return "fail", op.value
        raise AssertionError(op.f)


def generate_history(workload: str = "cas-register", *, n_ops: int = 100, n_processes: int = 5,
                     n_keys: int = 1, info_fraction: float = 0.0, values: int = 5, seed: int = 0,
                     initial: Any = None, key_name: Callable[[int], Any] | None = None) -> list[Op]:
    """A linearizable history of ``n_ops`` operations (``2 * n_ops`` events).

    ``n_keys`` keys are used, named by ``key_name(i)`` (default ``"k<i>"``, or ``None``
    for a single-key register so it looks like a plain register history).
    """
    if n_ops < 0 or n_processes < 1 or n_keys < 1:
        raise ValueError("need n_ops >= 0, n_processes >= 1, n_keys >= 1")
    if not 0.0 <= info_fraction <= 1.0:
        raise ValueError(f"info_fraction must be within [0, 1], got {info_fraction}")
    rng = random.Random(seed)
    if key_name is None:
        key_name = (lambda i: None) if n_keys == 1 and workload in ("register", "cas-register") \
            else (lambda i: f"k{i}")
    keys = [key_name(i) for i in range(n_keys)]
    obj = _Object(workload, initial)
    events: list[tuple[int, str, Any, str, Any, Any]] = []  # time, process, ..., type, f, key, value
    heap: list[tuple[int, int, str, int]] = []  # (time, seq, what, slot)
    seq = 0
    slot_process = list(range(n_processes))
    next_process = n_processes
    slot_token: list[int | None] = [None] * n_processes
    in_flight: dict[int, tuple[_Planned, int, str, Any, bool]] = {}
    started = 0
    for slot in range(n_processes):
        heapq.heappush(heap, (rng.randrange(1, 20), seq, "invoke", slot))
        seq += 1
    out: list[tuple[int, int | str, str, str, Any, Any]] = []
    while heap:
        t, _, what, slot = heapq.heappop(heap)
        if what == "invoke":
            if started >= n_ops:
                continue
            started += 1
            planned = _plan(workload, rng, rng.choice(keys), values, slot_token[slot])
            info = rng.random() < info_fraction
            in_flight[slot] = (planned, t, "", None, info)
            out.append((t, slot_process[slot], "invoke", planned.f, planned.key, planned.value))
            heapq.heappush(heap, (t + rng.randrange(1, 50), seq, "apply", slot))
        elif what == "apply":
            planned, t0, _, _, info = in_flight[slot]
            if info and rng.random() < 0.5:
                type_, value = "info", None  # lost before it took effect
            else:
                type_, value = obj.apply(planned)
            in_flight[slot] = (planned, t0, type_, value, info)
            heapq.heappush(heap, (t + rng.randrange(1, 50), seq, "complete", slot))
        else:
            planned, _, type_, value, info = in_flight.pop(slot)
            process = slot_process[slot]
            if info:
                out.append((t, process, "info", planned.f, planned.key, planned.value))
                slot_process[slot] = next_process  # a retired process gets a fresh id
                next_process += 1
                slot_token[slot] = None
            else:
                if planned.f in ("read", "get"):
                    recorded = value
                else:
                    recorded = value if planned.f == "acquire" else planned.value
                out.append((t, process, type_, planned.f, planned.key, recorded))
                if planned.f == "acquire" and type_ == "ok":
                    slot_token[slot] = value
            heapq.heappush(heap, (t + rng.randrange(0, 20), seq, "invoke", slot))
        seq += 1
    # Events at the same instant: the heap order (seq) already respects causality
    # for each process; a stable sort by time keeps it.
    out.sort(key=lambda e: e[0])
    return [Op(index=i, time=t * 1000, process=p, type=ty, f=f, key=k, value=v)  # type: ignore[arg-type]
            for i, (t, p, ty, f, k, v) in enumerate(out)]
