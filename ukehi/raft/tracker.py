"""The leader's view of each follower (etcd-raft's tracker package).

A follower's Progress is in one of three states:

- PROBE: the leader does not know where the follower's log matches; it sends one
  AppendEntries at a time and waits for the answer (or the next heartbeat response).
- REPLICATE: the logs match up to `match`; the leader streams entries optimistically,
  advancing `next` as it sends, with at most `max_inflight` unacknowledged messages.
- SNAPSHOT: the follower needs entries the leader compacted away; the leader sends the
  snapshot in chunks and sends no entries until the follower has installed it.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["ProgressState", "Inflights", "Progress"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each AppendEntries sent but not yet acknowledged, oldest first."""

    __slots__ = ("_q", "capacity")

    def __init__(self, capacity: int) -> None:
        self._q: deque[int] = deque()
        self.capacity = capacity

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose entries the follower has acknowledged up to `index`."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        """Let one more message through a full window (its acks may have been lost)."""
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflights",
        "pending_snapshot",
        "snapshot_offset",
        "snapshot_progressed",
        "recent_active",
        "lease_ack_tick",
        "rejection_held",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        # In PROBE: an append is outstanding; wait for its answer or a heartbeat response.
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        # In SNAPSHOT: the snapshot index being sent, and the next byte offset to send.
        self.pending_snapshot = 0
        self.snapshot_offset = 0
        self.snapshot_progressed = False  # a chunk was acked since the last heartbeat answer
        # Heard from since the last check-quorum round.
        self.recent_active = False
        # Leader tick at which the newest heartbeat this follower answered was *sent*
        # (lease reads start the lease at send time, never at receive time).
        self.lease_ack_tick = -1
        # In REPLICATE: a rejection was set aside (see maybe_decr_to): it may be stale (an
        # older window's, or overtaken by the append it asks for) or real (the follower
        # lost entries, or the append it asks for was lost). The next heartbeat answer
        # probes at `match` unless a newer ack clears this first.
        self.rejection_held = False

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The follower has at least the snapshot; resume right after it.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_offset = 0
        self.rejection_held = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.rejection_held = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_offset = 0
        self.probe_sent = False
        self.rejection_held = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged its log matches up to `index`. True if that is news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
            self.rejection_held = False  # the follower holds more than before
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append whose prev index was `rejected`.

        `match_hint` is the leader's best guess (from the follower's conflict hints) of the
        last index where the logs may agree. Returns True when the leader should move
        `next` back (and probe); False for a stale rejection, or one set aside while
        replicating (`rejection_held`).

        etcd's ``MaybeDecrTo``, with one more case held instead of believed: while
        replicating, a rejection whose hint is below `match` says the follower's log ended
        below what it has acked since. That is an older window's rejection (a reordering
        link delivered it after newer acks), unless the follower's WAL was cut
        (TruncateToLastGood really loses acked entries). Believing it at once moved `match`
        back and resent entries the follower held (sim seed 1181); now only the answer to
        the probe at `match` (sent at the next heartbeat answer) may move it back.
        """
        if self.state is ProgressState.REPLICATE:
            if match_hint < self.match:
                # The follower's log ended below what it has acknowledged since: stale, or
                # it lost entries. Keep replicating; the next heartbeat answer probes at
                # `match` if no newer ack clears this first.
                self.rejection_held = True
                return False
            if rejected <= self.match:
                return False  # stale: those entries matched (etcd)
            self.next = self.match + 1
            return True
        # PROBE (or SNAPSHOT): only the rejection of the last probe (next - 1) counts.
        if self.next - 1 != rejected:
            return False
        if rejected <= self.match:
            if match_hint >= self.match:
                return False  # stale: those entries did match
            # The probe at `match` was refused with a lower hint: the follower no longer has
            # entries it acknowledged (its WAL was cut). Believe it: a lower match only
            # delays commits.
            self.match = max(0, match_hint)
            self.next = self.match + 1
            self.probe_sent = False
            return True
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={len(self.inflights)})"
        )
