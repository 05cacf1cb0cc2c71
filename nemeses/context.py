"""What a nemesis package may touch: the cluster's node handles and a few DB verbs.

Defined here as protocols so nemeses never import the harness: the harness
hands in an object with these attributes (its run context).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence


class NodeVerbs(Protocol):
    """The subset of harness.backends.base.NodeHandle that nemeses use."""

    name: str
    address: str

    def kill(self) -> int | None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def is_running(self) -> bool: ...
    def process_state(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    def drop_from(self, peer_addresses: Sequence[str], direction: str = "in") -> None: ...
    def heal_network(self) -> None: ...
    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  duplicate_pct: float = 0.0, reorder_pct: float = 0.0,
                  to: Sequence[str] | None = None) -> None: ...
    def clear_netem(self) -> None: ...
    def set_clock(self, offset_s: float, rate: float = 1.0) -> None: ...
    def reset_clock(self) -> None: ...
    def clock_offset(self) -> float: ...
    def read_file(self, path: Any) -> bytes: ...
    def write_file(self, path: Any, data: bytes) -> None: ...
    # The disk nemesis stops a node cleanly, lists its WAL and finds it under workdir.
    workdir: Any
    def stop(self, timeout: float = 5.0) -> int | None: ...
    def exec(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]: ...


class FaultContext(Protocol):
    """The run as nemeses see it."""

    @property
    def nodes(self) -> Mapping[str, NodeVerbs]: ...

    async def start_node(self, name: str) -> int:
        """(Re)start the node process from its data dir; returns the new pid."""

    async def leader(self) -> str | None:
        """The current leader's node name, as the cluster reports it, or None."""

    async def node_clock(self, name: str) -> float | None:
        """The node's own clock reading (Unix seconds) from its status, or None if it does not answer."""

    def endpoint(self, name: str) -> str:
        """HOST:PORT where the node serves clients (and admin calls)."""

    async def statuses(self, names: Sequence[str] | None = None) -> Mapping[str, Mapping[str, Any] | None]:
        """Every node's status (ukehi.client ``status``), by node name; None if it does not answer.

        ``names``: ask only these nodes (a paused one would cost the whole time-out)."""

    async def start_fresh(self, name: str) -> int:
        """Stop the node, wipe its data dir and start it as a new node waiting to be added; the new pid."""
