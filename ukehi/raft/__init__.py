"""Sans-IO Raft core: a pure, deterministic state machine (etcd-raft shape).

No sockets, clocks, files or threads: the driver (``ukehi/node.py``) feeds inputs and carries
out the outputs. Randomness (election timeouts) comes only from the ``random.Random`` it hands
in, so a seeded run is exactly reproducible.

Driver contract
---------------
Construct (see ``RaftCore.__init__``)::

    core = RaftCore("n1", RaftConfig(group_id=0), rng=random.Random(seed),
                    initial_membership={"n1", "n2", "n3"})          # founding member
    core = RaftCore("n1", cfg, rng=rng, hard_state=HardState(term, vote, commit),
                    snapshot=Snapshot(meta, data) or None, entries=[...],
                    refuse_votes_until=N)                             # restart

Inputs (never between ``ready()`` and ``advance()``):

- ``tick()``: one logical clock tick (election timeouts and heartbeats count ticks).
- ``step(msg)``: a message received from a peer (decode with ``message_from_dict``).
- ``propose(data) -> (index, term)``; raises ``NotLeader(leader_hint)``,
  ``LeadershipTransferInProgress``. The write is done once an entry with that index and term
  comes out in ``committed_entries`` (a different term there means it was lost).
- ``propose_conf_change([ConfChange(ConfChangeType.ADD_VOTER, "n4"), ...]) -> (index, term)``;
  raises ``ConfChangeInProgress`` while another change is in flight.
- ``read_index(ctx)``: linearizable read; ``ReadState(ctx, index)`` comes out in a later
  Ready; serve the read once the state machine has applied ``index``.
- ``transfer_leadership(target)``, ``report_unreachable(peer)``,
  ``report_snapshot_taken(index, data) -> SnapshotMeta`` (see ``snapshot_meta_for``).

Outputs: ``while core.has_ready(): rd = core.ready(); <handle rd>; core.advance(rd)``.
``Ready`` (ready.py) documents the order: persist snapshot/entries/hard state durably, then
send messages, then apply committed entries, then serve reads; after ``advance``, take a
requested snapshot (``report_snapshot_taken`` is refused between ``ready`` and ``advance``).
A vote, an append acknowledgement or a snapshot acknowledgement only ever leaves in the
Ready whose durable state already carries it.

Entries: ``Entry(term, index, kind, data, fencing_token)``; ``kind`` is ``EntryKind.NORMAL``,
``NOOP`` (a new leader's first entry) or ``CONFIG`` (data = ``encode_membership(...)``).
The WAL stores ``entry_to_wal_command(entry)`` (one kind byte + data) and rebuilds entries
with ``entry_from_wal(term, index, cmd, token)``.

Fencing tokens: a leader of term T starts at ``(T, 0)`` (``FencingTokenState.bump_term_token``)
and stamps every entry it appends (no-op and config entries included) with the next token,
so tokens strictly increase along the log.

Design choices
--------------
- **Configurations take effect when appended** (Raft thesis §4), not when applied (etcd):
  every node uses the last configuration entry in its log, committed or not, and reverts to
  an earlier one if that entry is truncated away. The leader appends C_old,new, and when that
  is committed it appends C_new by itself; a leader not in C_new steps down once C_new is
  committed. Only one change may be in flight: a new one is refused until the last config
  entry is committed and the configuration is no longer joint, and only after the leader has
  committed an entry in its own term. Learners get the log and never vote; adding or removing
  only learners needs no joint phase. Promote a learner with ADD_VOTER.
- **Pre-vote and check-quorum** are on by default. With check-quorum a follower that heard
  from a leader within ``election_tick`` ignores vote requests (except those caused by a
  leadership transfer), and a leader that did not hear from a quorum within ``election_tick``
  steps down.
- **Commit rule**: the leader commits by counting replicas only entries of its current term
  (§5.4.2); a joint configuration needs a majority of both voter sets.
- **ReadIndex**: reads wait until the leader has committed its term's no-op, then record the
  commit index and confirm leadership with a heartbeat round carrying the read's ctx.
- **Lease reads** (``RaftConfig(lease_read=True)``, off by default): the leader answers at
  once while fewer than ``election_tick - lease_drift_margin`` of its ticks have passed since
  the *send* time of the heartbeat that a quorum most recently acknowledged. This is only
  safe if clocks (tick rates) drift by less than the margin over an election timeout, and
  needs check-quorum. A lease node votes for nobody during its first election timeout after
  a (re)start, and a leader that sent TimeoutNow stops lease reads for the rest of its term.
- **Leadership transfer**: the leader stops taking proposals, brings the target up to date,
  sends ``TimeoutNow``; it gives up after an election timeout.
- **Snapshots**: once ``compaction_threshold`` applied entries sit in the log the Ready asks
  for a snapshot (``snapshot_request``); after ``report_snapshot_taken`` the core drops the log
  prefix. A follower behind the compacted log gets the snapshot in chunks of
  ``snapshot_chunk_size`` bytes, strictly in offset order (stop-and-wait; a lost chunk is
  re-sent after the next heartbeat answer; an out-of-order chunk makes the follower report
  the offset it really has).
- **Recovering** (``refuse_votes_until=N``): after a WAL cut the node neither votes nor
  campaigns until its commit index, learned from a leader, reaches N.
- ``group_id`` is in every message (sharding); ``step`` refuses a message for another group.

Errors while running (``errors.py``): ``BadPeerMessage`` (a ValueError) means a peer's
message was malformed or impossible and was not acted on: drop it, count it, keep going.
``InvariantViolation`` means this node's own state broke a safety invariant (e.g. a committed
entry conflicts with what a leader sends, the commit index would go backwards): the driver
must stop the node at once and persist nothing more (fail-stop). Neither is an ``assert``.

Planted bugs for harness self-tests live in ``RaftConfig`` as ``unsafe_*`` flags (all off).
"""

from .confchange import (
    ConfChange,
    ConfChangeType,
    decode_membership,
    encode_membership,
)
from .config import RaftConfig
from .core import RaftCore
from .errors import BadPeerMessage, InvariantViolation
from .messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    MessageError,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    message_from_dict,
    message_to_dict,
)
from .ready import PeerStatus, Ready, Status
from .types import (
    ConfChangeInProgress,
    Entry,
    EntryKind,
    HardState,
    LeadershipTransferInProgress,
    Membership,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .walcodec import entry_from_wal, entry_to_wal_command

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "BadPeerMessage",
    "ConfChange",
    "ConfChangeInProgress",
    "ConfChangeType",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InvariantViolation",
    "LeadershipTransferInProgress",
    "Membership",
    "Message",
    "MessageError",
    "NotLeader",
    "PeerStatus",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotResponse",
    "SoftState",
    "Status",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "decode_membership",
    "encode_membership",
    "entry_from_wal",
    "entry_to_wal_command",
    "message_from_dict",
    "message_to_dict",
]
