"""The interpreter: client workers and a nemesis worker writing one history.

Every invocation and completion is appended to the history the moment it
happens (``HistoryWriter`` flushes each line), so a crash of the harness
leaves a readable history. Rules that keep the history honest (DESIGN.md):

- a worker has at most one outstanding op;
- a completion is ``ok`` (took effect), ``fail`` (certainly did not) or
  ``info`` (unknown); anything a client raises counts as ``info``, because
  the harness cannot know whether the op took effect;
- after ``info`` the worker's process is retired and it continues under a
  fresh process id (old id + concurrency, as in Jepsen), so the checker can
  leave the unknown op pending forever.

Given the cluster's node names, each client invocation also records ``node``:
the node the worker's client is bound to (``workloads.base.bound_node``), so
reports can say which node each process talked to. Readers that do not know
the field keep it as an extra; histories without it read as before.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence

from checkers.history import NEMESIS, HistoryWriter

from workloads.base import bound_node
from workloads.generator import Generator, OpDict


@dataclass(frozen=True)
class Completion:
    """What a client reports for one op."""

    type: str  # "ok" | "fail" | "info"
    value: Any = None
    error: Any = None

    def __post_init__(self) -> None:
        if self.type not in ("ok", "fail", "info"):
            raise ValueError(f"completion type must be ok, fail or info, got {self.type!r}")


class Client(Protocol):
    """A workload's client. It may also define ``prepare(op) -> op``, called before the
    invocation is recorded, to fill in state it holds (e.g. the fencing token it owns)."""

    async def invoke(self, op: OpDict) -> Completion: ...

    async def close(self) -> None: ...


ClientFactory = Callable[[int], Awaitable[Client]]


class Nemesis(Protocol):
    """The interpreter's view of a composed nemesis package.

    ``invoke`` returns the value to record (what the fault did), or a
    Completion to set the error too; raising records the error.
    """

    def next(self, rng: random.Random) -> OpDict | None: ...

    async def invoke(self, op: OpDict) -> Any: ...


@dataclass
class Clock:
    """Nanoseconds since the test started (monotonic, so clock faults never reach it)."""

    origin: int = field(default_factory=time.monotonic_ns)

    def now(self) -> int:
        return time.monotonic_ns() - self.origin


@dataclass
class Pacer:
    """Spreads op starts so all workers together stay under ``rate`` ops/s.

    Each call reserves the next slot on one shared schedule; a little seeded
    jitter keeps workers from moving in lock step.
    """

    rate: float
    rng: random.Random
    _next: float = 0.0

    async def wait(self) -> None:
        interval = 1.0 / self.rate
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + interval * (0.5 + self.rng.random())
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Counters:
    """Live counts for the progress display."""

    ok: int = 0
    fail: int = 0
    info: int = 0
    invoked: int = 0
    active_faults: set[str] = field(default_factory=set)

    def record(self, type_: str) -> None:
        setattr(self, type_, getattr(self, type_) + 1)


class Interpreter:
    """Runs client and nemesis workers against one history."""

    def __init__(self, history: HistoryWriter, clock: Clock, rng: random.Random,
                 concurrency: int, counters: Counters | None = None, nodes: Sequence[str] = ()) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.nodes = list(nodes)  # in the order the workload's clients got their addresses
        self.history = history
        self.clock = clock
        self.rng = rng
        self.concurrency = concurrency
        self.counters = counters or Counters()
        # process id per worker survives phases, so retirement carries over
        self._process = list(range(concurrency))

    async def run_clients(self, generator: Generator, open_client: ClientFactory, *,
                          deadline: float | None, rate: float | None = None,
                          op_timeout: float = 10.0) -> None:
        """Run every worker until the generator is exhausted or ``deadline`` (monotonic s)."""
        pacer = Pacer(rate, random.Random(self.rng.random())) if rate else None
        await asyncio.gather(*(self._worker(w, generator, open_client, deadline, pacer, op_timeout)
                               for w in range(self.concurrency)))

    async def _worker(self, worker: int, generator: Generator, open_client: ClientFactory,
                      deadline: float | None, pacer: Pacer | None, op_timeout: float) -> None:
        rng = random.Random(self.rng.random())
        client = await open_client(worker)
        try:
            while deadline is None or time.monotonic() < deadline:
                op = generator.next(worker, rng)
                if op is None:
                    return
                if pacer is not None:
                    await pacer.wait()
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                await self._invoke(worker, client, op, op_timeout)
        finally:
            await client.close()

    async def _invoke(self, worker: int, client: Client, op: OpDict, op_timeout: float) -> None:
        process = self._process[worker]
        prepare = getattr(client, "prepare", None)
        if prepare is not None:
            op = prepare(op)
        f, key, value = op["f"], op.get("key"), op.get("value")
        bound = {"node": self.nodes[bound_node(worker, len(self.nodes))]} if self.nodes else {}
        self.history.append(self.clock.now(), process, "invoke", f, key=key, value=value, **bound)
        self.counters.invoked += 1
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands
            # as the op completes, and the worker would go on after Ctrl-C.
            async with asyncio.timeout(op_timeout):
                done = await client.invoke(op)
        except asyncio.TimeoutError:
            done = Completion("info", error="timeout")
        except asyncio.CancelledError:
            self.history.append(self.clock.now(), process, "info", f, key=key, value=value,
                                error="interrupted")
            raise
        except Exception as err:  # noqa: BLE001 - unknown outcome, recorded as such
            done = Completion("info", error=f"{type(err).__name__}: {err}")
        # A completion without a value keeps the invoked value (writes, cas).
        completed_value = done.value if done.value is not None else value
        self.history.append(self.clock.now(), process, done.type, f, key=key,
                            value=completed_value, error=done.error,
                            **(getattr(done, "extra", None) or {}))  # e.g. a txn's raft_index
        self.counters.record(done.type)
        if done.type == "info":
            self._process[worker] = process + self.concurrency

    async def run_nemesis(self, nemesis: Nemesis, *, interval: float, deadline: float) -> None:
        """Invoke a fault op every ``interval`` s (jittered) until ``deadline``."""
        rng = random.Random(self.rng.random())
        while True:
            delay = interval * (0.5 + rng.random())
            remaining = deadline - time.monotonic()
            if remaining <= delay:
                await asyncio.sleep(max(0.0, remaining))
                return
            await asyncio.sleep(delay)
            op = nemesis.next(rng)
            if op is None:
                return
            await self.nemesis_op(nemesis, op)

    async def nemesis_op(self, nemesis: Nemesis, op: OpDict) -> Completion:
        """One fault op, logged as an invoke and an ``info`` completion of process "nemesis"."""
        f, value = op["f"], op.get("value")
        self.history.append(self.clock.now(), NEMESIS, "invoke", f, value=value)
        try:
            result = await nemesis.invoke(op)
            done = result if isinstance(result, Completion) else Completion("info", value=result)
        except Exception as err:  # noqa: BLE001 - a failed fault is data, not a crash
            done = Completion("info", error=f"{type(err).__name__}: {err}")
        self.history.append(self.clock.now(), NEMESIS, "info", f, value=done.value, error=done.error)
        return done
