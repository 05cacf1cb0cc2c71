"""RaftCore: the Raft protocol as a pure state machine (etcd-raft's raft.go + rawnode.go).

See the package docstring (`ukehi.raft`) for the driver contract. This module holds the
protocol logic only; the log, progress tracking, quorum arithmetic and messages live in
their own modules.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

from ..fencing import FencingTokenState
from .confchange import ConfChange, encode_membership, enter_config, leave_joint
from .config import RaftConfig
from .errors import BadPeerMessage, InvariantViolation
from .log import RaftLog
from .messages import (
    MAX_CTX_BYTES,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from .quorum import VoteResult, committed_index, has_quorum, vote_result
from .readonly import ReadOnly
from .ready import PeerStatus, Ready, Status
from .tracker import Progress, ProgressState
from .types import (
    ConfChangeInProgress,
    Entry,
    EntryKind,
    HardState,
    LeadershipTransferInProgress,
    Membership,
    NotLeader,
    ProposalDropped,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    check_node_id,
    check_u64,
)

__all__ = ["RaftCore"]


class _SnapshotReceiver:
    """Chunks of one incoming snapshot, accepted strictly in offset order."""

    __slots__ = ("index", "term", "membership", "total", "buf")

    def __init__(self, m: InstallSnapshot) -> None:
        self.index = m.snap_index
        self.term = m.snap_term
        self.membership = m.membership
        self.total = m.total_size
        self.buf = bytearray()


class RaftCore:
    """One Raft peer. Construct it from what was persisted; drive it; drain Ready."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig | None = None,
        *,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
        initial_membership: Membership | Iterable[str] | None = None,
        refuse_votes_until: int = 0,
    ) -> None:
        """Build a peer.

        - Fresh founding member: pass `initial_membership` (the same voters on every founding
          node) and nothing persisted.
        - Fresh node that will be added to a running cluster: pass nothing; it learns the
          configuration from the leader's log or snapshot and never campaigns before.
        - Restart: pass the persisted `hard_state`, the `snapshot` (meta + bytes, or None if
          none was taken) and the log `entries` after it. A founding member that has no
          snapshot yet passes `initial_membership` again (config entries in `entries` override
          it; with a snapshot it is ignored, the snapshot carries the configuration).
        - `refuse_votes_until=N`: after a WAL cut (TruncateToLastGood) this node grants no
          votes and does not campaign until its commit index, learned from a leader, is >= N.
        """
        self.id = check_node_id("node_id", node_id)
        self.cfg = config if config is not None else RaftConfig()
        if not isinstance(self.cfg, RaftConfig):
            raise TypeError(f"config must be a RaftConfig, got {type(self.cfg).__name__}")
        if not isinstance(rng, random.Random):
            raise TypeError("rng must be a random.Random (seed it for reproducible runs)")
        self.rng = rng
        hs = hard_state if hard_state is not None else HardState()
        if not isinstance(hs, HardState):
            raise TypeError(f"hard_state must be a HardState, got {type(hs).__name__}")
        check_u64("hard_state.term", hs.term)
        check_u64("hard_state.commit", hs.commit)
        if hs.vote is not None:
            check_node_id("hard_state.vote", hs.vote)
        self.refuse_votes_until = check_u64("refuse_votes_until", refuse_votes_until)

        if snapshot is not None:
            if not isinstance(snapshot, Snapshot):
                raise TypeError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
            meta = snapshot.meta
            self._snapshot_data: bytes = bytes(snapshot.data)
            if not isinstance(meta, SnapshotMeta) or not isinstance(meta.membership, Membership):
                raise TypeError("snapshot.meta must be a SnapshotMeta with a Membership")
            check_u64("snapshot index", meta.index)
            check_u64("snapshot term", meta.term)
        else:
            if initial_membership is None:
                membership = Membership()
            elif isinstance(initial_membership, Membership):
                membership = initial_membership
            else:
                membership = Membership(
                    voters=frozenset(check_node_id("initial voter", v) for v in initial_membership)
                )
            meta = SnapshotMeta(0, 0, membership)
            self._snapshot_data = b""
        self.log = RaftLog(meta, entries)
        if hs.term < self.log.last_term():
            raise ValueError(
                f"hard_state.term {hs.term} is below the last log term {self.log.last_term()}; "
                "the hard state and the log do not belong together"
            )
        commit = max(hs.commit, meta.index)
        if commit > self.log.last_index():
            if refuse_votes_until == 0:
                raise ValueError(
                    f"hard_state.commit {commit} is beyond the last log index "
                    f"{self.log.last_index()}: committed entries are missing. If the WAL was cut "
                    "on purpose, restart with refuse_votes_until set past the cut"
                )
            commit = self.log.last_index()
        self.log.committed = commit

        self.term = hs.term
        self.vote = hs.vote
        self.lead: str | None = None
        self.role = Role.FOLLOWER
        self.membership = self.log.membership()
        self.prs: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick
        self.lead_transferee: str | None = None
        # AppendEntries of a lower term this node refused (status: a test can see a deposed
        # leader's late appends arrive and be turned away).
        self.stale_appends_refused = 0
        self.ticks = 0  # local clock, for the leader's lease
        # With lease reads a restarted node cannot remember whom it promised not to
        # vote against, so it votes for nobody during its first election timeout.
        self._vote_quiet = self.cfg.election_tick if self.cfg.lease_read else 0
        self._lease_disabled = False
        self._fencing = FencingTokenState()

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []
        self._reads = ReadOnly()
        # Replication work, turned into AppendEntries at ready() so proposals batch up.
        self._bcast_entries = False  # new entries for every follower
        self._bcast_commit = False  # a new commit index for every follower
        # At most one commit-only broadcast per tick. A commit advance goes out at once when
        # none went out yet in this tick; otherwise followers learn it with the next entries
        # (every AppendEntries carries it) or at the leader's next tick. A commit-only append
        # costs every follower a wake-up, a Ready and an ack, and the leader a send and an
        # ack to read per follower: at one write in flight that was a third of the cluster's
        # CPU per write (issue 17). No guarantee rests on when a follower learns the commit
        # index; only a follower's apply lags, by a tick at most, under a steady load.
        self._commit_told = self.log.committed  # the commit index every follower was sent
        self._commit_bcast_this_tick = False
        self._send_more: set[str] = set()  # peers to send pending entries to (if any)
        self._must_send: set[str] = set()  # peers that need an append even if empty
        self._pending_snapshot: Snapshot | None = None  # received, to hand to the driver
        self._receiving: _SnapshotReceiver | None = None
        self._snap_requested_at = 0
        self._ready_out = False
        self._prev_hs = HardState(self.term, self.vote, self.log.committed)
        self._prev_ss = self._soft_state()
        self._reset_randomized_timeout()

    # ----------------------------------------------------------------------------------
    # small helpers

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _promotable(self) -> bool:
        """May this node campaign? Yes if it votes in its latest configuration, or in the
        committed one while a change removing it is still uncommitted: a leader that removed
        itself and then lost its quorum may hold the only up-to-date log, and the thesis lets
        a non-member lead until C_new commits (it counts votes by C_new, so it is safe)."""
        if self.membership.is_voter(self.id):
            return True
        log = self.log
        return log.last_config_index() > log.committed and log.membership_at(
            log.committed
        ).is_voter(self.id)

    @property
    def recovering(self) -> bool:
        """True while refuse_votes_until is in force (the WAL was cut; not caught up yet)."""
        return self.log.committed < self.refuse_votes_until

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_tick
        top = self.cfg.election_tick_max or 2 * e
        # [e, top); with top == e always e (the draw is still taken, so a seeded run's later
        # draws do not shift)
        self.randomized_timeout = e + self.rng.randrange(max(1, top - e))

    def _soft_state(self) -> SoftState:
        return SoftState(self._reported_role(), self.lead, self.term)

    def _reported_role(self) -> Role:
        if self.role is Role.FOLLOWER and self.id in self.membership.learners:
            return Role.LEARNER
        return self.role

    def _check_idle(self, what: str) -> None:
        if self._ready_out:
            raise RuntimeError(
                f"{what} called between ready() and advance(); finish handling the Ready and "
                "call advance(ready) first"
            )

    def _acked(self, node: str) -> int:
        if node == self.id:
            # The leader's own copy counts only once it is durable (advance() after the
            # driver's persist): the driver may send AppendEntries while the leader's own
            # WAL write and fsync are still running (Raft thesis §10.2.1).
            return self.log.stable
        pr = self.prs.get(node)
        return pr.match if pr is not None else 0

    # ----------------------------------------------------------------------------------
    # role transitions

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.lead_transferee = None
        self._drop_reads()
        self.prs = {}
        self._clear_replication_work()

    def _clear_replication_work(self) -> None:
        self._bcast_entries = False
        self._bcast_commit = False
        self._send_more.clear()
        self._must_send.clear()

    def _drop_reads(self) -> None:
        self._dropped_reads.extend(self._reads.drop_all())

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither term nor vote: a node that cannot win disturbs no one.
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        self._lease_disabled = False
        self._commit_bcast_this_tick = False  # the no-op's commit goes out at once
        last = self.log.last_index()
        for node in sorted(self.membership.all_nodes()):
            if node != self.id:
                self.prs[node] = Progress(last + 1, self.cfg.max_inflight)
        self._fencing.bump_term_token(self.term)
        # A no-op in the new term: once it commits, everything before it is committed too
        # (§5.4.2), and ReadIndex may serve reads.
        self._append_local(EntryKind.NOOP, b"")

    # ----------------------------------------------------------------------------------
    # elections

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if not self._promotable() or self.recovering:
            return
        if pre_vote:
            self._become_pre_candidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term
        self.votes[self.id] = True
        if self._tally(pre_vote):
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.membership.all_voters()):
            if node == self.id:
                continue
            self._send(
                VoteRequest(
                    self.cfg.group_id, vote_term, self.id, node, pre_vote,
                    last_index, last_term, transfer,
                )
            )

    def _tally(self, pre_vote: bool) -> bool:
        """Count votes; act on a decision. True if the campaign is over."""
        result = vote_result(self.membership, self.votes)
        if result is VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return True
        if result is VoteResult.LOST:
            self._become_follower(self.term, None)
            return True
        return False

    def _handle_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.lead is None)
            or (m.pre_vote and m.term > self.term)
        )
        up_to_date = self.cfg.unsafe_grant_vote_ignoring_log or self.log.is_up_to_date(
            m.last_log_index, m.last_log_term
        )
        if can_vote and up_to_date and not self.recovering and self._vote_quiet == 0:
            # A granted real vote is recorded before the response is queued; the response
            # leaves only in a Ready whose hard state carries this vote.
            self._send(VoteResponse(self.cfg.group_id, m.term, self.id, m.src, m.pre_vote, True))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(
                VoteResponse(self.cfg.group_id, self.term, self.id, m.src, m.pre_vote, False)
            )

    # ----------------------------------------------------------------------------------
    # inputs

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self._check_idle("tick()")
        self.ticks += 1
        if self._vote_quiet:
            self._vote_quiet -= 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            # Only a node that may campaign restarts its timer: a learner or removed node
            # must let election_elapsed grow, or it would honour a dead leader's lease forever.
            if self.election_elapsed >= self.randomized_timeout and self._promotable():
                self.election_elapsed = 0
                self._campaign(pre_vote=self.cfg.pre_vote)

    def stalled(self, ticks: int) -> None:
        """The node was stopped for about ``ticks`` ticks (SIGSTOP, a long GC pause, a
        descheduled or swapped-out process, a Ready loop blocked that long): no timer fires for
        them, since a burst of ticks would look like a dead leader, but the lease clock moves on.

        The lease counts ticks from the send of the heartbeat a quorum acknowledged. Without
        this a leader resumed after a stall longer than its lease still counts the lease valid
        (its ticks stood still while the others' time ran, elected a new leader and wrote),
        and serves a stale read under it; so does an acknowledgement of a heartbeat sent before
        the stall that arrives after it."""
        self._check_idle("stalled()")
        if ticks <= 0:
            return
        self.ticks += ticks
        self._vote_quiet = max(0, self._vote_quiet - ticks)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = {self.id}
                for node, pr in self.prs.items():
                    if pr.recent_active:
                        active.add(node)
                    pr.recent_active = False
                if not has_quorum(self.membership, active):
                    self._become_follower(self.term, None)
                    return
            if self.lead_transferee is not None:
                # The transfer did not finish within an election timeout: give up on it.
                self.lead_transferee = None
        self._commit_bcast_this_tick = False
        if self.log.committed > self._commit_told:
            self._bcast_commit = True  # a commit no entries carried yet (see _commit_told)
            self._commit_bcast_this_tick = True
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def step(self, m: Message) -> None:
        """Feed one message received from a peer."""
        self._check_idle("step()")
        if m.group_id != self.cfg.group_id:
            raise BadPeerMessage(
                f"message for Raft group {m.group_id} given to group {self.cfg.group_id}; "
                "route it by group_id"
            )
        if m.dst != self.id:
            raise BadPeerMessage(f"message for {m.dst!r} given to node {self.id!r}")
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.cfg.election_tick
                )
                if (in_lease or self._vote_quiet) and not m.transfer:
                    # We heard from a live leader recently: do not help unseat it.
                    return
            if isinstance(m, VoteRequest) and m.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # carries the term we would campaign for, not a newer leader's
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if isinstance(m, AppendEntries) and self.cfg.unsafe_accept_lower_term_append:
                self._handle_append(m)
                return
            if isinstance(m, AppendEntries):
                self.stale_appends_refused += 1
            if isinstance(m, (AppendEntries, Heartbeat)) and (
                self.cfg.check_quorum or self.cfg.pre_vote
            ):
                # A stale leader (e.g. after a partition) learns our term and steps down;
                # with pre-vote it would otherwise never hear of it.
                self._send(AppendResponse(self.cfg.group_id, self.term, self.id, m.src, False, 0))
            elif isinstance(m, VoteRequest) and m.pre_vote:
                self._send(
                    VoteResponse(self.cfg.group_id, self.term, self.id, m.src, True, False)
                )
            return

        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, VoteResponse):
            pre = self.role is Role.PRE_CANDIDATE
            if m.pre_vote != pre:
                return
            if pre and m.granted and m.term != self.term + 1:
                return  # a grant from an older pre-campaign
            if m.src in self.membership.all_voters() and m.src not in self.votes:
                self.votes[m.src] = m.granted
                self._tally(pre)
        elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            # Someone won this term: follow it.
            self._become_follower(self.term, m.src)
            self._step_follower(m)

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.src
            log = self.log
            if m.commit > log.last_index():
                # The leader believes we hold entries we no longer have (our WAL was cut):
                # tell it where our log really ends so it probes us from there.
                self._send(
                    AppendResponse(
                        self.cfg.group_id, self.term, self.id, m.src, False, m.commit,
                        log.last_index(), log.last_term(),
                    )
                )
            commit = min(m.commit, log.last_index())
            if commit > log.committed:
                log.commit_to(commit)
            self._send(
                HeartbeatResponse(self.cfg.group_id, self.term, self.id, m.src, m.ctx, m.lease_tick)
            )
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot_chunk(m)
        elif isinstance(m, TimeoutNow):
            # Leadership transfer: campaign at once, skipping pre-vote and the lease.
            self._campaign(pre_vote=False, transfer=True)

    # ----------------------------------------------------------------------------------
    # follower: replication

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            # Everything up to our commit index is settled: say so, the leader skips ahead.
            self._send(
                AppendResponse(self.cfg.group_id, self.term, self.id, m.src, True, log.committed)
            )
            return
        self._append_from_leader(m)

    def _append_from_leader(self, m: AppendEntries) -> None:
        """An append at or after our commit index: match, cut a conflicting tail, append."""
        log = self.log
        if log.match_term(m.prev_index, m.prev_term):
            last_new = m.prev_index + len(m.entries)
            conflict = log.find_conflict(m.entries)
            if conflict:
                if conflict <= log.committed and not self.cfg.unsafe_accept_lower_term_append:
                    ours = log.term(conflict)
                    theirs = m.entries[conflict - m.entries[0].index].term
                    raise InvariantViolation(
                        "committed-entry-conflict",
                        f"{m.src}'s append of term {m.term} holds entry {conflict} of term "
                        f"{theirs}, but our entry {conflict} (term {ours}) is committed (commit "
                        f"index {log.committed}): two different entries committed at one index",
                        index=conflict,
                        term=self.term,
                    )
                log.append(
                    m.entries[conflict - m.entries[0].index :],
                    unsafe_overwrite_committed=self.cfg.unsafe_accept_lower_term_append,
                )
                self._on_log_config_change()
            new_commit = min(m.commit, last_new)
            if new_commit > log.committed:
                log.commit_to(new_commit)
            self._send(AppendResponse(self.cfg.group_id, self.term, self.id, m.src, True, last_new))
        else:
            hint = log.find_conflict_by_term(min(m.prev_index, log.last_index()), m.prev_term)
            hint_term = log.term(hint) or 0
            self._send(
                AppendResponse(
                    self.cfg.group_id, self.term, self.id, m.src, False, m.prev_index,
                    hint, hint_term,
                )
            )

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        log = self.log
        if m.snap_index <= log.committed:
            # We already have everything it covers.
            self._receiving = None
            self._send(
                AppendResponse(self.cfg.group_id, self.term, self.id, m.src, True, log.committed)
            )
            return
        rx = self._receiving
        if m.offset == 0:
            if m.total_size > self.cfg.max_snapshot_size:
                raise BadPeerMessage(
                    f"snapshot of {m.total_size} bytes exceeds max_snapshot_size "
                    f"{self.cfg.max_snapshot_size}; raise the limit if this is genuine"
                )
            rx = self._receiving = _SnapshotReceiver(m)
        elif (
            rx is None
            or (rx.index, rx.term, rx.total) != (m.snap_index, m.snap_term, m.total_size)
            or m.offset != len(rx.buf)
        ):
            # Out of order, duplicated, or for another snapshot: tell the leader where we are.
            have = (
                len(rx.buf)
                if rx is not None and (rx.index, rx.term) == (m.snap_index, m.snap_term)
                else 0
            )
            self._send(
                SnapshotResponse(self.cfg.group_id, self.term, self.id, m.src, m.snap_index, have)
            )
            return
        if len(rx.buf) + len(m.data) > rx.total:
            raise BadPeerMessage("snapshot chunk runs past the announced total size")
        rx.buf += m.data
        if len(rx.buf) < rx.total:
            self._send(
                SnapshotResponse(
                    self.cfg.group_id, self.term, self.id, m.src, m.snap_index, len(rx.buf)
                )
            )
            return
        self._receiving = None
        meta = SnapshotMeta(rx.index, rx.term, rx.membership)
        if log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: just commit up to it. What we
            # hold after it may be an old leader's tail, so we vouch only for meta.index.
            log.commit_to(meta.index)
            self._send(
                AppendResponse(self.cfg.group_id, self.term, self.id, m.src, True, meta.index)
            )
            return
        log.restore(meta)
        self._snapshot_data = bytes(rx.buf)
        self._pending_snapshot = Snapshot(meta, self._snapshot_data)
        self._snap_requested_at = meta.index
        self._on_log_config_change()
        self._send(
            AppendResponse(self.cfg.group_id, self.term, self.id, m.src, True, log.last_index())
        )

    # ----------------------------------------------------------------------------------
    # leader

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        if isinstance(m, AppendResponse) and m.success and m.index > self.log.last_index():
            # A follower can only hold what this leader sent it in this term (or entries
            # committed before it, which this leader holds too). Counting such an ack could
            # commit entries on the word of a node that does not have them.
            raise BadPeerMessage(
                f"{m.src} acknowledges entries up to {m.index}, past this leader's last index "
                f"{self.log.last_index()}"
            )
        if isinstance(m, AppendResponse):
            pr.recent_active = True
            if not m.success:
                hint = m.hint_index
                if m.hint_term > 0:
                    hint = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
                if pr.maybe_decr_to(m.index, hint):
                    if pr.state is ProgressState.REPLICATE:
                        pr.become_probe()
                    self._must_send.add(m.src)
                return
            if pr.maybe_update(m.index):
                if pr.state is ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state is ProgressState.SNAPSHOT:
                    if pr.match >= pr.pending_snapshot:
                        pr.become_probe()
                        pr.become_replicate()
                else:
                    pr.inflights.free_le(m.index)
                if not self._maybe_commit() or not self._bcast_commit:
                    self._send_more.add(m.src)  # room in the pipeline: send what is pending
                if (
                    self.role is Role.LEADER
                    and m.src == self.lead_transferee
                    and pr.match == self.log.last_index()
                ):
                    self._send_timeout_now(m.src)
            elif pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if m.lease_tick > pr.lease_ack_tick:
                pr.lease_ack_tick = m.lease_tick
            if pr.state is ProgressState.SNAPSHOT:
                if not pr.snapshot_progressed:
                    self._send_snapshot_chunk(m.src, pr)  # no ack since last time: resend
                pr.snapshot_progressed = False
            elif pr.state is ProgressState.REPLICATE and pr.rejection_held:
                # A rejection was set aside and no newer ack came since: probe at match
                # (the answer says whether the follower lost entries or an append).
                pr.become_probe()
                self._must_send.add(m.src)
            else:
                if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                    # The follower is alive but the window is stuck (acks lost?): let one
                    # append through; a rejection drops us back to probing.
                    pr.inflights.free_first_one()
                if pr.match < self.log.last_index():
                    self._must_send.add(m.src)
            if m.ctx:
                self._read_ack(m.ctx, m.src)
        elif isinstance(m, SnapshotResponse):
            pr.recent_active = True
            if pr.state is not ProgressState.SNAPSHOT or m.snap_index != pr.pending_snapshot:
                return
            if m.next_offset != pr.snapshot_offset:
                # Forward: the chunk arrived, send the next. Backward: the follower lost
                # chunks (e.g. it restarted), resume where it is.
                pr.snapshot_offset = m.next_offset
                pr.snapshot_progressed = True
                self._send_snapshot_chunk(m.src, pr)

    def _append_local(self, kind: EntryKind, data: bytes) -> Entry:
        e = Entry(
            self.term, self.log.last_index() + 1, kind, data, int(self._fencing.issue_token())
        )
        self.log.append([e])
        if kind is EntryKind.CONFIG:
            self._on_log_config_change()
        self._bcast_entries = True
        self._maybe_commit()
        return e

    def _maybe_commit(self) -> bool:
        log = self.log
        idx = committed_index(self.membership, self._acked)
        if idx <= log.committed:
            return False
        if log.term(idx) != self.term and not self.cfg.unsafe_commit_old_terms_by_counting:
            return False  # §5.4.2: never commit an older term's entry by counting replicas
        log.commit_to(idx)
        if not self._commit_bcast_this_tick:  # the tick's one commit-only broadcast
            self._bcast_commit = True
            self._commit_bcast_this_tick = True
        self._on_commit_advanced()
        return True

    def _on_commit_advanced(self) -> None:
        if self._reads.waiting_commit and self.log.term(self.log.committed) == self.term:
            waiting, self._reads.waiting_commit = self._reads.waiting_commit, []
            for ctx in waiting:
                self._start_read(ctx)
        if self.log.last_config_index() <= self.log.committed:
            if self.membership.joint:
                # C_old,new is committed: move on to C_new automatically.
                self._append_local(EntryKind.CONFIG, encode_membership(leave_joint(self.membership)))
            elif self.id not in self.membership.voters and self.role is Role.LEADER:
                # C_new without us is committed: a removed leader steps down.
                self._become_follower(self.term, None)

    def _on_log_config_change(self) -> None:
        new = self.log.membership()
        if new == self.membership:
            return
        self.membership = new
        if self.role is Role.LEADER:
            last = self.log.last_index()
            for node in sorted(new.all_nodes()):
                if node != self.id and node not in self.prs:
                    self.prs[node] = Progress(last + 1, self.cfg.max_inflight)
            for node in list(self.prs):
                if node not in new.all_nodes():
                    del self.prs[node]
            if self.lead_transferee is not None and self.lead_transferee not in new.voters:
                self.lead_transferee = None

    def _send_append(self, to: str, pr: Progress, send_if_empty: bool) -> bool:
        if pr.is_paused():
            return False
        log = self.log
        if pr.next > log.last_index() + 1:
            pr.next = log.last_index() + 1
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            # The follower needs entries we compacted away: send the snapshot instead.
            pr.become_snapshot(log.snapshot.index)
            self._send_snapshot_chunk(to, pr)
            return False
        if pr.next <= log.last_index():
            ents = log.slice(
                pr.next, log.last_index(),
                self.cfg.max_entries_per_message, self.cfg.max_bytes_per_message,
            )
        else:
            ents = []
        if not ents and not send_if_empty:
            return False
        commit = log.committed
        self._send(AppendEntries(self.cfg.group_id, self.term, self.id, to, prev, prev_term,
                                 tuple(ents), commit))
        if pr.state is ProgressState.REPLICATE:
            if ents:
                pr.next = ents[-1].index + 1
                pr.inflights.add(ents[-1].index)
        else:
            pr.probe_sent = True
        return bool(ents)

    def _send_snapshot_chunk(self, to: str, pr: Progress) -> None:
        meta = self.log.snapshot
        if pr.pending_snapshot != meta.index:
            pr.become_snapshot(meta.index)  # we compacted further since: send the newer one
        data = self._snapshot_data
        off = min(pr.snapshot_offset, len(data))
        chunk = data[off : off + self.cfg.snapshot_chunk_size]
        self._send(
            InstallSnapshot(
                self.cfg.group_id, self.term, self.id, to, meta.index, meta.term,
                meta.membership, off, len(data), chunk,
            )
        )

    def _flush(self) -> None:
        """Turn pending replication work into AppendEntries (batched per follower)."""
        bcast = self._bcast_entries or self._bcast_commit
        if not bcast and not self._send_more and not self._must_send:
            return
        if self.role is not Role.LEADER:
            self._clear_replication_work()
            return
        msgs = self._msgs
        told_all = True  # every follower gets an append (which carries the commit index)
        for node, pr in self.prs.items():
            must = self._bcast_commit or node in self._must_send
            if not (bcast or must or node in self._send_more):
                told_all = False
                continue
            before = len(msgs)
            sent = False
            while self._send_append(node, pr, send_if_empty=False):
                sent = True
                if pr.state is not ProgressState.REPLICATE:
                    break
            if not sent and must:
                self._send_append(node, pr, send_if_empty=True)
            if len(msgs) == before or not isinstance(msgs[-1], AppendEntries):
                told_all = False
        if told_all or self._bcast_commit:
            # Told (a paused follower hears it from heartbeats, which carry the commit index
            # up to its match, or with the appends once it answers): not broadcast again.
            self._commit_told = self.log.committed
        self._clear_replication_work()

    def _bcast_heartbeat(self) -> None:
        self._send_heartbeats(self._reads.last_ctx())

    def _send_heartbeats(self, ctx: bytes) -> None:
        for node, pr in self.prs.items():
            # Never tell a follower to commit past what we know it holds.
            commit = min(pr.match, self.log.committed)
            self._send(
                Heartbeat(self.cfg.group_id, self.term, self.id, node, commit, ctx, self.ticks)
            )

    def _send_timeout_now(self, to: str) -> None:
        # The target may campaign past the followers' leases, so this leader's lease can no
        # longer be trusted for the rest of its term.
        self._lease_disabled = True
        self._send(TimeoutNow(self.cfg.group_id, self.term, self.id, to))

    # ----------------------------------------------------------------------------------
    # reads

    def _start_read(self, ctx: bytes) -> None:
        if self.membership.voters == frozenset({self.id}) and not self.membership.joint:
            self._read_states.append(ReadState(ctx, self.log.committed))
            return
        if self._lease_valid():
            self._read_states.append(ReadState(ctx, self.log.committed))
            return
        self._reads.add(ctx, self.log.committed, self.id)
        self._send_heartbeats(ctx)

    def _read_ack(self, ctx: bytes, src: str) -> None:
        membership = self.membership
        self._read_states.extend(
            self._reads.ack(ctx, src, lambda acks: has_quorum(membership, acks))
        )

    def _lease_valid(self) -> bool:
        if not self.cfg.lease_read or self.role is not Role.LEADER or self._lease_disabled:
            return False
        if self.lead_transferee is not None:
            return False

        def ack_tick(node: str) -> int:
            if node == self.id:
                return self.ticks
            pr = self.prs.get(node)
            return pr.lease_ack_tick if pr is not None else -1

        start = None
        for voters in (self.membership.voters, self.membership.outgoing):
            if not voters:
                continue
            ticks = sorted((ack_tick(v) for v in voters), reverse=True)
            s = ticks[len(ticks) // 2]
            start = s if start is None else min(start, s)
        if start is None or start < 0:
            return False
        return self.ticks - start < self.cfg.election_tick - self.cfg.lease_drift_margin

    # ----------------------------------------------------------------------------------
    # public requests

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a client command; returns (index, term). Raises NotLeader elsewhere."""
        self._check_idle("propose()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"proposal data must be bytes, got {type(data).__name__}")
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead, "proposals")
        if self.lead_transferee is not None:
            raise LeadershipTransferInProgress(
                f"leadership is moving to {self.lead_transferee!r}; retry on the new leader"
            )
        e = self._append_local(EntryKind.NORMAL, bytes(data))
        return e.index, e.term

    def propose_conf_change(self, changes: Sequence[ConfChange] | ConfChange) -> tuple[int, int]:
        """Start a membership change (enters joint consensus if voters change)."""
        self._check_idle("propose_conf_change()")
        if isinstance(changes, ConfChange):
            changes = [changes]
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead, "membership changes")
        if self.lead_transferee is not None:
            raise LeadershipTransferInProgress(
                f"leadership is moving to {self.lead_transferee!r}; retry on the new leader"
            )
        if self.membership.joint or self.log.last_config_index() > self.log.committed:
            raise ConfChangeInProgress(
                "a membership change is still in flight; retry after it is committed"
            )
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped(
                "this leader has not yet committed an entry in its term; retry shortly"
            )
        new = enter_config(self.membership, changes)
        e = self._append_local(EntryKind.CONFIG, encode_membership(new))
        return e.index, e.term

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read; a ReadState(ctx, index) appears in a later Ready."""
        self._check_idle("read_index()")
        if not isinstance(ctx, bytes) or not ctx or len(ctx) > MAX_CTX_BYTES:
            raise ValueError(f"read ctx must be 1..{MAX_CTX_BYTES} bytes, unique per request")
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead, "reads")
        if self._reads.pending(ctx):
            raise ValueError(f"read ctx {ctx!r} is already pending; use a unique ctx per read")
        if self.log.term(self.log.committed) != self.term:
            # Until our no-op commits we do not know the true commit index (§6.4).
            self._reads.waiting_commit.append(ctx)
            return
        self._start_read(ctx)

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to voter `target` (it campaigns on TimeoutNow once caught up)."""
        self._check_idle("transfer_leadership()")
        check_node_id("transfer target", target)
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead, "leadership transfer")
        if target == self.id:
            raise ValueError(f"{target!r} is already the leader")
        if target not in self.membership.voters:
            raise ValueError(f"{target!r} is not a voter; only voters can become leader")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # abort if not done within an election timeout
        pr = self.prs[target]
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._must_send.add(target)

    def report_unreachable(self, peer: str) -> None:
        """The driver failed to send to `peer`: stop pipelining to it until it answers."""
        self._check_idle("report_unreachable()")
        pr = self.prs.get(peer)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def snapshot_meta_for(self, index: int) -> SnapshotMeta:
        """Metadata for a snapshot of the state machine at applied `index`."""
        if not self.log.snapshot.index <= index <= self.log.applied:
            raise ValueError(
                f"can snapshot only at an applied index in [{self.log.snapshot.index}, "
                f"{self.log.applied}], not {index}"
            )
        term = self.log.term(index)
        if term is None:
            raise InvariantViolation(
                "applied-entry-missing",
                f"applied index {index} lies in [{self.log.snapshot.index}, {self.log.applied}] "
                "but the log has no term for it",
                index=index,
                term=self.term,
            )
        return SnapshotMeta(index, term, self.log.membership_at(index))

    def report_snapshot_taken(self, index: int, data: bytes) -> SnapshotMeta | None:
        """The caller durably stored a snapshot at applied `index`: drop the log up to it.

        Returns the snapshot's metadata, or None if a newer snapshot already covers `index`.
        """
        self._check_idle("report_snapshot_taken()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"snapshot data must be bytes, got {type(data).__name__}")
        if index <= self.log.snapshot.index:
            return None
        meta = self.snapshot_meta_for(index)
        self.log.compact(meta)
        self._snapshot_data = bytes(data)
        return meta

    # ----------------------------------------------------------------------------------
    # Ready

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _snapshot_request(self, applied_after: int) -> int | None:
        threshold = self.cfg.compaction_threshold
        if (
            applied_after - self.log.snapshot.index >= threshold
            and applied_after - self._snap_requested_at >= threshold
        ):
            return applied_after
        return None

    def has_ready(self) -> bool:
        # Runs after every input: _flush's own early-out and log.last_index() inlined.
        if self._bcast_entries or self._bcast_commit or self._send_more or self._must_send:
            self._flush()
        log = self.log
        if (
            self._msgs
            or log.stable < log.snapshot.index + len(log.entries)
            or log.committed > log.applied
            or self._pending_snapshot is not None
            or self._read_states
            or self._dropped_reads
        ):
            return True
        # Compare field by field: this runs after every input, building objects is costly.
        hs, ss = self._prev_hs, self._prev_ss
        if self.term != hs.term or self.vote != hs.vote or log.committed != hs.commit:
            return True
        if self.lead != ss.leader or self.term != ss.term or self._reported_role() is not ss.role:
            return True
        return self._snapshot_request(log.applied) is not None

    def ready(self) -> Ready:
        """Collect pending work; call advance(ready) once the driver has handled it."""
        self._check_idle("ready()")
        self._flush()
        log = self.log
        hs = self._hard_state()
        ss = self._soft_state()
        entries = tuple(log.unstable_entries())
        committed = tuple(log.committed_to_apply(self.cfg.max_committed_per_ready))
        applied_after = committed[-1].index if committed else log.applied
        request = self._snapshot_request(applied_after)
        if request is not None:
            self._snap_requested_at = request
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=entries,
            truncate_from=entries[0].index if entries and log.truncated else None,
            snapshot=self._pending_snapshot,
            committed_entries=committed,
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
            soft_state=ss if ss != self._prev_ss else None,
            snapshot_request=request,
        )
        self._msgs = []
        self._read_states = []
        self._dropped_reads = []
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver handled `rd` (persisted, sent, applied)."""
        if not self._ready_out:
            raise RuntimeError("advance() without a matching ready()")
        self._ready_out = False
        log = self.log
        if rd.entries:
            log.stable = max(log.stable, rd.entries[-1].index)
            log.truncated = False
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_ss = rd.soft_state
        if rd.snapshot is not None:
            self._pending_snapshot = None
        if rd.committed_entries:
            first = rd.committed_entries[0].index
            if first != log.applied + 1:
                raise InvariantViolation(
                    "apply-out-of-order",
                    f"the Ready applied entries from {first}, but the last applied was {log.applied}",
                    index=first,
                    term=self.term,
                )
            log.applied = rd.committed_entries[-1].index
        if rd.entries and self.role is Role.LEADER:
            self._maybe_commit()  # the leader's own copy is durable now: it counts

    # ----------------------------------------------------------------------------------
    # status

    def status(self) -> Status:
        progress = {}
        if self.role is Role.LEADER:
            for node, pr in self.prs.items():
                progress[node] = PeerStatus(pr.match, pr.next, pr.state.value, len(pr.inflights))
        return Status(
            id=self.id,
            role=self._reported_role(),
            term=self.term,
            vote=self.vote,
            leader=self.lead,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            snapshot_index=self.log.snapshot.index,
            membership=self.membership,
            lead_transferee=self.lead_transferee,
            recovering=self.recovering,
            progress=progress,
            last_term=self.log.last_term(),
            stale_appends_refused=self.stale_appends_refused,
        )
