"""The backend contract: a node handle's verbs and the cluster that owns the handles.

Every nemesis acts on a node only through these verbs, so a new backend (Docker,
SSH) only has to implement them. Addresses are plain strings; ports are the
node's own (each node may get distinct ports, e.g. when all share 127.0.0.1).
"""

from __future__ import annotations

import signal
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from types import FrameType, TracebackType
from typing import Iterator, Literal, Mapping, Sequence

Direction = Literal["in", "out", "both"]
DIRECTIONS: frozenset[str] = frozenset({"in", "out", "both"})


class BackendError(RuntimeError):
    """A backend operation failed; the message says what to do next."""


class NeedsRootError(BackendError):
    """A fault that needs root and network namespaces was asked of a backend without them."""


class NodeHandle(ABC):
    """One node of a cluster: its process, its files, its network and its clock."""

    name: str
    #: the IP address the node is reachable at (from the harness and from its peers)
    address: str
    #: ports reserved for this node (peer port, client port, ...), distinct per node when needed
    ports: tuple[int, ...]
    #: the node's own directory (data dir, logs, clock file); relative paths resolve here
    workdir: Path

    # -- process -------------------------------------------------------------------
    @abstractmethod
    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              log_path: str | Path | None = None) -> int:
        """Start ARGV as this node's process (stdout+stderr appended to LOG_PATH); return its pid."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after TIMEOUT seconds; return the exit status.

        The status is Popen's: negative for a signal (-15 after SIGTERM). For a node
        that had already exited it is that exit's status; None if it never started.
        """

    @abstractmethod
    def kill(self) -> int | None:
        """SIGKILL the node process and reap it; return the exit status (as for stop)."""

    @abstractmethod
    def pause(self) -> None:
        """SIGSTOP the node process."""

    @abstractmethod
    def resume(self) -> None:
        """SIGCONT the node process."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """Pid of the running node process (the node itself, not a wrapper), or None."""

    @abstractmethod
    def is_running(self) -> bool:
        """True while the node process exists and has not exited (a paused process is running)."""

    @abstractmethod
    def process_state(self) -> str | None:
        """The kernel's one-letter state (R, S, D, T when stopped, Z), or None without a process."""

    # -- commands and files ---------------------------------------------------------
    @abstractmethod
    def exec(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
        """Run ARGV in the node's context (its network namespace); return (rc, stdout, stderr)."""

    @abstractmethod
    def read_file(self, path: str | Path) -> bytes:
        """Bytes of a file on the node (relative paths are under workdir)."""

    @abstractmethod
    def write_file(self, path: str | Path, data: bytes) -> None:
        """Replace a file on the node (relative paths are under workdir)."""

    # -- network faults -------------------------------------------------------------
    @abstractmethod
    def drop_from(self, peer_addresses: Sequence[str], direction: Direction = "in") -> None:
        """Drop packets between this node and PEER_ADDRESSES.

        ``in``: this node stops receiving from the peers; ``out``: it stops sending
        to them; ``both``: both. Rules add up until :meth:`heal_network`.
        """

    @abstractmethod
    def heal_network(self) -> None:
        """Remove every drop rule added by :meth:`drop_from`."""

    @abstractmethod
    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  duplicate_pct: float = 0.0, reorder_pct: float = 0.0,
                  to: Sequence[str] | None = None) -> None:
        """Shape this node's outgoing packets (to every destination, or only to the addresses TO).

        Replaces any earlier shaping of this node.
        """

    @abstractmethod
    def clear_netem(self) -> None:
        """Remove packet shaping from this node."""

    # -- clock ----------------------------------------------------------------------
    @abstractmethod
    def clock_env(self) -> dict[str, str]:
        """Environment that launches a process under this node's fake clock (libfaketime)."""

    @abstractmethod
    def set_clock(self, offset_s: float, rate: float = 1.0) -> None:
        """From now on the node's clock reads real time + OFFSET_S and advances RATE times as fast."""

    @abstractmethod
    def reset_clock(self) -> None:
        """The node's clock reads real time again."""

    @abstractmethod
    def clock_offset(self) -> float:
        """The offset (node clock - real clock, seconds) the node's clock has right now."""


class Cluster(ABC):
    """Owns the node handles of one run; a context manager that always tears down.

    While open inside ``with``, SIGTERM is turned into an exception (in the main
    thread) so that ``kill PID`` of the harness also runs the teardown, and
    SIGINT is ignored during teardown so a second Ctrl-C cannot interrupt it.
    """

    run_id: str
    nodes: dict[str, NodeHandle]

    @abstractmethod
    def open(self) -> "Cluster":
        """Create whatever the nodes need (namespaces, links, directories); idempotent."""

    @abstractmethod
    def _teardown(self) -> None:
        """Remove everything this cluster created; safe to call twice; must not stop halfway."""

    @property
    @abstractmethod
    def network_faults_supported(self) -> bool:
        """Whether drop_from / set_netem work here (e.g. False on loopback without root)."""

    def leave_running(self) -> None:
        """Keep the nodes up after close() (``--leave-running``), for backends that can."""
        raise BackendError(f"{type(self).__name__} cannot leave nodes running; drop --leave-running")

    def close(self) -> None:
        """Tear everything down, shielded from a second Ctrl-C while it runs."""
        if threading.current_thread() is not threading.main_thread():
            self._teardown()
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._teardown()
        finally:
            signal.signal(signal.SIGINT, previous)

    def __getitem__(self, name: str) -> NodeHandle:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this cluster; nodes are {', '.join(self.nodes)}") from None

    def __iter__(self) -> Iterator[NodeHandle]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def __enter__(self) -> "Cluster":
        self._previous_sigterm: object = None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            self.open()
        except BaseException:
            self.close()
            self._restore_sigterm()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        finally:
            self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if getattr(self, "_previous_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
            self._previous_sigterm = None


class Terminated(SystemExit):
    """SIGTERM arrived while a cluster was open; raised so ``with`` blocks tear down."""


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated(128 + signum)
