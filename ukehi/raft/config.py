"""Tunables of the Raft core. Times are in ticks; the driver decides how long a tick is."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RaftConfig"]


@dataclass(frozen=True)
class RaftConfig:
    group_id: int = 0
    # A follower campaigns after a random timeout in [election_tick, election_tick_max)
    # (election_tick_max None: 2 * election_tick, as etcd/raft does).
    election_tick: int = 10
    election_tick_max: int | None = None
    heartbeat_tick: int = 1
    pre_vote: bool = True
    # Leader steps down if a quorum was not heard from within election_tick; followers that
    # heard from a leader within election_tick ignore vote requests (the leader's lease).
    check_quorum: bool = True
    # Pipelining / batching of AppendEntries.
    max_inflight: int = 256
    max_entries_per_message: int = 256
    max_bytes_per_message: int = 1 << 20
    # At most this many committed entries per Ready (bounds one apply batch).
    max_committed_per_ready: int = 4096
    # Lease reads: serve ReadIndex without a heartbeat round while the lease holds. Safe only
    # if clocks drift by less than `lease_drift_margin` ticks per election timeout; needs
    # check_quorum. Off by default.
    lease_read: bool = False
    lease_drift_margin: int = 2
    # Ask the caller for a snapshot once this many applied entries sit in the log.
    compaction_threshold: int = 10_000
    snapshot_chunk_size: int = 1 << 20
    max_snapshot_size: int = 1 << 34  # refuse to buffer a claimed snapshot bigger than this
    # Planted bugs for harness self-tests (issue 8). Never enable outside tests.
    unsafe_commit_old_terms_by_counting: bool = False
    unsafe_accept_lower_term_append: bool = False
    unsafe_grant_vote_ignoring_log: bool = False

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"RaftConfig.{name} must be a positive int, got {value!r}")

        for name in (
            "election_tick",
            "heartbeat_tick",
            "max_inflight",
            "max_entries_per_message",
            "max_bytes_per_message",
            "max_committed_per_ready",
            "compaction_threshold",
            "snapshot_chunk_size",
            "max_snapshot_size",
        ):
            positive(name)
        if self.election_tick_max is not None and (
            type(self.election_tick_max) is not int or self.election_tick_max < self.election_tick
        ):
            raise ValueError(
                f"RaftConfig.election_tick_max must be an int >= election_tick ({self.election_tick}), "
                f"got {self.election_tick_max!r}"
            )
        if type(self.group_id) is not int or self.group_id < 0:
            raise ValueError(f"RaftConfig.group_id must be an int >= 0, got {self.group_id!r}")
        if self.heartbeat_tick >= self.election_tick:
            raise ValueError(
                f"heartbeat_tick ({self.heartbeat_tick}) must be below election_tick "
                f"({self.election_tick}), or followers time out between heartbeats"
            )
        if self.lease_read:
            if not self.check_quorum:
                raise ValueError("lease_read needs check_quorum=True (followers must honour leases)")
            if not 0 <= self.lease_drift_margin < self.election_tick:
                raise ValueError(
                    f"lease_drift_margin must be in [0, election_tick), got {self.lease_drift_margin}"
                )
