"""The node's I/O, behind small interfaces, so one driver runs in two worlds.

The asyncio node (``ukehi.node.server``) plugs in the real ones: the system clock and
``asyncio.sleep``, TCP peer links (``ukehi.transport``), the TCP server (``ukehi.server``)
and storage calls run in a worker thread. The simulator (``ukehi.sim``) plugs in virtual
time, a simulated network and a simulated disk; everything between the interfaces (the
Raft core, the driver, the state machine, the storage code) is the same code.

- :class:`Clock`: ``monotonic()`` (deadlines), ``time()`` (wall clock: logs, lock leases),
  ``sleep(s)`` (every timer of the node: ticks, housekeeping, admin polling).
- :class:`Network`: outbound peer frames (``send``), warm links (``ensure``/``drop``).
- :class:`Disk`: runs one piece of storage work (:class:`DiskWork`) off the event loop and
  closes the storage once no work is in flight.
- :class:`Listener`: where clients and peers reach the node (counters for ``status``).
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ukehi.storage.errors import StorageError

__all__ = ["Clock", "SystemClock", "Network", "Disk", "ThreadDisk", "DiskWork", "Listener", "NodeIO"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks and asyncio's timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Network(Protocol):
    def send(self, peer: str, address: tuple[str, int] | None, frames: list[bytes]) -> bool: ...

    def ensure(self, peer: str, address: tuple[str, int]) -> Any: ...

    async def drop(self, peer: str) -> None: ...

    async def close(self) -> None: ...

    def linked_peers(self) -> list[str]: ...


class Listener(Protocol):
    async def start(self, host: str, port: int) -> tuple[str, int]: ...

    async def stop(self) -> None: ...

    @property
    def connection_count(self) -> int: ...

    @property
    def bad_frames(self) -> int: ...

    def counters(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DiskWork:
    """Storage work the driver needs done (and durable) before it can go on.

    ``kind`` names it for the disk implementation (the simulator charges each kind its own
    latency): ``open``, ``persist``, ``snapshot-save``, ``compact``, ``sync``.

    ``meanwhile``: event-loop work that does not depend on ``fn`` (the driver applies and
    answers entries committed earlier while this Ready's entries are written). A disk that
    can overlap calls it once after ``fn`` has been handed off and before the result comes
    back; a disk that cannot simply ignores it, and the driver runs it itself afterwards."""

    kind: str
    fn: Callable[[], Any]
    meanwhile: Callable[[], None] | None = None
    # True: ``fn`` writes nothing (a Ready whose only change is the commit index, which is
    # saved lazily). A disk may then run it on the caller's side with no hand-off: nothing
    # is in flight (the driver awaits every piece of work before the next), so there is no
    # order to keep and nothing to make durable. The real node skips the WAL-thread round
    # trip (two thread wake-ups per committed write on every node); the simulator ignores
    # the flag and charges it like any persist, so its traces do not change.
    empty: bool = False


class Disk(Protocol):
    async def run(self, work: DiskWork) -> Any: ...

    async def close(self, fn: Callable[[], None]) -> None: ...


class ThreadDisk:
    """Storage calls in one dedicated WAL thread fed by a queue, so the event loop keeps
    reading sockets during an fsync.

    One long-lived thread instead of ``asyncio.to_thread`` per Ready: a job is a queue put
    (waking the thread) and one ``call_soon_threadsafe`` back (waking the loop), without the
    default executor's Future chaining, context copy and pool bookkeeping, which the
    1-in-flight profile showed among a write's largest costs. Jobs run strictly in order, one
    at a time, so storage stays single-threaded, and :meth:`close` (queued last) runs only
    after every job before it, including a persist whose awaiting task was cancelled."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[bool, Any], None]] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    t = threading.Thread(target=self._serve, name="ukehi-wal", daemon=True)
                    t.start()
                    self._thread = t

    def _serve(self) -> None:
        get = self._queue.get
        while True:
            job = get()
            if job is None:
                return
            fn, done = job
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - handed back to the awaiting side
                done(False, e)
            else:
                done(True, result)

    def _submit(self, fn: Callable[[], Any], guard: bool = True) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.cancelled():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def done(ok: bool, value: Any) -> None:  # in the WAL thread
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        def guarded() -> Any:
            if self._closed:
                raise StorageError("the node is stopping: storage is closed")
            return fn()

        self._ensure_thread()
        self._queue.put((guarded if guard else fn, done))
        return fut

    async def run(self, work: DiskWork) -> Any:
        if work.empty:
            # Nothing to write: no hand-off to the WAL thread and back (see DiskWork.empty).
            if self._closed:
                raise StorageError("the node is stopping: storage is closed")
            if work.meanwhile is not None:
                work.meanwhile()
            return work.fn()
        fut = self._submit(work.fn)
        if work.meanwhile is not None:
            try:
                work.meanwhile()
            except BaseException:
                # Let the write in flight finish before the error stops the node, so the
                # caller never closes storage under a thread it thinks is idle.
                await asyncio.wait([fut])
                if not fut.cancelled():
                    fut.exception()  # retrieved: the meanwhile error is the one to report
                raise
        return await fut

    async def close(self, fn: Callable[[], None]) -> None:
        def close_and_stop() -> None:
            self._closed = True
            fn()

        try:
            await self._submit(close_and_stop, guard=False)
        finally:
            self._queue.put(None)  # the thread ends after the close job
            self._thread = None


@dataclass
class NodeIO:
    """Everything a node touches outside its own memory. ``None`` factories mean the real
    thing (TCP transport and server); the simulator passes its own."""

    clock: Clock = field(default_factory=SystemClock)
    disk: Disk = field(default_factory=ThreadDisk)
    rng: random.Random = field(default_factory=random.Random)
    # (node) -> Network / Listener; None: ukehi.transport.PeerTransport / ukehi.server.NodeServer
    make_network: Callable[[Any], Network] | None = None
    make_listener: Callable[[Any], Listener] | None = None
    # False in the simulator: no SIGTERM/SIGINT handlers (one process hosts many nodes).
    signals: bool = True
    # The pid the node logs and reports (None: the process's own); the simulator gives each
    # incarnation of a node its own, as a restarted process would have.
    pid: int | None = None
