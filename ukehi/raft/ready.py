"""What the core hands its driver (Ready) and what it reports about itself (Status)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import Message
from .types import Entry, HardState, Membership, ReadState, Role, Snapshot, SoftState

__all__ = ["Ready", "Status", "PeerStatus"]


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver. Handle steps 1-5 in this order, call advance(ready),
    then step 6:

    1. `snapshot`: if set, durably store it, replace the state machine by it, and drop every
       stored log entry (the log now starts after snapshot.meta.index).
    2. `entries`: if `truncate_from` is set, first delete stored entries with index >=
       truncate_from (== entries[0].index); then append `entries`. Persist `hard_state` if set.
       Make all of this durable (fsync) before step 3.
    3. `messages`: send them (only now: a vote or an ack must never precede its persistence).
    4. `committed_entries`: apply them to the state machine, in order.
    5. `read_states`: serve each read once the state machine has applied `index`.
       `dropped_reads`: contexts of reads this node can no longer serve (it lost leadership).
    6. `snapshot_request`: if set, once step 4 is done the state machine is at exactly this
       index; after advance(ready) (the core refuses report_snapshot_taken between ready()
       and advance()) and before applying anything more, snapshot it and call
       report_snapshot_taken(index, data). Optional, but it keeps the log bounded.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    truncate_from: int | None = None
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    dropped_reads: tuple[bytes, ...] = ()
    soft_state: SoftState | None = None
    snapshot_request: int | None = None


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: int
    next: int
    state: str
    inflight: int


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    role: Role
    term: int
    vote: str | None
    leader: str | None
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    membership: Membership
    lead_transferee: str | None
    recovering: bool
    progress: dict[str, PeerStatus] = field(default_factory=dict)
    # The term of the last entry (which log is more up to date, as a vote sees it).
    last_term: int = 0
    # AppendEntries of a lower term refused since start (a deposed leader's late appends).
    stale_appends_refused: int = 0
