"""The Ukehi node process: an asyncio driver around the sans-IO Raft core.

One task (`_ready_loop`) owns the core. Everything else (the tick timer, peer messages,
client requests, admin calls) puts an input on `self._inputs` and wakes it. The core refuses
inputs between `ready()` and `advance()`, so inputs that arrive while a Ready is being
handled (most of that time is the fsync, done in a worker thread) wait in the queue and go
into the *next* Ready together: that is the group commit, one fsync per batch.

Per Ready, in the order the core requires (see `ukehi.raft.ready.Ready`):

1. install an incoming snapshot (file written durably, WAL emptied, state machine restored);
2. truncate/append WAL entries and save the hard state when term or vote changed, then one
   fsync for the batch (in a thread, so the loop keeps reading sockets meanwhile);
3. only now send the messages (a vote or an append ack is never sent before it is durable);
4. apply committed entries to the KV state machine and answer the clients waiting for
   them (matched by index AND term: an overwritten entry answers a definite failure);
5. serve the reads whose read index has been applied;
6. `advance`; then, if the Ready asked for one, take a snapshot (compaction): the core
   refuses `report_snapshot_taken` between `ready()` and `advance()`, and the state machine
   is still at the requested index because nothing is applied in between.

Fail-stop: an `InvariantViolation` from the core (or from applying entries out of order)
means this node's own state is broken. The Ready loop raises it before it persists, sends
or applies anything more; `run` logs one `level=fatal event=invariant-violated` line naming
the invariant, the term and the index, saves nothing at shutdown, and exits with
`EXIT_INVARIANT_VIOLATED` (70). A `BadPeerMessage` (a peer's malformed or impossible
message) is dropped, counted (`bad_peer_messages` in status) and logged at warning.
Any other exception escaping a task is a bug: `level=fatal event=fatal`, exit 1.

Start-up: the data dir is replayed under the CorruptionPolicy before the core exists; the
listening socket is open during replay and answers every client with `recovering` (and
`status` with `"recovering": true`). RefuseStart exits with code 4 and changes nothing.

Addresses of members: founders come from `--peers`; a node added later is announced by the
admin `add_node` call, which first commits a reserved KV key (`ADDRESS_KEY_PREFIX + id`)
holding its address, so every replica, and every snapshot, knows where it lives.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from typing import Any

from ukehi import wire
from ukehi.bugs import BACKGROUND_FSYNC_S, KNOWN_BUGS, canonical_bug, raft_overrides
from ukehi.config import NodeConfig, format_address, parse_address
from ukehi.kv import CommandError, KVStateMachine, encode_command, to_response
from ukehi.nodelog import NodeLogger
from ukehi.raft.confchange import ConfChange, ConfChangeType, decode_membership
from ukehi.raft.config import RaftConfig
from ukehi.raft.core import RaftCore
from ukehi.raft.errors import BadPeerMessage, InvariantViolation
from ukehi.raft.messages import MessageError, message_from_dict, message_to_dict
from ukehi.raft.ready import Ready
from ukehi.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    NotLeader,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)
from ukehi.raft.walcodec import entry_from_wal, entry_to_wal_command
from ukehi.server import NodeServer
from ukehi.storage.datadir import DataDir, GroupStorage
from ukehi.storage.errors import CorruptionRefusedError, StorageError
from ukehi.storage.format import WalEntry
from ukehi.storage.hardstate import HardState as StoredHardState
from ukehi.storage.snapshot import Snapshot as StoredSnapshot
from ukehi.tls import NodeTLS
from ukehi.transport import PeerTransport
from ukehi.txnserve import serve_append, serve_txn
from ukehi.waiters import ProposalWaiters, ReadWaiters

__all__ = ["UkehiNode", "run_node", "ADDRESS_KEY_PREFIX", "EXIT_REFUSE_START", "EXIT_INVARIANT_VIOLATED"]

GROUP_ID = 0
EXIT_REFUSE_START = 4
EXIT_START_FAILED = 1
# The node stopped itself because its own Raft state broke an invariant (sysexits'
# EX_SOFTWARE): distinct from a start-up failure (1) and a refused start (4).
EXIT_INVARIANT_VIOLATED = 70
BAD_PEER_LOG_INTERVAL = 1.0  # at most one bad-peer-message warning a second (the rest counted)
# Keys under this prefix hold member addresses; clients cannot write them.
ADDRESS_KEY_PREFIX = "\x00ukehi/addr/"
_ADDRESS_KEY_BYTES = ADDRESS_KEY_PREFIX.encode()

PROPOSAL_TIMEOUT = 30.0  # a waiting client gets "timeout" (unknown) after this
READ_TIMEOUT = 10.0
MAX_INPUTS = 50_000  # peer messages beyond this are dropped (Raft retransmits)

_ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",  # campaigning (pre-vote phase)
    Role.LEARNER: "learner",
}


def _err(code: wire.ErrorCode, message: str, **hint: Any) -> tuple[wire.MsgType, dict[str, Any]]:
    return wire.MsgType.ERROR, wire.error_body(code, message, **hint)


def _partial(message: str) -> tuple[wire.MsgType, dict[str, Any]]:
    """An admin change that is half done: the outcome as a whole is unknown, not failed."""
    return _err(wire.ErrorCode.TIMEOUT, f"partially done, outcome unknown: {message}")


def _membership_to_config(m: Membership) -> dict[str, Any]:
    return {"voters": sorted(m.voters), "outgoing": sorted(m.outgoing), "learners": sorted(m.learners)}


def _membership_from_config(config: Any) -> Membership:
    if isinstance(config, dict):
        return Membership(
            voters=frozenset(config.get("voters", ())),
            outgoing=frozenset(config.get("outgoing", ())),
            learners=frozenset(config.get("learners", ())),
        )
    if isinstance(config, (bytes, bytearray)):
        return decode_membership(bytes(config))
    return Membership()


class UkehiNode:
    """One node: storage, Raft core, transport, server, state machine."""

    def __init__(self, config: NodeConfig, log: NodeLogger | None = None) -> None:
        self.config = config
        # Aliases (early-ack) resolve to the canonical name every check below uses.
        self.bug = canonical_bug(config.unsafe_bug)
        self.log = log or NodeLogger(config.node_id, config.log_level)
        self.phase = "starting"  # starting -> replaying -> running -> stopping
        self.kv = self._new_state_machine()
        self.core: RaftCore | None = None
        self.storage: GroupStorage | None = None
        self.applied = 0
        self.corruption: dict[str, Any] | None = None
        self.started_at = time.time()
        self._inputs: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._pending_ticks = 0
        self._proposals = ProposalWaiters()
        self._reads = ReadWaiters()
        self._read_batch: list[asyncio.Future[Any]] = []
        self._snapshot_waiters: list[asyncio.Future[Any]] = []
        self._read_seq = 0
        self._addresses: dict[str, tuple[str, int]] = dict(config.peers)
        self._last_saved_hs: tuple[int, str | None, int] | None = None
        self._last_soft: tuple[str, str | None, int] | None = None
        self._was_recovering = False
        self._admin_lock = asyncio.Lock()
        self._leader_changed = asyncio.Event()
        self._applied_event = asyncio.Event()
        # Peer messages the core refused as malformed or impossible (BadPeerMessage).
        self.bad_peer_messages = 0
        self._bad_peer_logged_at = -BAD_PEER_LOG_INTERVAL
        self._bad_peer_unlogged = 0
        # Every storage call made in a worker thread holds this lock, so shutdown can wait
        # for an in-flight persist before it saves the hard state and closes the files.
        self._storage_lock = threading.Lock()
        self._storage_closed = False
        self._fatal = False  # set on a fail-stop: shutdown then persists nothing
        # Mutual TLS unless --insecure (ukehi/tls.py); files were checked by the config, and
        # a certificate that is not this node's is refused here (TLSError, exit 254).
        self.tls = None if config.insecure else NodeTLS.load(
            config.node_id, str(config.tls_ca), str(config.tls_cert), str(config.tls_key))
        self.server = NodeServer(self, self.log, tls=self.tls.server if self.tls else None,
                                 max_connections=config.max_connections, idle_timeout=config.idle_timeout_s)
        self.transport = PeerTransport(config.node_id, self.log, self._on_unreachable,
                                       advertise=format_address(config.advertise_address),
                                       tls=self.tls.client if self.tls else None)
        self.bound_address: tuple[str, int] | None = None

    # ================================================================== lifecycle
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        cfg = self.config
        self.log.info(
            "starting", pid=os.getpid(), listen=format_address(cfg.listen), data_dir=cfg.data_dir,
            peers=",".join(f"{k}={format_address(v)}" for k, v in cfg.peers.items()),
            policy=cfg.corruption_policy, read_mode=cfg.read_mode, join=cfg.join,
            election_ms=f"{cfg.election_timeout_ms[0]}:{cfg.election_timeout_ms[1]}",
            heartbeat_ms=cfg.heartbeat_ms, tick_ms=cfg.tick_ms, unsafe_bug=self.bug, fsync=cfg.fsync,
            tls="off" if self.tls is None else f"mutual ({self.tls.identity})",
        )
        if self.tls is None:
            self.log.warning("insecure", detail="--insecure: plain TCP, no authentication; anyone who can reach "
                             f"{format_address(cfg.listen)} can change membership, move leadership and forge "
                             "Raft messages")
        if not cfg.fsync:
            self.log.warning("unsafe-fsync-off", detail="fsync = false: WAL appends are acknowledged before "
                             "they reach stable storage; a power cut can lose acknowledged writes")
        if self.bug is not None:
            # Loud on purpose: a node with a planted bug must never pass for a correct one.
            self.log.warning("unsafe-bug", bug=self.bug, detail=f"THIS NODE IS INCORRECT ON PURPOSE: "
                             f"{KNOWN_BUGS.get(self.bug, '?')}; for harness self-tests only")
        # Listen first: during replay every request gets a clear "recovering" answer.
        try:
            self.bound_address = await self.server.start(*cfg.listen)
        except OSError as e:
            self.log.error("listen-failed", address=format_address(cfg.listen), error=str(e))
            print(f"ukehi node: cannot listen on {format_address(cfg.listen)}: {e}; "
                  "pick a free port or stop the process that holds it", file=sys.stderr)
            return EXIT_START_FAILED
        self.log.info("listening", address=format_address(self.bound_address))
        self.phase = "replaying"
        try:
            try:
                code = await self._recover()
            except (ValueError, TypeError) as e:
                # The data dir replayed but does not form a log the core accepts.
                self.log.error("start-failed", error=str(e))
                print(f"ukehi node: cannot start from {cfg.data_dir}: {e}", file=sys.stderr)
                return EXIT_START_FAILED
            if code is not None:
                return code
            self.phase = "running"
            tasks = [
                loop.create_task(self._tick_loop(), name="tick"),
                loop.create_task(self._ready_loop(), name="ready"),
                loop.create_task(self._housekeeping(), name="housekeeping"),
            ]
            if self.bug == "lost-unfsynced":
                tasks.append(loop.create_task(self._background_fsync(), name="background-fsync"))
            stop_wait = loop.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stop_wait and t.exception() is not None]
            # The fatal line first, before anything else can happen.
            code = self._fail_stop(failed[0]) if failed else 0
            self.phase = "stopping"
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            stop_wait.cancel()
            return code
        finally:
            await self._shutdown()

    def _fail_stop(self, task: asyncio.Task[Any]) -> int:
        """A task died: log the fatal line at once and pick the exit code. Shutdown then
        saves nothing, since the state it would save is the state that broke."""
        exc = task.exception()
        self._fatal = True
        core = self.core
        if isinstance(exc, InvariantViolation):
            term = exc.term if exc.term is not None else (core.term if core is not None else None)
            self.log.fatal("invariant-violated", invariant=exc.invariant, term=term, index=exc.index,
                           commit=core.log.committed if core is not None else None, applied=self.applied,
                           detail=exc.detail)
            print(f"ukehi node: stopped: Raft invariant {exc.invariant} violated at term {term}, index "
                  f"{exc.index}: {exc.detail}", file=sys.stderr)
            return EXIT_INVARIANT_VIOLATED
        tb = "".join(traceback.format_exception(exc)).strip().replace("\n", " | ")
        self.log.fatal("fatal", task=task.get_name(), error=repr(exc), traceback=tb)
        print(f"ukehi node: fatal error in {task.get_name()}: {exc!r}", file=sys.stderr)
        return EXIT_START_FAILED

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self._proposals.fail_all(_err(wire.ErrorCode.TIMEOUT, "node shutting down; outcome unknown"))
        self._reads.fail_all()
        await self.server.stop()
        await self.transport.close()
        if self.storage is not None:
            final = None
            if self.core is not None and not self._fatal:
                # Save the latest commit index (it is saved lazily while running).
                st = self.core.status()
                vote = None if self.bug == "forget-vote" else st.vote
                final = StoredHardState(st.term, vote, st.commit)
            # In a thread: it waits for a persist still running in another one.
            await asyncio.to_thread(self._close_storage, final)
        self.log.info("shutdown", applied=self.applied, fatal=self._fatal)

    def _close_storage(self, final: StoredHardState | None) -> None:
        """Wait for the storage work in flight, save `final` (if any), close the files."""
        storage = self.storage
        assert storage is not None
        with self._storage_lock:
            self._storage_closed = True
            if final is not None:
                try:
                    storage.hard_state.save(final)
                except (StorageError, OSError, ValueError) as e:
                    self.log.warning("shutdown-save-failed", error=str(e))
            storage.close()

    def _storage_call(self, fn: Any, *args: Any) -> Any:
        """Run a storage call (in a worker thread) unless shutdown closed the storage."""
        with self._storage_lock:
            if self._storage_closed:
                raise StorageError("the node is stopping: storage is closed")
            return fn(*args)

    # ================================================================== recovery
    async def _recover(self) -> int | None:
        """Replay the data dir and build the core. Returns an exit code to stop, else None."""
        cfg = self.config
        try:
            storage = await asyncio.to_thread(
                lambda: DataDir(cfg.data_dir).open_group(GROUP_ID, cfg.corruption_policy,
                                                         unsafe_skip_crc=self.bug == "no-crc-check")
            )
        except CorruptionRefusedError as e:
            report = getattr(e, "report", None)
            for f in getattr(report, "findings", []) or []:
                self.log.error("corruption-report", policy=cfg.corruption_policy, segment=f.segment,
                               offset=f.offset, kind=f.kind, action=f.action, index=f.index, detail=f.detail)
            self.log.error("refuse-start", reason=str(e))
            print(f"ukehi node: refusing to start (corruption policy refuse-start): {e}", file=sys.stderr)
            return EXIT_REFUSE_START
        except (StorageError, OSError, ValueError) as e:
            self.log.error("storage-open-failed", error=str(e))
            print(f"ukehi node: cannot open the data directory {cfg.data_dir}: {e}", file=sys.stderr)
            return EXIT_START_FAILED
        self.storage = storage
        rec = storage.recovered
        report = rec.report
        self.corruption = report.to_dict()
        for f in report.findings:
            level = "info" if f.informational else "warning"
            self.log.log(level, "corruption-report", policy=cfg.corruption_policy, segment=f.segment,
                         offset=f.offset, kind=f.kind, action=f.action, index=f.index,
                         length=f.length, detail=f.detail)
        # --- snapshot -> state machine
        snapshot: Snapshot | None = None
        if rec.snapshot is not None:
            s = rec.snapshot
            snapshot = Snapshot(SnapshotMeta(s.index, s.term, _membership_from_config(s.config)), bytes(s.data))
            if s.data:
                self.kv.restore(bytes(s.data))
            self.applied = s.index
        # --- WAL entries -> core entries; a hole (AlertAndContinue) ends what Raft can use
        entries: list[Entry] = []
        expected = (snapshot.meta.index if snapshot else 0) + 1
        hole_at: int | None = None
        for w in rec.entries:
            if w.index != expected:
                hole_at = expected
                break
            entries.append(entry_from_wal(w.term, w.index, w.command, w.fencing_token))
            expected += 1
        if hole_at is not None:
            ignored = len(rec.entries) - len(entries)
            self.log.warning(
                "log-hole", missing_from=hole_at, entries_ignored=ignored,
                detail="the WAL has a hole; Raft uses the log up to it and the leader overwrites the rest",
            )
        hs = rec.hard_state
        last_index = entries[-1].index if entries else (snapshot.meta.index if snapshot else 0)
        commit = hs.commit
        refuse_until = 0
        if rec.recovering:
            refuse_until = int(rec.highest_index_seen or 0)
            self._was_recovering = True
            self.log.warning("recovering", refuse_votes_until=refuse_until, last_good_index=rec.last_good_index,
                             detail="WAL cut by truncate-to-last-good: no votes until caught up from a leader")
        if refuse_until and self.bug == "truncate-then-vote":
            # Planted bug: forget the cut at once, so this node votes (and may lead) with a
            # log that lost entries a quorum may need it to remember.
            self.log.warning("unsafe-bug-effect", bug=self.bug, ignored_refuse_votes_until=refuse_until)
            refuse_until = 0
        if commit > last_index and refuse_until == 0:
            # Committed entries are missing (a hole or a lost tail without a cut report):
            # the leader will resend them; we cannot claim them as committed locally.
            self.log.warning("commit-clamped", saved_commit=commit, last_index=last_index)
            commit = last_index
        last_term = entries[-1].term if entries else (snapshot.meta.term if snapshot else 0)
        term = max(hs.term, last_term)
        vote = hs.vote if isinstance(hs.vote, str) else None
        if term != hs.term:
            vote = None  # a vote belongs to the saved term, not to a later one
        initial = None
        if snapshot is None and not cfg.join:
            initial = Membership(voters=frozenset(cfg.peers))
        raft_cfg = raft_config(cfg, self.bug)
        self.core = RaftCore(
            cfg.node_id, raft_cfg, rng=random.Random(), hard_state=HardState(term, vote, commit),
            entries=entries, snapshot=snapshot, initial_membership=initial,
            refuse_votes_until=refuse_until,
        )
        self._last_saved_hs = (term, vote, commit)
        self._refresh_addresses()
        self._sync_links(self.core.membership)
        self.log.info(
            "replay-done", entries=len(entries), snapshot_index=snapshot.meta.index if snapshot else 0,
            term=term, vote=vote, commit=commit, last_index=last_index,
            members=",".join(sorted(self.core.membership.all_voters())),
            corruption="clean" if report.clean else "found", recovering=self.core.recovering,
        )
        return None

    # ================================================================== timers
    async def _tick_loop(self) -> None:
        interval = self.config.tick_ms / 1000.0
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            # No catching up after a stall: a burst of ticks would look like a dead leader.
            next_at = max(next_at + interval, loop.time())
            if self._pending_ticks < 3:
                self._pending_ticks += 1
            self._wake.set()

    def _new_state_machine(self) -> KVStateMachine:
        return KVStateMachine(unsafe_ignore_fences=self.bug == "no-fencing-check")

    async def _background_fsync(self) -> None:
        """lost-unfsynced only: fsync the WAL every BACKGROUND_FSYNC_S, long after the acks."""
        assert self.storage is not None
        wal = self.storage.wal
        while True:
            await asyncio.sleep(BACKGROUND_FSYNC_S)
            await asyncio.to_thread(self._storage_call, wal.sync)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            self._proposals.expire(now)
            self._reads.expire(now)

    # ================================================================== the Ready loop
    def _push(self, item: tuple[Any, ...]) -> None:
        self._inputs.append(item)
        self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        assert core is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._feed_inputs()
            while core.has_ready():
                rd = core.ready()
                await self._handle_ready(rd)
                core.advance(rd)
                if rd.snapshot_request is not None:
                    await self._take_snapshot(rd.snapshot_request, "threshold")
                self._after_advance()
                self._feed_inputs()
            if self._snapshot_waiters:
                waiters, self._snapshot_waiters = self._snapshot_waiters, []
                try:
                    taken = await self._take_snapshot(self.applied, "admin")
                except (StorageError, OSError, ValueError) as e:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(e)
                else:
                    index = taken if taken is not None else core.status().snapshot_index
                    for w in waiters:
                        if not w.done():
                            w.set_result(index)
                self._wake.set()

    def _feed_inputs(self) -> None:
        core = self.core
        assert core is not None
        ticks, self._pending_ticks = self._pending_ticks, 0
        for _ in range(ticks):
            core.tick()
        inputs = self._inputs
        while inputs:
            item = inputs.popleft()
            kind = item[0]
            if kind == "step":
                # A peer's bad message is dropped; an InvariantViolation (or any other error:
                # the core's state may be half-changed) leaves the Ready loop and stops the node.
                try:
                    core.step(item[1])
                except BadPeerMessage as e:
                    self._drop_bad_peer_message(item[1], e)
                continue
            try:
                if kind == "propose":
                    self._do_propose(item[1], item[2], item[3])
                elif kind == "conf":
                    _, changes, placed = item
                    if not placed.done():
                        try:
                            index, term = core.propose_conf_change(changes)
                        except (NotLeader, ProposalDropped, ValueError) as e:
                            placed.set_exception(e)
                        else:
                            placed.set_result(
                                self._proposals.add(index, term, time.monotonic() + PROPOSAL_TIMEOUT)
                            )
                elif kind == "transfer":
                    _, target, placed = item
                    if not placed.done():
                        try:
                            core.transfer_leadership(target)
                        except (NotLeader, ValueError, KeyError) as e:
                            placed.set_exception(e)
                        else:
                            placed.set_result(None)
                elif kind == "unreachable":
                    core.report_unreachable(item[1])
                elif kind == "snapshot":
                    self._snapshot_waiters.append(item[1])
            except (ValueError, TypeError) as e:
                self.log.debug("input-dropped", kind=kind, error=str(e))
        if self._read_batch:
            self._start_reads()

    def _drop_bad_peer_message(self, m: Any, e: BadPeerMessage) -> None:
        """Count a peer message the core refused; warn (at most once a second, with the count)."""
        self.bad_peer_messages += 1
        now = time.monotonic()
        if now - self._bad_peer_logged_at < BAD_PEER_LOG_INTERVAL:
            self._bad_peer_unlogged += 1
            return
        self.log.warning("bad-peer-message", type=m.type, src=m.src, term=m.term, reason=str(e)[:200],
                         dropped_total=self.bad_peer_messages, not_logged_since_last=self._bad_peer_unlogged)
        self._bad_peer_logged_at = now
        self._bad_peer_unlogged = 0

    def _do_propose(self, data: bytes, placed: asyncio.Future[Any], deadline: float) -> None:
        if placed.done():  # the client gave up before we got to it: do not propose
            return
        core = self.core
        assert core is not None
        try:
            index, term = core.propose(data)
        except (NotLeader, ProposalDropped) as e:
            placed.set_exception(e)
            return
        placed.set_result(self._proposals.add(index, term, deadline))

    def _start_reads(self) -> None:
        core = self.core
        assert core is not None
        batch, self._read_batch = self._read_batch, []
        batch = [f for f in batch if not f.done()]
        if not batch:
            return
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        try:
            core.read_index(ctx)
        except NotLeader as e:
            for f in batch:
                f.set_exception(e)
            return
        self._reads.add(ctx, batch, time.monotonic() + READ_TIMEOUT)

    async def _handle_ready(self, rd: Ready) -> None:
        storage = self.storage
        assert storage is not None
        # 1 + 2: make everything durable, in a thread so sockets keep being read.
        if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
            hs_to_save = None
            if rd.hard_state is not None:
                h = rd.hard_state
                key = (h.term, h.vote, h.commit)
                prev = self._last_saved_hs
                # Term and vote must be durable before any message that depends on them;
                # the commit index need not be (it is re-learned from the leader), so it is
                # saved along with term/vote changes and at shutdown only.
                if prev is None or (h.term, h.vote) != prev[:2]:
                    # forget-vote (planted bug): the term is saved, the vote stays in memory only.
                    vote = None if self.bug == "forget-vote" else h.vote
                    hs_to_save = StoredHardState(h.term, vote, h.commit)
                    self._last_saved_hs = key
            await asyncio.to_thread(self._storage_call, self._persist, rd, hs_to_save)
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        # 3: send (only now).
        if rd.messages:
            self._send_messages(rd)
        # 4: apply.
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        # 5: reads.
        for rs in rd.read_states:
            self._reads.read_state(rs.ctx, rs.index, self.applied)
        for ctx in rd.dropped_reads:
            self._reads.dropped(ctx, None, None)
        if rd.soft_state is not None:
            self._on_soft_state(rd)

    def _persist(self, rd: Ready, hs: StoredHardState | None) -> None:
        """Runs in a worker thread: the only code that touches the WAL besides start/stop."""
        storage = self.storage
        assert storage is not None
        wal = storage.wal
        if rd.snapshot is not None:
            s = rd.snapshot
            storage.snapshots.save(
                StoredSnapshot(s.meta.index, s.meta.term, bytes(s.data), _membership_to_config(s.meta.membership))
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
            wal.append(
                [WalEntry(e.term, e.index, entry_to_wal_command(e), e.fencing_token) for e in rd.entries],
                # lost-unfsynced (planted bug): the bytes go to the kernel, the fsync is left
                # to _background_fsync, and the entries are acknowledged before it runs.
                sync=self.config.fsync and self.bug != "lost-unfsynced",
            )
        if hs is not None:
            storage.hard_state.save(hs)

    def _install_snapshot(self, snap: Snapshot) -> None:
        if snap.data:
            self.kv.restore(bytes(snap.data))
        else:
            self.kv = self._new_state_machine()
        self.applied = snap.meta.index
        self._proposals.snapshot_installed(snap.meta.index)
        self._refresh_addresses()
        self._sync_links(snap.meta.membership)
        self.log.info("snapshot-installed", index=snap.meta.index, term=snap.meta.term, bytes=len(snap.data),
                      members=",".join(sorted(snap.meta.membership.all_voters())))
        self._reads.applied(self.applied)

    def _send_messages(self, rd: Ready) -> None:
        per_peer: dict[str, list[bytes]] = {}
        for m in rd.messages:
            try:
                frame = wire.encode_frame(wire.MsgType.RAFT, 0, message_to_dict(m), group=m.group_id)
            except wire.ProtocolError as e:
                self.log.error("message-too-big", type=m.type, dst=m.dst, error=str(e))
                continue
            per_peer.setdefault(m.dst, []).append(frame)
            if m.type == "install_snapshot" and getattr(m, "offset", 1) == 0:
                self.log.info("snapshot-sent", peer=m.dst, index=m.snap_index, bytes=m.total_size)
        for peer, frames in per_peer.items():
            if not self.transport.send(peer, self._addresses.get(peer), frames):
                self.log.debug("no-address", peer=peer)

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        kv = self.kv
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
                self._sync_links(membership)
                self.applied = e.index
                self._proposals.applied(e.index, e.term, (wire.MsgType.OK, wire.ok_body(e.index)))
                continue
            data = e.data if e.kind is EntryKind.NORMAL else b""
            result = kv.apply(e.index, e.fencing_token, data)
            self.applied = e.index
            if data and _ADDRESS_KEY_BYTES in data:
                addresses_changed = True
            self._proposals.applied(e.index, e.term, to_response(result))
        if addresses_changed:
            self._refresh_addresses()
        # White-box checkers (checkers/whitebox) compare what every node applied at each
        # index: term and CRC-32 of the entry's WAL command bytes, 200 entries a line.
        done = [e for e in entries if e.index > first_applied]
        for at in range(0, len(done), 200):
            part = done[at:at + 200]
            self.log.info("applied", first=part[0].index, last=part[-1].index,
                          entries=",".join(f"{e.term}.{zlib.crc32(entry_to_wal_command(e)):08x}" for e in part))
        self._reads.applied(self.applied)
        self._applied_event.set()

    def _after_advance(self) -> None:
        core = self.core
        assert core is not None
        recovering = core.recovering
        if self._was_recovering and not recovering:
            self._was_recovering = False
            self.log.info("recovered", commit=core.status().commit,
                          detail="caught up past the WAL cut; voting again")

    def _on_soft_state(self, rd: Ready) -> None:
        ss = rd.soft_state
        assert ss is not None
        role = _ROLE_NAMES.get(ss.role, str(ss.role.value))
        prev = self._last_soft
        now = (ss.role.value, ss.leader, ss.term)
        self._last_soft = now
        if prev is None or prev[0] != ss.role.value:
            raw = ss.role.value
            self.log.info(f"became-{raw}", term=ss.term, leader=ss.leader, role=role,
                          commit=self.core.status().commit if self.core else None)
        if prev is None or prev[2] != ss.term:
            self.log.info("term-changed", term=ss.term, previous=prev[2] if prev else None)
        if prev is None or prev[1] != ss.leader:
            self.log.info("leader-changed", term=ss.term, leader=ss.leader,
                          previous=prev[1] if prev else None)
            self._leader_changed.set()
            self._leader_changed = asyncio.Event()

    async def _take_snapshot(self, index: int, why: str) -> int | None:
        """Snapshot the state machine (at applied == index) and compact the log."""
        core = self.core
        storage = self.storage
        assert core is not None and storage is not None
        if index != self.applied:
            return None
        meta = core.snapshot_meta_for(index)
        data = self.kv.snapshot()
        snap = StoredSnapshot(meta.index, meta.term, data, _membership_to_config(meta.membership))
        await asyncio.to_thread(self._storage_call, storage.snapshots.save, snap)
        if core.report_snapshot_taken(index, data) is None:
            return None
        await asyncio.to_thread(self._storage_call, storage.wal.compact_to, index)
        self.log.info("snapshot-created", index=index, term=meta.term, bytes=len(data), reason=why)
        return index

    # ================================================================== membership helpers
    def _refresh_addresses(self) -> None:
        for key, value in self.kv.items():
            if not key.startswith(ADDRESS_KEY_PREFIX) or not isinstance(value, str):
                continue
            node = key[len(ADDRESS_KEY_PREFIX):]
            try:
                addr = parse_address(value)
            except ValueError:
                continue
            if self._addresses.get(node) != addr:
                self._addresses[node] = addr
                self.log.info("peer-address", peer=node, address=value)

    def _sync_links(self, membership: Membership) -> None:
        members = membership.all_nodes()
        # Keep a warm connection to every member, so a new candidate's vote requests (or a
        # new leader's first appends) do not wait for a connect.
        for peer in members:
            if peer != self.config.node_id and peer in self._addresses:
                self.transport.ensure(peer, self._addresses[peer])
        for peer in list(self.transport._links):
            if peer not in members and peer in self._addresses and peer not in self.config.peers:
                asyncio.get_running_loop().create_task(self.transport.drop(peer))

    def _on_unreachable(self, peer: str) -> None:
        if self.phase == "running":
            self._push(("unreachable", peer))

    # ================================================================== server callbacks
    def peer_hello(self, peer: str, address: str) -> None:
        """A peer said where it listens. Used only for peers this node has no address for
        (a joining node learns later members' addresses from the log, which it cannot
        receive before it can answer the leader); replicated addresses always win."""
        if peer == self.config.node_id or peer in self._addresses:
            return
        try:
            self._addresses[peer] = parse_address(address)
        except ValueError:
            return
        self.log.info("peer-address", peer=peer, address=address, source="hello")
        if self.phase == "running":
            self.transport.ensure(peer, self._addresses[peer])

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        if self.phase != "running":
            return  # not ready for Raft traffic yet; the sender retries
        try:
            msg = message_from_dict(frame.body)
        except MessageError as e:
            raise ValueError(str(e)) from None
        if msg.dst != self.config.node_id or msg.group_id != GROUP_ID:
            self.log.debug("misrouted-message", src=msg.src, dst=msg.dst, group=msg.group_id)
            return
        if len(self._inputs) >= MAX_INPUTS:
            return  # overloaded: drop, Raft retransmits
        self._inputs.append(("step", msg))
        self._wake.set()

    def _leader_hint(self) -> dict[str, Any]:
        core = self.core
        leader = core.lead if core is not None else None
        if leader is None or leader == self.config.node_id:
            return {"leader": leader}
        addr = self._addresses.get(leader)
        return {"leader": leader, "leader_address": format_address(addr) if addr else None}

    def _not_leader(self, what: str) -> tuple[wire.MsgType, dict[str, Any]]:
        hint = self._leader_hint()
        where = f"; the leader is {hint['leader']}" if hint.get("leader") else "; no leader is known yet"
        return _err(wire.ErrorCode.NOT_LEADER, f"node {self.config.node_id} is not the leader, {what} not done{where}",
                    **hint)

    async def handle_request(self, frame: wire.Frame) -> tuple[wire.MsgType, dict[str, Any]]:
        t = frame.type
        if t is wire.MsgType.STATUS:
            return wire.MsgType.OK, wire.ok_body(self.status())
        if self.phase != "running" or self.core is None:
            return _err(wire.ErrorCode.RECOVERING,
                        f"node {self.config.node_id} is {self.phase} (WAL replay); retry shortly or use another node")
        if frame.group != GROUP_ID:
            return _err(wire.ErrorCode.BAD_REQUEST, f"this node serves Raft group {GROUP_ID} only, not {frame.group}")
        if self.core.recovering:
            return _err(wire.ErrorCode.RECOVERING,
                        f"node {self.config.node_id} is catching up after a WAL cut; use another node")
        body = frame.body
        if t is wire.MsgType.GET:
            return await self._read(body["key"])
        if t is wire.MsgType.APPEND:
            return await serve_append(self, body["key"], body["value"], ADDRESS_KEY_PREFIX)
        if t is wire.MsgType.TXN:
            return await serve_txn(self, body["ops"], ADDRESS_KEY_PREFIX)
        if t in (wire.MsgType.PUT, wire.MsgType.CAS, wire.MsgType.DELETE, wire.MsgType.FENCED_PUT):
            if body["key"].startswith(ADDRESS_KEY_PREFIX):
                return _err(wire.ErrorCode.BAD_REQUEST, "keys starting with \\x00ukehi/ are reserved for the node")
            return await self._write({"op": t.value, **body})
        if t in (wire.MsgType.ACQUIRE, wire.MsgType.RELEASE):
            # The leader stamps its clock into the command; the state machine never reads one.
            return await self._write({"op": t.value, **body, "now_ms": int(time.time() * 1000)})
        if t is wire.MsgType.ADD_NODE:
            return await self._add_node(body["node"], body["address"])
        if t is wire.MsgType.REMOVE_NODE:
            return await self._remove_node(body["node"])
        if t is wire.MsgType.TRANSFER_LEADER:
            return await self._transfer(body.get("node"))
        if t is wire.MsgType.SNAPSHOT:
            return await self._manual_snapshot()
        return _err(wire.ErrorCode.BAD_REQUEST, f"request type {t.value} is not served by a node")

    async def _write(self, command: dict[str, Any]) -> tuple[wire.MsgType, dict[str, Any]]:
        try:
            data = encode_command(command)
        except CommandError as e:
            return _err(wire.ErrorCode.BAD_REQUEST, str(e))
        return await self._propose_and_wait(data, command["op"])

    async def _propose_and_wait(self, data: bytes, what: str) -> tuple[wire.MsgType, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        placed: asyncio.Future[Any] = loop.create_future()
        deadline = time.monotonic() + PROPOSAL_TIMEOUT
        self._push(("propose", data, placed, deadline))
        try:
            waiter = await placed
        except NotLeader:
            return self._not_leader(what)
        except ProposalDropped as e:
            return _err(wire.ErrorCode.UNAVAILABLE, f"{what} not accepted now: {e}")
        if self.bug == "ack-before-commit":
            return wire.MsgType.OK, wire.ok_body(None)
        return await waiter

    async def _read(self, key: str) -> tuple[wire.MsgType, dict[str, Any]]:
        if self.bug == "stale-read":
            return wire.MsgType.OK, wire.ok_body(self.kv.read(key))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._read_batch.append(fut)
        self._wake.set()
        try:
            ok = await fut
        except NotLeader:
            return self._not_leader("read")
        if not ok:
            return _err(wire.ErrorCode.NOT_LEADER,
                        "the read could not be confirmed (leadership lost or timed out); it had no effect",
                        **self._leader_hint())
        return wire.MsgType.OK, wire.ok_body(self.kv.read(key))

    # ------------------------------------------------------------------ admin
    async def _conf_change(self, changes: list[ConfChange], deadline: float) -> tuple[wire.MsgType, dict[str, Any]] | None:
        """Propose a membership change and wait until it applied and the config left joint."""
        while True:
            placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._push(("conf", changes, placed))
            try:
                waiter = await placed
                break
            except NotLeader:
                return self._not_leader("membership change")
            except ProposalDropped as e:
                # Another change still in flight, or our term's no-op not committed yet.
                if time.monotonic() > deadline:
                    return _err(wire.ErrorCode.UNAVAILABLE, f"membership change not started: {e}")
                await asyncio.sleep(0.05)
            except ValueError as e:
                return _err(wire.ErrorCode.BAD_REQUEST, f"membership change refused: {e}")
        msg_type, body = await waiter
        if msg_type is not wire.MsgType.OK:
            return msg_type, body
        while self.core is not None and self.core.membership.joint:
            if time.monotonic() > deadline:
                return _err(wire.ErrorCode.TIMEOUT, "the change committed but leaving the joint configuration "
                            "has not finished in time; it will complete on its own")
            await asyncio.sleep(0.02)
        return None

    async def _add_node(self, node: str, address: str) -> tuple[wire.MsgType, dict[str, Any]]:
        try:
            parse_address(address)
        except ValueError as e:
            return _err(wire.ErrorCode.BAD_REQUEST, str(e))
        if node == "" or any(c in node for c in "=,: "):
            return _err(wire.ErrorCode.BAD_REQUEST, f"node id {node!r} must not contain '=', ',', ':' or spaces")
        async with self._admin_lock:
            core = self.core
            assert core is not None
            if core.role is not Role.LEADER:
                return self._not_leader("add_node")
            deadline = time.monotonic() + PROPOSAL_TIMEOUT
            # 1. Replicate the address first, so every member can reach the new node.
            answer = await self._write({"op": "put", "key": ADDRESS_KEY_PREFIX + node, "value": address})
            if answer[0] is not wire.MsgType.OK:
                return answer
            m = core.membership
            if node in m.voters:
                return wire.MsgType.OK, wire.ok_body({"members": sorted(m.voters), "already": True})
            # 2. As a learner: it catches up (log or snapshot) without counting toward quorum.
            if node not in m.learners:
                bad = await self._conf_change([ConfChange(ConfChangeType.ADD_LEARNER, node)], deadline)
                if bad is not None:
                    return bad
                self.log.info("learner-added", peer=node, address=address)
            # 3. Wait until it has caught up, then promote it through joint consensus. From
            # here on the cluster has changed (a learner), so no failure is "definite".
            while True:
                st = core.status()
                pr = st.progress.get(node)
                if st.role is not Role.LEADER:
                    return _partial(f"{node} is a learner; leadership was lost before promoting it")
                if pr is not None and pr.match >= st.commit - 1 and pr.match > 0:
                    break
                if time.monotonic() > deadline:
                    return _partial(f"{node} is a learner but did not catch up in time; is it running at {address}?")
                await asyncio.sleep(0.05)
            bad = await self._conf_change([ConfChange(ConfChangeType.ADD_VOTER, node)], deadline)
            if bad is not None:
                return _partial(f"{node} is a learner; promoting it to voter failed: {bad[1].get('message', '')}")
            members = sorted(core.membership.voters)
            self.log.info("node-added", peer=node, address=address, members=",".join(members))
            return wire.MsgType.OK, wire.ok_body({"members": members})

    async def _remove_node(self, node: str) -> tuple[wire.MsgType, dict[str, Any]]:
        async with self._admin_lock:
            core = self.core
            assert core is not None
            if core.role is not Role.LEADER:
                return self._not_leader("remove_node")
            if node not in core.membership.all_nodes():
                return _err(wire.ErrorCode.BAD_REQUEST, f"{node} is not a member; members: "
                            + ",".join(sorted(core.membership.all_nodes())))
            deadline = time.monotonic() + PROPOSAL_TIMEOUT
            bad = await self._conf_change([ConfChange(ConfChangeType.REMOVE, node)], deadline)
            if bad is not None:
                return bad
            members = sorted(core.membership.voters)
            self.log.info("node-removed", peer=node, members=",".join(members))
            return wire.MsgType.OK, wire.ok_body({"members": members})

    async def _transfer(self, target: str | None) -> tuple[wire.MsgType, dict[str, Any]]:
        core = self.core
        assert core is not None
        st = core.status()
        if st.role is not Role.LEADER:
            return self._not_leader("transfer_leader")
        if target is None:
            candidates = [(pr.match, n) for n, pr in st.progress.items() if n in st.membership.voters]
            if not candidates:
                return _err(wire.ErrorCode.UNAVAILABLE, "no other voter to hand leadership to")
            target = max(candidates)[1]
        placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(("transfer", target, placed))
        try:
            await placed
        except NotLeader:
            return self._not_leader("transfer_leader")
        except (ValueError, KeyError) as e:
            return _err(wire.ErrorCode.BAD_REQUEST, f"cannot transfer leadership to {target}: {e}")
        self.log.info("transfer-leader", target=target, term=st.term)
        deadline = time.monotonic() + 3 * self.config.election_timeout_ms[1] / 1000.0
        while time.monotonic() < deadline:
            lead = core.lead
            if lead == target:
                return wire.MsgType.OK, wire.ok_body({"leader": target})
            await asyncio.sleep(0.02)
        # The target may still win a late election: unknown, not failed.
        return _err(wire.ErrorCode.TIMEOUT, f"leadership did not move to {target} in time; leader is {core.lead}")

    async def _manual_snapshot(self) -> tuple[wire.MsgType, dict[str, Any]]:
        core = self.core
        assert core is not None
        # The Ready loop takes it at a quiet point (the core refuses calls mid-Ready).
        placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(("snapshot", placed))
        try:
            result = await placed
        except (StorageError, OSError, ValueError) as e:
            return _err(wire.ErrorCode.INTERNAL, f"snapshot failed: {e}")
        return wire.MsgType.OK, wire.ok_body(result)

    # ================================================================== status
    def status(self) -> dict[str, Any]:
        core = self.core
        base: dict[str, Any] = {
            "id": self.config.node_id,
            "address": format_address(self.config.advertise_address),
            "phase": self.phase,
            "clock": time.time(),
            "pid": os.getpid(),
            "read_mode": self.config.read_mode,
            "corruption_policy": self.config.corruption_policy,
            "corruption": self.corruption,
            "connections": self.server.connection_count,
            "bad_frames": self.server.bad_frames,
            **self.server.counters(),  # TLS, connection pools, forged/forbidden/refused counts
            "pending_proposals": len(self._proposals),
            "unsafe_bug": self.bug,
            # Durability: false only with fsync = false in a --config file (needs
            # UKEHI_I_KNOW_THIS_IS_UNSAFE=1); a power cut can then lose acknowledged writes.
            "fsync": self.config.fsync,
            "bad_peer_messages": self.bad_peer_messages,
            # The timers a fault schedule must stay inside (e.g. a link delay the new
            # leader's check-quorum tolerates).
            "election_timeout_ms": list(self.config.election_timeout_ms),
            "heartbeat_ms": self.config.heartbeat_ms,
        }
        if core is None:
            base.update(role="follower", term=0, leader=None, leader_address=None, commit_index=0,
                        applied_index=self.applied, members=[], outgoing=[], learners=[], joint=False,
                        recovering=True, last_index=0, last_term=0, snapshot_index=0,
                        stale_appends_refused=0)
            return base
        st = core.status()
        hint = self._leader_hint()
        base.update(
            role=_ROLE_NAMES.get(st.role, st.role.value),
            raft_role=st.role.value,
            term=st.term,
            leader=st.leader,
            leader_address=hint.get("leader_address") or (
                format_address(self.config.advertise_address) if st.leader == self.config.node_id else None),
            commit_index=st.commit,
            applied_index=self.applied,
            last_index=st.last_index,
            last_term=st.last_term,
            stale_appends_refused=st.stale_appends_refused,
            snapshot_index=st.snapshot_index,
            members=sorted(st.membership.voters | st.membership.outgoing),
            voters=sorted(st.membership.voters),
            outgoing=sorted(st.membership.outgoing),
            learners=sorted(st.membership.learners),
            joint=st.membership.joint,
            recovering=self.phase != "running" or st.recovering,
            refuse_votes_until=core.refuse_votes_until,
            lead_transferee=st.lead_transferee,
            progress={n: {"match": p.match, "next": p.next, "state": p.state} for n, p in st.progress.items()},
        )
        return base


def raft_config(cfg: NodeConfig, bug: str | None = None) -> RaftConfig:
    """The Raft core's settings for a node: its timers in ticks of ``cfg.tick_ms``, and the
    core flags of a planted bug (ukehi/bugs.py), which win over the rest."""
    et_ticks = max(2, round(cfg.election_timeout_ms[0] / cfg.tick_ms))
    et_max_ticks = max(et_ticks, round(cfg.election_timeout_ms[1] / cfg.tick_ms))
    hb_ticks = max(1, min(et_ticks - 1, round(cfg.heartbeat_ms / cfg.tick_ms)))
    return RaftConfig(**{
        "group_id": GROUP_ID,
        "election_tick": et_ticks,
        "election_tick_max": et_max_ticks,
        "heartbeat_tick": hb_ticks,
        "lease_read": cfg.read_mode == "lease",
        "compaction_threshold": cfg.snapshot_threshold,
        "max_inflight": cfg.max_inflight,
        "max_entries_per_message": cfg.max_entries_per_message,
        **raft_overrides(bug),
    })


def run_node(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    node = UkehiNode(config)
    try:
        return asyncio.run(node.run())
    except KeyboardInterrupt:
        return 0
