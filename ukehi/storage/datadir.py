"""A node's data directory: one subdirectory per Raft group, opened and replayed in one call.

Layout (one group per directory from the start, since sharding is planned)::

    DATA_DIR/
      group-0/
        wal/        wal-00000001.seg ...
        snap/       snap-<index>-<term>.snap ...
        hardstate
        recovering  present only while catching up after a WAL cut (see RecoveryMarker)

Usage::

    store = DataDir(path).open_group(0, policy)
    rec = store.recovered      # hard state, snapshot, entries after it, corruption report
    if rec.recovering: grant no votes until caught up to rec.recover_until
"""

from __future__ import annotations

import json
from .vfs import os  # the real os, or the simulator's file system (vfs.use)
import re
from dataclasses import dataclass

from .errors import CorruptionRefusedError, StorageError
from .format import WalEntry
from .fsutil import atomic_write, ensure_dir, fsync_dir, read_file
from .hardstate import HardState, HardStateFile
from .policy import Action, CorruptionPolicy, CorruptionReport, Finding, Kind
from .snapshot import DEFAULT_KEEP, Snapshot, SnapshotStore
from .scan import scan_wal
from .wal import DEFAULT_SEGMENT_SIZE, WAL

_GROUP = re.compile(r"^group-(\d+)$")


def group_dir_name(group_id: int) -> str:
    if not isinstance(group_id, int) or isinstance(group_id, bool) or group_id < 0:
        raise ValueError(f"group id must be an int >= 0, got {group_id!r}")
    return f"group-{group_id}"


