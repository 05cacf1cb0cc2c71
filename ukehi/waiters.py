"""Client requests waiting for the log: proposals waiting to apply, reads waiting to be safe.

Kept apart from the driver so the matching rules, the part the harness's honesty depends
on, can be read (and tested) on their own:

* A proposal is identified by the (index, term) the core gave its entry. When the entry at
  that index is applied with the *same* term, the waiter gets the state machine's result.
  When a *different* term's entry is applied at that index, the proposal was overwritten by
  another leader: it is not in the log and never will be, a definite failure.
* When a snapshot replaces the state machine past a waiting index, nobody can tell whether
  that entry was in it: the waiter gets "unknown".
* A waiter older than its deadline gets "unknown" (timeout): the entry may still commit.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field
from typing import Any

from ukehi import wire

__all__ = ["Outcome", "ProposalWaiters", "ReadWaiters"]

Outcome = tuple[wire.MsgType, dict[str, Any]]


def _error(code: wire.ErrorCode, message: str, **hint: Any) -> Outcome:
    return wire.MsgType.ERROR, wire.error_body(code, message, **hint)


@dataclass
class _Proposal:
    term: int
    future: asyncio.Future[Any]
    deadline: float


class ProposalWaiters:
    """index -> the proposal waiting for it."""

    def __init__(self) -> None:
        self._by_index: dict[int, _Proposal] = {}

    def __len__(self) -> int:
        return len(self._by_index)

    def add(self, index: int, term: int, deadline: float) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        old = self._by_index.get(index)
        if old is not None and not old.future.done():
            # A newer proposal at the same index (after a leader change on this node): the
            # old one was overwritten, which means it can never commit.
            old.future.set_result(
                _error(wire.ErrorCode.NOT_LEADER,
                       f"entry {index} (term {old.term}) was overwritten by term {term}; it was not applied")
            )
        self._by_index[index] = _Proposal(term, fut, deadline)
        return fut

    def applied(self, index: int, term: int, result: Any) -> None:
        """Entry (index, term) was applied with `result` (an Outcome)."""
        waiter = self._by_index.pop(index, None)
        if waiter is None or waiter.future.done():
            return
        if waiter.term == term:
            waiter.future.set_result(result)
        else:
            waiter.future.set_result(
                _error(
                    wire.ErrorCode.NOT_LEADER,
                    f"the proposed entry {index} of term {waiter.term} was overwritten by another "
                    f"leader's entry of term {term}; it was not applied and never will be",
                )
            )

    def snapshot_installed(self, index: int) -> None:
        """The state machine jumped to `index` from a snapshot: outcomes <= index are unknown."""
        for i in [i for i in self._by_index if i <= index]:
            waiter = self._by_index.pop(i)
            if not waiter.future.done():
                waiter.future.set_result(
                    _error(wire.ErrorCode.TIMEOUT,
                           f"a snapshot up to index {index} replaced the log before entry {i} "
                           "applied here; its outcome is unknown")
                )

    def expire(self, now: float) -> None:
        for i in [i for i, w in self._by_index.items() if w.deadline <= now or w.future.done()]:
            waiter = self._by_index.pop(i)
            if not waiter.future.done():
                waiter.future.set_result(
                    _error(wire.ErrorCode.TIMEOUT,
                           f"entry {i} was proposed but has not applied in time; it may still commit")
                )

    def fail_all(self, outcome: Outcome) -> None:
        waiters, self._by_index = self._by_index, {}
        for w in waiters.values():
            if not w.future.done():
                w.future.set_result(outcome)


@dataclass(order=True)
class _ReadAt:
    index: int
    seq: int
    futures: list[asyncio.Future[Any]] = field(compare=False)


class ReadWaiters:
    """Linearizable reads: ctx -> futures until the read state arrives, then by index."""

    def __init__(self) -> None:
        # ctx -> (futures, deadline, (the term the read was handed to the core in, the
        # driver's tick count then): what the driver judges an expired read by)
        self._by_ctx: dict[bytes, tuple[list[asyncio.Future[Any]], float, tuple[int, int]]] = {}
        self._ready: list[_ReadAt] = []  # heap by index
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(f) for f, _, _ in self._by_ctx.values()) + sum(len(r.futures) for r in self._ready)

    def add(self, ctx: bytes, futures: list[asyncio.Future[Any]], deadline: float,
            started: tuple[int, int] = (0, 0)) -> None:
        self._by_ctx[ctx] = (futures, deadline, started)

    def read_state(self, ctx: bytes, index: int, applied: int) -> None:
        entry = self._by_ctx.pop(ctx, None)
        if entry is None:
            return
        self._seq += 1
        heapq.heappush(self._ready, _ReadAt(index, self._seq, entry[0]))
        self.applied(applied)

    def dropped(self, ctx: bytes, leader: str | None, leader_address: str | None) -> None:
        entry = self._by_ctx.pop(ctx, None)
        if entry is None:
            return
        for fut in entry[0]:
            if not fut.done():
                fut.set_result(False)

    def applied(self, applied: int) -> None:
        while self._ready and self._ready[0].index <= applied:
            for fut in heapq.heappop(self._ready).futures:
                if not fut.done():
                    fut.set_result(True)

    def expire(self, now: float) -> list[tuple[bytes, tuple[int, int]]]:
        """Answer the reads whose read state never came by their deadline (not confirmed);
        returns (ctx, what ``add`` was given as ``started``) of each, for the driver to judge."""
        expired = []
        for ctx in [c for c, (_, d, _) in self._by_ctx.items() if d <= now]:
            futures, _, started = self._by_ctx.pop(ctx)
            expired.append((ctx, started))
            for fut in futures:
                if not fut.done():
                    fut.set_result(False)
        return expired

    def fail_all(self) -> None:
        pending, self._by_ctx = self._by_ctx, {}
        for futs, _, _ in pending.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(False)
        ready, self._ready = self._ready, []
        for r in ready:
            for fut in r.futures:
                if not fut.done():
                    fut.set_result(False)
