"""The leader's queue of pending ReadIndex requests (etcd-raft's read_only.go).

A read records the commit index when it arrives and waits until a quorum has answered a
heartbeat carrying its context; that confirms this node was still leader after the read
began, so serving the state at that index is linearizable. Reads that arrive before the
leader has committed an entry of its own term wait for that first (Raft thesis §6.4).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Collection

from .types import ReadState

__all__ = ["ReadOnly"]


class _ReadRequest:
    __slots__ = ("ctx", "index", "acks")

    def __init__(self, ctx: bytes, index: int, leader: str) -> None:
        self.ctx = ctx
        self.index = index
        self.acks = {leader}


class ReadOnly:
    def __init__(self) -> None:
        self._queue: deque[_ReadRequest] = deque()
        self._by_ctx: dict[bytes, _ReadRequest] = {}
        self.waiting_commit: list[bytes] = []  # contexts held until the term's first commit

    def pending(self, ctx: bytes) -> bool:
        return ctx in self._by_ctx or ctx in self.waiting_commit

    def add(self, ctx: bytes, index: int, leader: str) -> None:
        req = _ReadRequest(ctx, index, leader)
        self._queue.append(req)
        self._by_ctx[ctx] = req

    def last_ctx(self) -> bytes:
        """The newest pending context: a heartbeat carrying it confirms all older ones too."""
        return self._queue[-1].ctx if self._queue else b""

    def ack(
        self, ctx: bytes, src: str, has_quorum: Callable[[Collection[str]], bool]
    ) -> list[ReadState]:
        """`src` answered the heartbeat for `ctx`; return the reads this makes ready."""
        req = self._by_ctx.get(ctx)
        if req is None:
            return []
        req.acks.add(src)
        if not has_quorum(req.acks):
            return []
        ready = []
        while self._queue:
            r = self._queue.popleft()
            del self._by_ctx[r.ctx]
            ready.append(ReadState(r.ctx, r.index))
            if r is req:
                break
        return ready

    def drop_all(self) -> list[bytes]:
        """Forget every pending read (leadership lost); returns their contexts."""
        dropped = [r.ctx for r in self._queue] + self.waiting_commit
        self._queue.clear()
        self._by_ctx.clear()
        self.waiting_commit = []
        return dropped