@dataclass
class Recovered:
    """Everything a Raft group needs to restart, read before it serves any RPC."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[WalEntry]  # WAL entries after the snapshot's index, in order
    report: CorruptionReport

    @property
    def recovering(self) -> bool:
        """The policy cut entries: grant no votes until caught up to ``recover_until``."""
        return self.report.recovering

    @property
    def recover_until(self) -> int | None:
        """While recovering: an upper bound on every index the cut may have dropped (readable
        or not), so on every entry this node may have acknowledged and no longer holds."""
        return self.report.recover_until

    @property
    def last_good_index(self) -> int | None:
        return self.report.last_good_index

    @property
    def highest_index_seen(self) -> int | None:
        return self.report.highest_index_seen


class GroupStorage:
    """The open storage of one Raft group: its WAL, hard-state file and snapshot store."""

    def __init__(self, group_id: int, path: str, wal: WAL, hard_state: HardStateFile,
                 snapshots: SnapshotStore, recovered: Recovered, recovery: "RecoveryMarker") -> None:
        self.group_id = group_id
        self.path = path
        self.wal = wal
        self.hard_state = hard_state
        self.snapshots = snapshots
        self.recovered = recovered
        self._recovery = recovery

    def mark_caught_up(self) -> None:
        """Optional: drop the recovering marker once caught up to ``recover_until``.

        The marker also lapses by itself at the next open when the durable log has reached
        that index; calling this just makes it go sooner.
        """
        self._recovery.clear()

    def close(self) -> None:
        self.wal.close()

    def __enter__(self) -> "GroupStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DataDir:
    """A node's data directory (``create=False`` refuses to make a missing one)."""

    def __init__(self, path: str, create: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"data directory must be a path, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.create = create
        ensure_dir(self.path, "data directory", create)

    def group_path(self, group_id: int) -> str:
        return os.path.join(self.path, group_dir_name(group_id))

    def groups(self) -> list[int]:
        """Ids of the groups that have a directory here."""
        ids = []
        for name in os.listdir(self.path):
            match = _GROUP.match(name)
            if match and os.path.isdir(os.path.join(self.path, name)):
                ids.append(int(match.group(1)))
        return sorted(ids)

    def open_group(self, group_id: int = 0,
                   policy: CorruptionPolicy | str = CorruptionPolicy.TruncateToLastGood, *,
                   segment_size: int = DEFAULT_SEGMENT_SIZE,
                   keep_snapshots: int = DEFAULT_KEEP,
                   unsafe_skip_crc: bool = False) -> GroupStorage:
        """Open (creating if allowed) group ``group_id`` and replay it under ``policy``.

        Raises CorruptionRefusedError (RefuseStart found corruption; nothing changed),
        SnapshotCorruptError, HardStateCorruptError or StorageError, each naming the file.
        """
        policy = CorruptionPolicy.parse(policy)
        path = self.group_path(group_id)
        ensure_dir(path, f"group {group_id} directory", self.create)
        hard_state_file = HardStateFile(os.path.join(path, "hardstate"))
        hard_state = hard_state_file.load()
        snapshots = SnapshotStore(os.path.join(path, "snap"), keep=keep_snapshots, create=self.create)
        snapshot = snapshots.load_latest()
        wal_dir = os.path.join(path, "wal")
        ensure_dir(wal_dir, f"group {group_id} WAL directory", self.create)
        # The index before the WAL's first entry is at most the snapshot's (compaction keeps
        # the segment after it; an installed snapshot empties the WAL); the saved commit index
        # was in the log too. Either bounds what a cut that kept nothing may have dropped.
        base = max(snapshot.index if snapshot is not None else 0, hard_state.commit)
        # unsafe_skip_crc: the no-crc-check planted bug (ukehi/bugs.py); never set otherwise.
        scan = scan_wal(wal_dir, policy, unsafe_skip_crc=unsafe_skip_crc,
                        base_index=base)  # reads only; RefuseStart raises here
        gap = _gap_after_snapshot(scan.entries, snapshot)
        if gap is not None and policy is CorruptionPolicy.RefuseStart:
            _refuse_gap(wal_dir, scan.report, gap)  # before anything on disk changes
        wal, replay = WAL.from_scan(scan, segment_size=segment_size)
        recovery = RecoveryMarker(os.path.join(path, "recovering"))
        try:
            entries = _after_snapshot(wal, replay.entries, replay.report, snapshot, gap)
            report = replay.report
            if report.recovering:
                report.recover_until = max(v for v in (report.recover_until, report.highest_index_seen, base)
                                           if v is not None)
            held = [e.index for e in entries[-1:]] + ([snapshot.index] if snapshot is not None else [])
            recovery.merge(replay.report, durable_last=max(held, default=None))
        except BaseException:
            wal.close()
            raise
        recovered = Recovered(hard_state, snapshot, entries, replay.report)
        return GroupStorage(group_id, path, wal, hard_state_file, snapshots, recovered, recovery)


@dataclass(frozen=True)
class _Gap:
    base: int  # last index the snapshot covers (0 without a snapshot)
    first: int  # first WAL index after it
    detail: str


class RecoveryMarker:
    """``group-N/recovering``: persisted "grant no votes until caught up to index X".

    X is the report's ``recover_until``; the file's key is ``highest_index_seen`` for
    compatibility with data dirs written before the bound counted unreadable bytes.

    Written (atomically, durably) when replay cuts entries, so a node that crashes again
    while catching up is still recovering after the restart. It lapses by itself once the
    durable log (WAL or snapshot) reaches X: entries past the cut can only have come from
    a leader, whose log holds every committed entry, so the node lacks nothing it acked.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _load(self) -> int | None:
        raw = read_file(self.path, "recovery marker")
        try:
            stored = json.loads(raw)["highest_index_seen"]
            if not isinstance(stored, int) or isinstance(stored, bool) or stored < 0:
                raise ValueError(f"highest_index_seen is {stored!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"recovery marker {self.path} is unreadable ({exc}); the node was recovering from a "
                "WAL cut. Remove the file only after the node has caught up from the leader") from None
        return stored

    def merge(self, report: CorruptionReport, durable_last: int | None) -> None:
        """Combine the marker with this replay's ``report``; write, keep or drop the marker.

        ``durable_last`` is the highest index the node holds after replay (last WAL entry,
        or the snapshot's index).
        """
        stored = self._load() if os.path.exists(self.path) else None
        if stored is not None and not report.recovering:
            if durable_last is not None and durable_last >= stored:
                self.clear()  # caught up before the restart
                return
            report.recovering = True
        if stored is not None and (report.recover_until is None or stored > report.recover_until):
            report.recover_until = stored
        # Without a known index there is nothing to wait for, so nothing to persist.
        if report.recovering and report.recover_until is not None and stored != report.recover_until:
            atomic_write(self.path, json.dumps({"highest_index_seen": report.recover_until}).encode())

    def clear(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
            fsync_dir(os.path.dirname(self.path))


def _gap_after_snapshot(entries: list[WalEntry], snapshot: Snapshot | None) -> _Gap | None:
    """A hole between the snapshot (or index 0) and the first WAL entry after it, if any."""
    base = snapshot.index if snapshot is not None else 0
    first = next((e.index for e in entries if e.index > base), None)
    if first is None or first == base + 1:
        return None
    where = f"snapshot index {base}" if snapshot is not None else "index 0 (no snapshot)"
    return _Gap(base, first, f"WAL resumes at index {first} but the log before it ends at {where}: "
                             f"indexes {base + 1}..{first - 1} are missing")


def _refuse_gap(wal_dir: str, report: CorruptionReport, gap: _Gap) -> None:
    report.findings.append(Finding("wal", 0, Kind.INDEX_DISCONTINUITY, Action.REFUSED, gap.first, None, gap.detail))
    report.refused = True
    raise CorruptionRefusedError(
        f"{gap.detail} (in {wal_dir}). Policy refuse-start: nothing on disk was changed; restore the "
        "missing snapshot, or restart with --corruption-policy truncate-to-last-good to drop the WAL and "
        "catch up from the leader",
        report)


def _after_snapshot(wal: WAL, entries: list[WalEntry], report: CorruptionReport,
                    snapshot: Snapshot | None, gap: _Gap | None) -> list[WalEntry]:
    """Entries after the snapshot; a gap between snapshot and WAL is handled per policy."""
    base = snapshot.index if snapshot is not None else 0
    after = [e for e in entries if e.index > base] if entries and entries[0].index <= base else entries
    if gap is None:
        return after
    if report.policy is CorruptionPolicy.TruncateToLastGood:
        wal.reset()  # entries <= the snapshot are covered by it; the rest are cut off
        report.findings.append(Finding("wal", 0, Kind.INDEX_DISCONTINUITY, Action.CUT, gap.first, None,
                                       gap.detail + f"; {len(after)} entries after the gap dropped"))
        report.entries_dropped += len(after)
        report.entries_kept -= len(after)
        report.last_good_index = gap.base if snapshot is not None else None
        report.highest_index_seen = max(report.highest_index_seen or 0, after[-1].index)
        report.recovering = True
        return []
    report.findings.append(Finding("wal", 0, Kind.INDEX_DISCONTINUITY, Action.KEPT, gap.first, None, gap.detail))
    return after


def open_group_storage(data_dir: str, group_id: int = 0,
                       policy: CorruptionPolicy | str = CorruptionPolicy.TruncateToLastGood,
                       **options: int) -> GroupStorage:
    """Shortcut for ``DataDir(data_dir).open_group(group_id, policy, **options)``."""
    return DataDir(data_dir).open_group(group_id, policy, **options)
