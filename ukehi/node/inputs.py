"""What the rest of the node hands the Ready loop: typed inputs, queued in order.

The core refuses inputs between ``ready()`` and ``advance()``, so every input waits in the
driver's queue and goes into the next Ready (that is the group commit). ``placed`` futures
tell the caller what the core said (an error, or the waiter for the entry's outcome).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Union

from ukehi.raft.confchange import ConfChange
from ukehi.raft.messages import Message

__all__ = ["Step", "Propose", "ProposeConfChange", "TransferLeader", "Unreachable", "TakeSnapshot", "Input"]


@dataclass(frozen=True, slots=True)
class Step:
    """A Raft message from a peer."""

    message: Message


@dataclass(frozen=True, slots=True)
class Propose:
    """A client command; ``placed`` gets the proposal's waiter (or NotLeader/ProposalDropped).

    ``placed`` is an asyncio future, or anything with its ``done``/``set_result``/
    ``set_exception`` (the node's callback path for client requests, ``ukehi.node.api``)."""

    data: bytes
    placed: Any
    deadline: float
    # The validated command ``data`` encodes: kept with the entry until it applies here, so
    # the leader does not decode and validate it a second time.
    command: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProposeConfChange:
    changes: tuple[ConfChange, ...]
    placed: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class TransferLeader:
    target: str
    placed: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The transport gave up on a peer for now (the core probes it again)."""

    peer: str


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """An admin snapshot; ``placed`` gets the snapshot index."""

    placed: asyncio.Future[Any]


Input = Union[Step, Propose, ProposeConfChange, TransferLeader, Unreachable, TakeSnapshot]
