"""Start-up: replay the data dir under the CorruptionPolicy and build the Raft core.

Replay finishes before the node serves any RPC. ``open_storage`` is the storage work (run
off the event loop by the caller); ``build_core`` turns what it recovered into the core's
inputs: the snapshot restores the state machine, WAL entries become core entries up to the
first hole (AlertAndContinue), a TruncateToLastGood cut makes the node refuse votes until a
leader brought it past the cut, and a saved commit index past the log is clamped.
"""

from __future__ import annotations

import random
from typing import Any

from ukehi.config import NodeConfig
from ukehi.raft.config import RaftConfig
from ukehi.raft.core import RaftCore
from ukehi.raft.types import Entry, HardState, Membership, Snapshot, SnapshotMeta
from ukehi.raft.walcodec import entry_from_wal
from ukehi.storage.datadir import DataDir, GroupStorage

from .driver import GROUP_ID, Driver, membership_from_config

__all__ = ["open_storage", "log_corruption_report", "build_core"]


def open_storage(cfg: NodeConfig, bug: str | None) -> GroupStorage:
    """Open (and replay) this node's group directory; raises CorruptionRefusedError,
    StorageError, OSError or ValueError."""
    return DataDir(cfg.data_dir).open_group(GROUP_ID, cfg.corruption_policy, unsafe_skip_crc=bug == "no-crc-check",
                                             segment_size=cfg.wal_segment_size)


def log_corruption_report(log: Any, policy: str, report: Any) -> None:
    for f in report.findings:
        level = "info" if f.informational else "warning"
        log.log(level, "corruption-report", policy=policy, segment=f.segment, offset=f.offset, kind=f.kind,
                action=f.action, index=f.index, length=f.length, detail=f.detail)


def build_core(driver: Driver, storage: GroupStorage, cfg: NodeConfig, raft_cfg: RaftConfig,
               rng: random.Random) -> RaftCore:
    """Restore the driver's state machine from what ``storage`` recovered and build the core.
    Raises ValueError/TypeError when the data dir does not form a log the core accepts."""
    log = driver.log
    bug = driver.bug
    rec = storage.recovered
    report = rec.report
    # --- snapshot -> state machine
    snapshot: Snapshot | None = None
    if rec.snapshot is not None:
        s = rec.snapshot
        snapshot = Snapshot(SnapshotMeta(s.index, s.term, membership_from_config(s.config)), bytes(s.data))
        if s.data:
            driver.kv.restore(bytes(s.data))
            log.info("snapshot-restored", index=s.index, term=s.term, bytes=len(s.data), digest=driver.kv.digest())
        driver.applied = s.index
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
        log.warning(
            "log-hole", missing_from=hole_at, entries_ignored=ignored,
            detail="the WAL has a hole; Raft uses the log up to it and the leader overwrites the rest",
        )
    hs = rec.hard_state
    last_index = entries[-1].index if entries else (snapshot.meta.index if snapshot else 0)
    commit = hs.commit
    refuse_until = 0
    if rec.recovering:
        # Not just the highest index still readable: a WAL damaged at its first entry reads
        # nothing, yet the node may have acknowledged entries there (sim seed 5025 once voted
        # at once with an empty log). recover_until also counts what unreadable bytes held.
        refuse_until = int(rec.recover_until or rec.highest_index_seen or 0)
        driver.was_recovering = True
        log.warning("recovering", refuse_votes_until=refuse_until, last_good_index=rec.last_good_index,
                    highest_index_seen=rec.highest_index_seen,
                    detail="WAL cut by truncate-to-last-good: no votes until caught up from a leader")
    if refuse_until and bug == "truncate-then-vote":
        # Planted bug: forget the cut at once, so this node votes (and may lead) with a
        # log that lost entries a quorum may need it to remember.
        log.warning("unsafe-bug-effect", bug=bug, ignored_refuse_votes_until=refuse_until)
        refuse_until = 0
    if commit > last_index and refuse_until == 0:
        # Committed entries are missing (a hole or a lost tail without a cut report):
        # the leader will resend them; we cannot claim them as committed locally.
        log.warning("commit-clamped", saved_commit=commit, last_index=last_index)
        commit = last_index
    last_term = entries[-1].term if entries else (snapshot.meta.term if snapshot else 0)
    term = max(hs.term, last_term)
    vote = hs.vote if isinstance(hs.vote, str) else None
    if term != hs.term:
        vote = None  # a vote belongs to the saved term, not to a later one
    initial = None
    if snapshot is None and not cfg.join:
        initial = Membership(voters=frozenset(cfg.peers))
    core = RaftCore(
        cfg.node_id, raft_cfg, rng=rng, hard_state=HardState(term, vote, commit),
        entries=entries, snapshot=snapshot, initial_membership=initial,
        refuse_votes_until=refuse_until,
    )
    driver.core = core
    driver.last_saved_hs = (term, vote, commit)
    driver.refresh_addresses()
    driver.sync_links(core.membership)
    log.info(
        "replay-done", entries=len(entries), snapshot_index=snapshot.meta.index if snapshot else 0,
        term=term, vote=vote, commit=commit, last_index=last_index,
        members=",".join(sorted(core.membership.all_voters())),
        corruption="clean" if report.clean else "found", recovering=core.recovering,
    )
    if driver.was_recovering:
        # When the snapshot already covers everything the cut may have lost (its index reaches
        # refuse_votes_until), the node is caught up before it ever runs: say so now, not
        # after its first Ready, which may already be a campaign (the policy checker reads
        # "campaigned while recovering" from that order; sim seed 109 showed it).
        driver.note_if_recovered("the snapshot covers the WAL cut; voting again")
    return core
