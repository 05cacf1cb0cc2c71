"""The driver: turns the Raft core's Ready into actions, written once.

Used unchanged by the asyncio node (``ukehi.node.server``) and by the simulator
(``ukehi.sim``): everything outside memory goes through ``ukehi.node.io`` (the clock, the
peer network) or is *yielded* as :class:`~ukehi.node.io.DiskWork` for the caller to run
(a worker thread in the real node, the simulated disk in the simulator). A bug planted here
or in the core shows up in both worlds.

One wake-up of the Ready loop is :meth:`Driver.cycle`, a generator: feed the queued inputs
(ticks, peer messages, proposals, admin requests) to the core, then per Ready, in the order
the core requires (see ``ukehi.raft.ready.Ready``):

1. install an incoming snapshot (file written durably, WAL emptied, state machine restored);
2. truncate/append WAL entries and save the hard state when term or vote changed, then one
   fsync for the batch (yielded as DiskWork, so the loop keeps reading sockets meanwhile);
   a leader's own AppendEntries (and heartbeats) go out *before* this persist (Raft thesis
   §10.2.1), so followers write while the leader does; the core counts the leader's own
   copy toward commit only once ``advance`` says it is durable;
3. only now send the other messages (a vote or an append ack is never sent before it is
   durable);
4. apply committed entries to the KV state machine and answer the clients waiting for
   them (matched by index AND term: an overwritten entry answers a definite failure);
5. serve the reads whose read index has been applied;
6. ``advance``; *then*, if the Ready asked for one, take a snapshot (compaction): the core
   refuses ``report_snapshot_taken`` between ``ready()`` and ``advance()``, and the state
   machine is still at the requested index because nothing is applied in between.

Fail-stop: an ``InvariantViolation`` from the core (or from applying entries out of order)
leaves :meth:`cycle` before anything more is persisted, sent or applied; the caller stops
the node. A ``BadPeerMessage`` is dropped, counted and logged at warning (rate-limited).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import Any, Callable, Generator

from ukehi import wire
from ukehi.config import format_address, parse_address
from ukehi.kv import CHECKSUM_COMMAND, KVStateMachine, digest_of, to_response
from ukehi.nodelog import NodeLogger
from ukehi.raft.confchange import decode_membership
from ukehi.raft.core import RaftCore
from ukehi.raft.errors import BadPeerMessage, InvariantViolation
from ukehi.raft.messages import Message, message_to_dict
from ukehi.raft.ready import Ready
from ukehi.raft.types import Entry, EntryKind, Membership, NotLeader, ProposalDropped, Role, Snapshot
from ukehi.raft.walcodec import entry_to_wal_command
from ukehi.storage.datadir import GroupStorage
from ukehi.storage.errors import StorageError
from ukehi.storage.format import WalEntry
from ukehi.storage.wal import WAL
from ukehi.storage.hardstate import HardState as StoredHardState
from ukehi.storage.snapshot import Snapshot as StoredSnapshot
from ukehi.waiters import ProposalWaiters, ReadWaiters

from .inputs import Input, Propose, ProposeConfChange, Step, TakeSnapshot, TransferLeader, Unreachable
from .io import Clock, DiskWork, Network

__all__ = ["Driver", "Work", "ADDRESS_KEY_PREFIX", "GROUP_ID", "encode_message", "membership_to_config",
           "membership_from_config"]

GROUP_ID = 0
# Keys under this prefix hold member addresses; clients cannot write them.
ADDRESS_KEY_PREFIX = "\x00ukehi/addr/"
_ADDRESS_KEY_BYTES = ADDRESS_KEY_PREFIX.encode()
PROPOSAL_TIMEOUT = 30.0  # a waiting client gets "timeout" (unknown) after this
READ_TIMEOUT = 10.0
# A read expired at a leader that kept its term through this many election timeouts of
# ticks since the read started was lost by the core (Driver.expire logs "read-lost").
READ_LOST_TIMEOUTS = 4
MAX_INPUTS = 50_000  # peer messages beyond this are dropped (Raft retransmits)
BAD_PEER_LOG_INTERVAL = 1.0  # at most one bad-peer-message warning a second (the rest counted)

ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",  # campaigning (pre-vote phase)
    Role.LEARNER: "learner",
}

# What a driver generator yields: storage work to run, whose result is sent back in.
Work = Generator[DiskWork, Any, Any]


def encode_message(m: Message) -> bytes:
    """A Raft message as a peer frame: the wire codec every real node runs."""
    return wire.encode_frame(wire.MsgType.RAFT, 0, message_to_dict(m), group=m.group_id)


def membership_to_config(m: Membership) -> dict[str, Any]:
    return {"voters": sorted(m.voters), "outgoing": sorted(m.outgoing), "learners": sorted(m.learners)}


def membership_from_config(config: Any) -> Membership:
    if isinstance(config, dict):
        return Membership(
            voters=frozenset(config.get("voters", ())),
            outgoing=frozenset(config.get("outgoing", ())),
            learners=frozenset(config.get("learners", ())),
        )
    if isinstance(config, (bytes, bytearray)):
        return decode_membership(bytes(config))
    return Membership()


# What only a leader sends: none of them promises anything about the sender's own disk.
_LEADER_MESSAGES = frozenset({"append_entries", "heartbeat", "install_snapshot", "timeout_now"})


def _leader_only(rd: Ready) -> bool:
    for m in rd.messages:
        if m.type not in _LEADER_MESSAGES:
            return False
    return True


class Driver:
    """Core + state machine + storage + waiters of one node, driven by typed inputs."""

    def __init__(self, node_id: str, *, bug: str | None, fsync: bool, founders: dict[str, tuple[str, int]],
                 log: NodeLogger, clock: Clock, wake: Callable[[], None]) -> None:
        self.node_id = node_id
        self.bug = bug
        self.fsync = fsync
        self.founders = founders
        self.log = log
        self.clock = clock
        self.wake = wake
        self.network: Network | None = None  # set by the node once it exists
        self.kv = self.new_state_machine()
        self.core: RaftCore | None = None
        self.storage: GroupStorage | None = None
        self.applied = 0
        self.inputs: deque[Input] = deque()
        self.pending_ticks = 0
        self.stalled_ticks = 0  # ticks the timer missed (a stall): they age the lease only
        # Set by the node: seconds per tick, and when the last tick came, so that a stall
        # (no tick for whole intervals) is counted even before the late tick arrives.
        self.tick_s: float | None = None
        self.ticked_at: float | None = None
        self.proposals = ProposalWaiters()
        # index -> (term, data, command) of this leader's proposals: the command validated at
        # propose time, used at apply only for that very entry (same term, same bytes object).
        self.decoded: dict[int, tuple[int, bytes, dict[str, Any]]] = {}
        self.reads = ReadWaiters()
        self.core_ticks = 0  # ticks delivered to the core (a stopped process gets few: tick())
        self.read_batch: list[Any] = []
        self.snapshot_waiters: list[Any] = []
        self.read_seq = 0
        self.addresses: dict[str, tuple[str, int]] = dict(founders)
        self.last_saved_hs: tuple[int, str | None, int] | None = None
        self.last_soft: tuple[str, str | None, int] | None = None
        self.was_recovering = False
        self.bad_peer_messages = 0
        # Work done since start, reported by status: an idle cluster (no client, no fault)
        # handles a few Readies and sends a few messages per heartbeat; a node that keeps
        # handling Readies or sending with nothing to do spins (the harness's busy-when-idle).
        self.readies = 0
        self.messages_sent = 0
        self._bad_peer_logged_at = -BAD_PEER_LOG_INTERVAL
        self._bad_peer_unlogged = 0
        # Called after every Ready that changed the applied index, the role or the leader,
        # so admin code can wait for progress instead of polling blindly.
        self.on_progress: Callable[[], None] = lambda: None

    def new_state_machine(self) -> KVStateMachine:
        return KVStateMachine(unsafe_ignore_fences=self.bug == "no-fencing-check")

    # ------------------------------------------------------------------ inputs
    def push(self, item: Input) -> None:
        self.inputs.append(item)
        self.wake()

    def push_peer_message(self, item: Step) -> bool:
        if len(self.inputs) >= MAX_INPUTS:
            return False  # overloaded: drop, Raft retransmits
        self.inputs.append(item)
        self.wake()
        return True

    def tick(self) -> None:
        # No catching up after a stall: a burst of ticks would look like a dead leader. The
        # ticks not delivered still age the leader's lease (RaftCore.stalled).
        if self.pending_ticks < 3:
            self.pending_ticks += 1
        else:
            self.stalled_ticks += 1
        if self.tick_s is not None:
            now = self.clock.monotonic()
            if self.ticked_at is not None:
                # this tick stands for one interval; whole intervals beyond it went by unticked
                self.stalled_ticks += max(0, int((now - self.ticked_at) // self.tick_s) - 1)
            self.ticked_at = now
        self.wake()

    def _note_stall(self) -> None:
        """Before the core sees any input: the whole tick intervals gone by since the last tick
        (a process stopped, an event loop blocked) age the lease at once, even when the input
        (a read queued while the process was stopped) runs before the late tick's timer does."""
        if self.tick_s is None or self.ticked_at is None:
            return
        missed = int((self.clock.monotonic() - self.ticked_at) // self.tick_s)
        if missed > 0:
            self.stalled_ticks += missed
            self.ticked_at += missed * self.tick_s

    def add_read(self, fut: Any) -> None:
        self.read_batch.append(fut)
        self.wake()

    def feed_inputs(self) -> None:
        core = self.core
        assert core is not None
        self._note_stall()
        if self.stalled_ticks:
            stalled, self.stalled_ticks = self.stalled_ticks, 0
            core.stalled(stalled)
        ticks, self.pending_ticks = self.pending_ticks, 0
        self.core_ticks += ticks
        for _ in range(ticks):
            core.tick()
        inputs = self.inputs
        while inputs:
            item = inputs.popleft()
            if isinstance(item, Step):
                # A peer's bad message is dropped; an InvariantViolation (or any other error:
                # the core's state may be half-changed) leaves the Ready loop and stops the node.
                try:
                    core.step(item.message)
                except BadPeerMessage as e:
                    self._drop_bad_peer_message(item.message, e)
                continue
            try:
                if isinstance(item, Propose):
                    self._do_propose(item)
                elif isinstance(item, ProposeConfChange):
                    if not item.placed.done():
                        try:
                            index, term = core.propose_conf_change(list(item.changes))
                        except (NotLeader, ProposalDropped, ValueError) as e:
                            item.placed.set_exception(e)
                        else:
                            item.placed.set_result(
                                self.proposals.add(index, term, self.clock.monotonic() + PROPOSAL_TIMEOUT))
                elif isinstance(item, TransferLeader):
                    if not item.placed.done():
                        try:
                            core.transfer_leadership(item.target)
                        except (NotLeader, ValueError, KeyError) as e:
                            item.placed.set_exception(e)
                        else:
                            item.placed.set_result(None)
                elif isinstance(item, Unreachable):
                    core.report_unreachable(item.peer)
                elif isinstance(item, TakeSnapshot):
                    self.snapshot_waiters.append(item.placed)
            except (ValueError, TypeError) as e:
                self.log.debug("input-dropped", kind=type(item).__name__, error=str(e))
        if self.read_batch:
            self._start_reads()

    def _drop_bad_peer_message(self, m: Any, e: BadPeerMessage) -> None:
        """Count a peer message the core refused; warn (at most once a second, with the count)."""
        self.bad_peer_messages += 1
        now = self.clock.monotonic()
        if now - self._bad_peer_logged_at < BAD_PEER_LOG_INTERVAL:
            self._bad_peer_unlogged += 1
            return
        self.log.warning("bad-peer-message", type=m.type, src=m.src, term=m.term, reason=str(e)[:200],
                         dropped_total=self.bad_peer_messages, not_logged_since_last=self._bad_peer_unlogged)
        self._bad_peer_logged_at = now
        self._bad_peer_unlogged = 0

    def _do_propose(self, item: Propose) -> None:
        if item.placed.done():  # the client gave up before we got to it: do not propose
            return
        core = self.core
        assert core is not None
        try:
            index, term = core.propose(item.data)
        except (NotLeader, ProposalDropped) as e:
            item.placed.set_exception(e)
            return
        if item.command is not None:
            self.decoded[index] = (term, item.data, item.command)
        item.placed.set_result(self.proposals.add(index, term, item.deadline))

    def _start_reads(self) -> None:
        core = self.core
        assert core is not None
        batch, self.read_batch = self.read_batch, []
        batch = [f for f in batch if not f.done()]
        if not batch:
            return
        self.read_seq += 1
        ctx = self.read_seq.to_bytes(8, "big")
        try:
            core.read_index(ctx)
        except NotLeader as e:
            for f in batch:
                f.set_exception(e)
            return
        self.reads.add(ctx, batch, self.clock.monotonic() + READ_TIMEOUT, (core.term, self.core_ticks))

    def expire(self) -> None:
        now = self.clock.monotonic()
        self.proposals.expire(now)
        core = self.core
        for ctx, (term, ticks) in self.reads.expire(now):
            ticked = self.core_ticks - ticks
            if (core is not None and core.role is Role.LEADER and core.term == term and core.cfg.check_quorum
                    and ticked >= READ_LOST_TIMEOUTS * core.cfg.election_tick):
                # The core must answer every read it took (a read state) or drop it (when it
                # steps down, which ends the term). A leader that kept its term through
                # several election timeouts of ticks had a quorum all along (check-quorum
                # steps it down otherwise), so a read it never confirmed was lost inside the
                # core: an invariant broken, not a slow cluster. (Ticks, not seconds: a
                # process stopped for longer than READ_TIMEOUT gets only a few ticks, so a
                # leader paused with its majority is not judged.)
                self.log.error("read-lost", term=term, waited_s=READ_TIMEOUT, ticks=ticked, ctx=ctx.hex(),
                               commit=core.log.committed,
                               reason="the Raft core neither confirmed nor dropped this read while it led, "
                                      "in the term the read was started in")

    # ------------------------------------------------------------------ the Ready loop
    def cycle(self) -> Work:
        """One wake-up: feed inputs, handle every Ready, take snapshots asked for."""
        core = self.core
        assert core is not None
        self.feed_inputs()
        while core.has_ready():
            rd = core.ready()
            self.readies += 1
            yield from self.handle_ready(rd)
            core.advance(rd)
            if rd.snapshot_request is not None:
                yield from self.take_snapshot(rd.snapshot_request, "threshold")
            self._after_advance()
            self.feed_inputs()
        if self.snapshot_waiters:
            waiters, self.snapshot_waiters = self.snapshot_waiters, []
            try:
                taken = yield from self.take_snapshot(self.applied, "admin")
            except (StorageError, OSError, ValueError) as e:
                for w in waiters:
                    if not w.done():
                        w.set_exception(e)
            else:
                index = taken if taken is not None else core.status().snapshot_index
                for w in waiters:
                    if not w.done():
                        w.set_result(index)
            self.wake()

    def handle_ready(self, rd: Ready) -> Work:
        # 1 + 2: make everything durable (the caller runs the work off the event loop).
        sent_early = False
        applied_early = False
        voted: tuple[int, str] | None = None
        if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
            hs_to_save = None
            if rd.hard_state is not None:
                h = rd.hard_state
                key = (h.term, h.vote, h.commit)
                prev = self.last_saved_hs
                # Term and vote must be durable before any message that depends on them;
                # the commit index need not be (it is re-learned from the leader), so it is
                # saved along with term/vote changes and at shutdown only.
                if prev is None or (h.term, h.vote) != prev[:2]:
                    # forget-vote (planted bug): the term is saved, the vote stays in memory only.
                    vote = None if self.bug == "forget-vote" else h.vote
                    hs_to_save = StoredHardState(h.term, vote, h.commit)
                    self.last_saved_hs = key
                    if h.vote is not None:
                        voted = (h.term, h.vote)
            if rd.messages and hs_to_save is None and rd.snapshot is None and _leader_only(rd):
                # Raft thesis §10.2.1: the leader replicates while its own write and fsync
                # run; the core counts the leader's copy toward commit only after advance().
                # Nothing a follower or candidate sends goes early: votes and acks promise
                # durable state. A Ready that changes term or vote sends after the persist.
                self._send_messages(rd)
                sent_early = True
            meanwhile = None
            if rd.snapshot is None and (rd.committed_entries or rd.read_states or rd.dropped_reads):
                # Pipelining: the entries committed earlier (batch N) are applied and answered
                # while this Ready's entries (batch N+1) are written. Safe: a committed entry
                # is durable on a quorum already (the leader counts its own copy only after
                # its persist), so answering it never waits for this node's disk; what does
                # promise this node's durable state (acks, votes) is still sent after the
                # persist below. A snapshot install is not overlapped (it resets the state
                # machine and the WAL together).
                def meanwhile() -> None:
                    nonlocal applied_early
                    applied_early = True
                    self._apply_and_read(rd)
            # Build the batch here (WAL records encoded on the loop), so the WAL thread only
            # writes and fsyncs and holds the GIL as little as it can while the loop applies.
            batch = self._encode_for_wal(rd.entries) if rd.entries else None
            # Empty: only the commit index changed (saved lazily), so there is nothing to
            # write; the real disk then skips the WAL-thread round trip (DiskWork.empty).
            empty = rd.snapshot is None and not rd.entries and hs_to_save is None
            yield DiskWork("persist", lambda: self._persist(rd, hs_to_save, batch), meanwhile, empty)
            if voted is not None:
                # Logged once durable, before the grant is sent: the white-box election-safety
                # checker holds every node to one candidate per term, across its restarts.
                self.log.info("voted", term=voted[0], candidate=voted[1])
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        # 3: send (only now, unless the leader's own appends went out before the persist).
        if rd.messages and not sent_early:
            self._send_messages(rd)
        # 4 + 5: apply and serve reads (unless the disk did it while the persist ran).
        if not applied_early:
            self._apply_and_read(rd)
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        if rd.committed_entries or rd.snapshot is not None or rd.soft_state is not None:
            self.on_progress()

    def _apply_and_read(self, rd: Ready) -> None:
        """Apply the Ready's committed entries, answer their clients, serve ready reads."""
        if rd.committed_entries:
            self.apply(rd.committed_entries)
        for rs in rd.read_states:
            self.reads.read_state(rs.ctx, rs.index, self.applied)
        for ctx in rd.dropped_reads:
            self.reads.dropped(ctx, None, None)

    @staticmethod
    def _encode_for_wal(entries: tuple[Entry, ...]) -> tuple[list[WalEntry], list[bytes]]:
        records = [WalEntry(e.term, e.index, entry_to_wal_command(e), e.fencing_token) for e in entries]
        return records, WAL.encode(records)

    def _persist(self, rd: Ready, hs: StoredHardState | None,
                 batch: tuple[list[WalEntry], list[bytes]] | None = None) -> None:
        """Runs off the event loop: the only code that touches the WAL besides start/stop."""
        storage = self.storage
        assert storage is not None
        wal = storage.wal
        if rd.snapshot is not None:
            s = rd.snapshot
            storage.snapshots.save(
                StoredSnapshot(s.meta.index, s.meta.term, bytes(s.data), membership_to_config(s.meta.membership))
            )
            first = wal.first_index
            if first is not None:
                wal.truncate_from(first)  # the log now starts after the snapshot
        if rd.entries:
            start = rd.entries[0].index
            last = wal.last_index
            if rd.truncate_from is not None:
                wal.truncate_from(rd.truncate_from)
            elif last is not None and last >= start:
                # Entries the core does not know about (kept after a hole): replaced now.
                wal.truncate_from(start)
            elif last is not None and last < start - 1:
                # The WAL ends before the new entries: everything it holds is covered by the
                # snapshot (a WAL cut at start-up below a newer snapshot), so the log starts
                # again here. (The simulator found this: the append failed out of order.)
                wal.reset()
            records, frames = batch if batch is not None else self._encode_for_wal(rd.entries)
            wal.append(
                records, frames=frames,
                # lost-unfsynced (planted bug): the bytes go to the kernel, the fsync is left
                # to the node's background task, and the entries are acknowledged before it runs.
                sync=self.fsync and self.bug != "lost-unfsynced",
            )
        if hs is not None:
            storage.hard_state.save(hs)

    def _install_snapshot(self, snap: Snapshot) -> None:
        if snap.data:
            self.kv.restore(bytes(snap.data))
        else:
            self.kv = self.new_state_machine()
        self.applied = snap.meta.index
        self.proposals.snapshot_installed(snap.meta.index)
        for i in [i for i in self.decoded if i <= snap.meta.index]:
            del self.decoded[i]
        self.refresh_addresses()
        self.sync_links(snap.meta.membership)
        # The restored state's digest: the replica-agreement checker compares it with the one
        # the snapshot's maker logged, so a restore that loses or changes anything shows.
        self.log.info("snapshot-installed", index=snap.meta.index, term=snap.meta.term, bytes=len(snap.data),
                      members=",".join(sorted(snap.meta.membership.all_voters())),
                      **({"digest": self.kv.digest()} if snap.data else {}))
        self.reads.applied(self.applied)

    def _send_messages(self, rd: Ready) -> None:
        network = self.network
        assert network is not None
        # A network may bring its own ``encode`` (the simulator's hands most messages over as
        # objects and samples the codec: ukehi.sim.world); a real one sends these frames.
        encode: Callable[[Message], Any] = getattr(network, "encode", None) or encode_message
        per_peer: dict[str, list[Any]] = {}
        self.messages_sent += len(rd.messages)
        for m in rd.messages:
            try:
                frame = encode(m)
            except wire.ProtocolError as e:
                self.log.error("message-too-big", type=m.type, dst=m.dst, error=str(e))
                continue
            per_peer.setdefault(m.dst, []).append(frame)
            if m.type == "install_snapshot" and getattr(m, "offset", 1) == 0:
                # chunks: every chunk but the last is as long as the first (core._send_snapshot_chunk)
                self.log.info("snapshot-sent", peer=m.dst, index=m.snap_index, bytes=m.total_size,
                              chunks=-(-m.total_size // max(1, len(m.data))))
        for peer, frames in per_peer.items():
            if not network.send(peer, self.addresses.get(peer), frames):
                self.log.debug("no-address", peer=peer)

    def apply(self, entries: tuple[Entry, ...]) -> None:
        kv = self.kv
        decoded = self.decoded
        addresses_changed = False
        first_applied = self.applied
        for e in entries:
            if e.index <= self.applied:
                continue  # covered by a snapshot already installed
            if e.index != self.applied + 1:
                raise InvariantViolation(
                    "apply-out-of-order", f"entry {e.index} reached the state machine, which applied "
                    f"up to {self.applied}", index=e.index, term=self.core.term if self.core else None)
            if e.kind is EntryKind.CONFIG:
                membership = decode_membership(e.data)
                self.log.info("membership-changed", index=e.index, term=e.term,
                              voters=",".join(sorted(membership.voters)),
                              outgoing=",".join(sorted(membership.outgoing)),
                              learners=",".join(sorted(membership.learners)), joint=membership.joint)
                self.sync_links(membership)
                self.applied = e.index
                self.proposals.applied(e.index, e.term, (wire.MsgType.OK, wire.ok_body(e.index)))
                continue
            data = e.data if e.kind is EntryKind.NORMAL else b""
            pre = decoded.pop(e.index, None) if decoded else None
            command = pre[2] if pre is not None and pre[0] == e.term and pre[1] is e.data else None
            result = kv.apply(e.index, e.fencing_token, data, decoded=command)
            self.applied = e.index
            if data == CHECKSUM_COMMAND:
                # A consistency check: this replica's own digest at this index, computed here
                # from the state (not taken from apply's answer), for checkers/whitebox/digests.py.
                self.log.info("state-digest", index=e.index, term=e.term, digest=kv.digest(), keys=len(kv))
            if data and _ADDRESS_KEY_BYTES in data:
                addresses_changed = True
            self.proposals.applied(e.index, e.term, to_response(result))
        if addresses_changed:
            self.refresh_addresses()
        # White-box checkers (checkers/whitebox) compare what every node applied at each
        # index: term and CRC-32 of the entry's WAL command bytes, 200 entries a line.
        # (Built only when info lines are written: a CRC and a re-encoding per entry.)
        if not self.log.enabled("info"):
            self.reads.applied(self.applied)
            return
        done = [e for e in entries if e.index > first_applied]
        for at in range(0, len(done), 200):
            part = done[at:at + 200]
            self.log.info("applied", first=part[0].index, last=part[-1].index,
                          entries=",".join(f"{e.term}.{zlib.crc32(entry_to_wal_command(e)):08x}" for e in part))
        self.reads.applied(self.applied)

    def _after_advance(self) -> None:
        self.note_if_recovered("caught up past the WAL cut; voting again")

    def note_if_recovered(self, detail: str) -> None:
        """Log ``recovered`` once, when a node that was recovering from a WAL cut no longer is."""
        core = self.core
        assert core is not None
        if self.was_recovering and not core.recovering:
            self.was_recovering = False
            self.log.info("recovered", commit=core.status().commit, detail=detail)

    def _on_soft_state(self, rd: Ready) -> None:
        ss = rd.soft_state
        assert ss is not None
        role = ROLE_NAMES.get(ss.role, str(ss.role.value))
        prev = self.last_soft
        now = (ss.role.value, ss.leader, ss.term)
        self.last_soft = now
        if prev is None or prev[0] != ss.role.value:
            self.log.info(f"became-{ss.role.value}", term=ss.term, leader=ss.leader, role=role,
                          commit=self.core.status().commit if self.core else None)
        if prev is None or prev[2] != ss.term:
            self.log.info("term-changed", term=ss.term, previous=prev[2] if prev else None)
        if prev is None or prev[1] != ss.leader:
            self.log.info("leader-changed", term=ss.term, leader=ss.leader,
                          previous=prev[1] if prev else None)

    def take_snapshot(self, index: int, why: str) -> Work:
        """Snapshot the state machine (at applied == index) and compact the log."""
        core = self.core
        storage = self.storage
        assert core is not None and storage is not None
        if index != self.applied:
            return None
        meta = core.snapshot_meta_for(index)
        data = self.kv.snapshot()
        snap = StoredSnapshot(meta.index, meta.term, data, membership_to_config(meta.membership))
        yield DiskWork("snapshot-save", lambda: storage.snapshots.save(snap))
        if core.report_snapshot_taken(index, data) is None:
            return None
        yield DiskWork("compact", lambda: storage.wal.compact_to(index))
        self.log.info("snapshot-created", index=index, term=meta.term, bytes=len(data), reason=why,
                      digest=digest_of(data))
        return index

    # ------------------------------------------------------------------ address book
    def refresh_addresses(self) -> None:
        for key, value in self.kv.items():
            if not key.startswith(ADDRESS_KEY_PREFIX) or not isinstance(value, str):
                continue
            node = key[len(ADDRESS_KEY_PREFIX):]
            try:
                addr = parse_address(value)
            except ValueError:
                continue
            if self.addresses.get(node) != addr:
                self.addresses[node] = addr
                self.log.info("peer-address", peer=node, address=value)

    def sync_links(self, membership: Membership) -> None:
        network = self.network
        assert network is not None
        members = membership.all_nodes()
        # Keep a warm connection to every member, so a new candidate's vote requests (or a
        # new leader's first appends) do not wait for a connect.
        for peer in sorted(members):
            if peer != self.node_id and peer in self.addresses:
                network.ensure(peer, self.addresses[peer])
        for peer in network.linked_peers():
            if peer not in members and peer in self.addresses and peer not in self.founders:
                asyncio.get_running_loop().create_task(network.drop(peer))

    def leader_hint(self) -> dict[str, Any]:
        core = self.core
        leader = core.lead if core is not None else None
        if leader is None or leader == self.node_id:
            return {"leader": leader}
        addr = self.addresses.get(leader)
        return {"leader": leader, "leader_address": format_address(addr) if addr else None}
