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
    latency): ``open``, ``persist``, ``snapshot-save``, ``compact``, ``sync``."""

    kind: str
    fn: Callable[[], Any]


class Disk(Protocol):
    async def run(self, work: DiskWork) -> Any: ...

    async def close(self, fn: Callable[[], None]) -> None: ...


class ThreadDisk:
    """Storage calls in a worker thread, so the event loop keeps reading sockets during an
    fsync. Every call holds one lock, so :meth:`close` waits for the persist in flight (a
    cancelled Ready loop does not stop its thread) before the files are closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def _call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._closed:
                raise StorageError("the node is stopping: storage is closed")
            return fn()

    async def run(self, work: DiskWork) -> Any:
        return await asyncio.to_thread(self._call, work.fn)

    def _close(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._closed = True
            fn()

    async def close(self, fn: Callable[[], None]) -> None:
        await asyncio.to_thread(self._close, fn)


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
