"""Plain value types of the Raft core: entries, hard state, membership, snapshots, errors.

Everything here is an immutable value with no behaviour beyond validation, so the driver,
the WAL and the tests can build and compare them freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "U64_MAX",
    "EntryKind",
    "Entry",
    "HardState",
    "Membership",
    "SnapshotMeta",
    "Snapshot",
    "Role",
    "SoftState",
    "ReadState",
    "RaftError",
    "NotLeader",
    "ProposalDropped",
    "LeadershipTransferInProgress",
    "ConfChangeInProgress",
    "check_u64",
    "check_node_id",
]

U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
# Node ids travel on the wire; a bound keeps a hostile peer from making us hold huge strings.
MAX_NODE_ID_LEN = 256


def check_u64(name: str, value: object) -> int:
    """Return `value` if it is an int in 0..2**64-1 (bool refused), else raise naming `name`."""
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        value = int(value)
    if value < 0 or value > U64_MAX:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")
    return value


def check_node_id(name: str, value: object) -> str:
    """Return `value` if it is a usable node id (non-empty str, bounded length)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a node id string, got {type(value).__name__}")
    if not value or len(value) > MAX_NODE_ID_LEN:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_NODE_ID_LEN} chars")
    return value


class EntryKind(enum.IntEnum):
    """What a log entry carries. The value is the leading byte of the WAL command."""

    NORMAL = 0  # a client command for the state machine
    NOOP = 1  # the empty entry a new leader appends to commit its term
    CONFIG = 2  # a membership configuration (see confchange.encode_membership)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `fencing_token` is the u64 (term << 32 | seq) the leader stamped."""

    term: int
    index: int
    kind: EntryKind
    data: bytes
    fencing_token: int

    def size(self) -> int:
        """Approximate wire size, used to bound AppendEntries batches."""
        return len(self.data) + 32


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """A cluster configuration.

    `voters` is the (incoming) voter set; `outgoing` is the old voter set while the cluster is
    in a joint configuration C_old,new (empty otherwise); `learners` receive the log but never
    vote nor count toward a quorum. A node id is in at most one of voters/learners (it may be in
    both voters and outgoing).
    """

    voters: frozenset[str] = frozenset()
    outgoing: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("voters", "outgoing", "learners"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))
        both = (self.voters | self.outgoing) & self.learners
        if both:
            raise ValueError(f"node(s) {sorted(both)} cannot be both voter and learner")

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    def all_voters(self) -> frozenset[str]:
        return self.voters | self.outgoing

    def all_nodes(self) -> frozenset[str]:
        return self.voters | self.outgoing | self.learners

    def is_voter(self, node: str) -> bool:
        return node in self.voters or node in self.outgoing


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log, and the configuration in force at that index."""

    index: int = 0
    term: int = 0
    membership: Membership = field(default_factory=Membership)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot the caller must install (or supplied at construction): metadata + bytes."""

    meta: SnapshotMeta
    data: bytes


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the caller may want to react to (never persisted)."""

    role: Role
    leader: str | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read became ready: serve `ctx` once the state machine applied `index`."""

    ctx: bytes
    index: int


class RaftError(Exception):
    """Base class of the errors the core raises to its caller."""


class NotLeader(RaftError):
    """This node is not the leader; `leader_hint` is who it believes leads (or None)."""

    def __init__(self, leader_hint: str | None, what: str = "request") -> None:
        self.leader_hint = leader_hint
        hint = f"try leader {leader_hint!r}" if leader_hint else "no leader known yet; retry later"
        super().__init__(f"not the leader, cannot accept {what}: {hint}")


class ProposalDropped(RaftError):
    """The leader cannot take this proposal now; retry later (possibly on another node)."""


class LeadershipTransferInProgress(ProposalDropped):
    """The leader is handing leadership to another node and accepts no proposals meanwhile."""


class ConfChangeInProgress(ProposalDropped):
    """A membership change is already in flight; wait until it is committed."""
