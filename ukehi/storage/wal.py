"""The WAL writer: append with group commit, rotate, truncate a suffix, drop a prefix.

Usage::

    wal, replay = WAL.open(path, CorruptionPolicy.TruncateToLastGood)
    # replay.entries: what the policy kept; replay.report: what was found and done
    wal.append(batch)          # buffered in the OS, not yet durable
    wal.sync()                 # one fsync for everything appended since the last sync
    wal.append(batch, sync=True)   # the same in one call
    wal.truncate_from(i)       # Raft overwrote the log from index i on
    wal.compact_to(i)          # a snapshot covers every index <= i

Durability rules kept here:

- A new segment is created, its header written and fsynced, and the directory fsynced
  before any entry goes into it.
- Open cuts a torn or zero-filled tail on disk before the first append.
- After a failed write or fsync the WAL refuses every further call (WalBrokenError): the
  kernel may have dropped the dirty pages, so a retried fsync could report success for
  data that is gone. The node must restart and replay.
- ``truncate_from`` removes whole segments newest first, fsyncs the directory, then cuts
  the segment that holds the new end and fsyncs it, all before returning. A crash at any
  step leaves a prefix of the old log; new entries are only written after every step is
  durable, so replay never sees old entries after new ones.
- ``compact_to`` removes segments oldest first (a crash leaves a suffix, which replay
  accepts; entries at or below the snapshot index are ignored by the caller).
"""

from __future__ import annotations

import bisect
import functools
from .vfs import os  # the real os, or the simulator's file system (vfs.use)
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from .errors import StorageError, WalBrokenError
from .format import HEADER_SIZE, MAX_SEGMENT_SIZE, WalEntry, encode_entry, encode_header, segment_name
from .fsutil import ensure_dir, fsync_dir, fsync_fd, write_all
from .policy import CorruptionPolicy, CorruptionReport
from .scan import RESYNC_WINDOW, SegmentInfo, WalScan, apply_actions, list_segments, scan_wal

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
MIN_SEGMENT_SIZE = 1024


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: "WAL", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


@dataclass
class ReplayResult:
    """What :meth:`WAL.open` replayed: the kept entries and the corruption report."""

    entries: list[WalEntry]
    report: CorruptionReport

    @property
    def recovering(self) -> bool:
        """True when TruncateToLastGood cut entries: grant no votes until caught up to
        :attr:`recover_until` from a leader."""
        return self.report.recovering

    @property
    def recover_until(self) -> int | None:
        return self.report.recover_until

    @property
    def last_good_index(self) -> int | None:
        return self.report.last_good_index

    @property
    def highest_index_seen(self) -> int | None:
        return self.report.highest_index_seen


class WAL:
    """An open write-ahead log directory. Create with :meth:`open`.

    Public methods are serialized by an internal lock, so a driver may append from one
    worker thread and compact from another.
    """

    def __init__(self, directory: str, segment_size: int) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self._segments: list[SegmentInfo] = []
        self._skipped_ids: list[int] = []  # bad segments AlertAndContinue left on disk
        self._next_id = 1
        self._fd: int | None = None
        self._unsynced = False
        self._broken: str | None = None
        self._last_index: int | None = None
        self._lock = threading.RLock()

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, policy: CorruptionPolicy | str = CorruptionPolicy.TruncateToLastGood, *,
             segment_size: int = DEFAULT_SEGMENT_SIZE, create: bool = True,
             resync_window: int = RESYNC_WINDOW) -> tuple["WAL", ReplayResult]:
        """Replay ``directory`` under ``policy``, apply the policy's cuts on disk, open for append.

        Raises CorruptionRefusedError (RefuseStart, nothing changed) or StorageError.
        """
        if not isinstance(segment_size, int) or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be an int in {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes, "
                             f"got {segment_size!r}")
        policy = CorruptionPolicy.parse(policy)
        ensure_dir(directory, "WAL directory", create)
        scan = scan_wal(directory, policy, resync_window=resync_window)
        return cls.from_scan(scan, segment_size=segment_size)

    @classmethod
    def from_scan(cls, scan: WalScan, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple["WAL", ReplayResult]:
        """Apply a :func:`scan_wal` result's disk actions and open the WAL for append.

        For callers that must inspect the replay before anything on disk changes.
        """
        if not isinstance(segment_size, int) or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be an int in {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes, "
                             f"got {segment_size!r}")
        directory = scan.directory
        apply_actions(directory, scan.actions)
        wal = cls(directory, segment_size)
        wal._segments = scan.segments
        kept_ids = {s.segment_id for s in scan.segments}
        removed = {a.segment_id for a in scan.actions if a.kind == "remove"}
        wal._skipped_ids = [i for i, _ in list_segments(directory) if i not in kept_ids and i not in removed]
        wal._next_id = scan.next_segment_id
        wal._last_index = scan.entries[-1].index if scan.entries else None
        wal._open_tail()
        return wal, ReplayResult(scan.entries, scan.report)

    def _open_tail(self) -> None:
        """Open the newest segment for append, or start a new v2 one when it cannot take entries."""
        tail = self._segments[-1] if self._segments else None
        if (tail is None or tail.version != 2 or not tail.appendable
                or tail.segment_id != self._next_id - 1):
            self._new_segment()
            return
        self._fd = os.open(tail.path, os.O_WRONLY | os.O_APPEND)

    def _new_segment(self) -> None:
        seg_id = self._next_id
        path = os.path.join(self.directory, segment_name(seg_id))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError as exc:
            raise StorageError(f"WAL segment {path} already exists; another process may be using {self.directory}") from exc
        try:
            write_all(fd, encode_header(seg_id, 2))
            fsync_fd(fd)
            fsync_dir(self.directory)
        except OSError as exc:
            os.close(fd)
            self._fail(f"creating segment {path}", exc)
        self._fd = fd
        self._next_id = seg_id + 1
        self._segments.append(SegmentInfo(seg_id, path, 2, HEADER_SIZE))

    # -- state --------------------------------------------------------------------------

    @property
    def first_index(self) -> int | None:
        for seg in self._segments:
            if len(seg.indexes):
                return seg.indexes[0]
        return None

    @property
    def last_index(self) -> int | None:
        return self._last_index

    @property
    def segment_names(self) -> list[str]:
        return [seg.name for seg in self._segments]

    def _check_open(self) -> None:
        if self._broken:
            raise WalBrokenError(f"WAL {self.directory} is unusable after an earlier failure ({self._broken}); "
                                 "restart the node so replay can recover the log")
        if self._fd is None:
            raise StorageError(f"WAL {self.directory} is closed")

    def _fail(self, what: str, exc: OSError) -> None:
        self._broken = f"{what}: {exc}"
        raise WalBrokenError(f"WAL write failed while {what}: {exc}. The WAL refuses further writes; "
                             "free space or fix the disk, then restart the node") from exc

    # -- appending ----------------------------------------------------------------------

    @staticmethod
    def encode(entries: Iterable[WalEntry]) -> list[bytes]:
        """The record bytes of ``entries``, for :meth:`append`'s ``frames``: a caller may
        encode on its own thread (the node's event loop) so that the thread that writes
        and fsyncs holds the GIL as briefly as it can."""
        return [encode_entry(e if isinstance(e, WalEntry) else WalEntry(*e)) for e in entries]

    @_locked
    def append(self, entries: Iterable[WalEntry], *, sync: bool = False,
               frames: list[bytes] | None = None) -> None:
        """Append ``entries`` (consecutive indexes, following :attr:`last_index`).

        The bytes reach the OS in one write per segment; they are durable only after
        :meth:`sync` (or ``sync=True``), which costs one fsync for the whole batch.
        ``frames``: the entries already encoded by :meth:`encode`, one per entry.
        """
        self._check_open()
        batch = list(entries)
        if frames is not None and len(frames) != len(batch):
            raise ValueError(f"WAL append got {len(frames)} encoded frames for {len(batch)} entries")
        if not batch:
            if sync:
                self.sync()
            return
        expected = None if self._last_index is None else self._last_index + 1
        encoded = [] if frames is None else frames
        for entry in batch:
            if not isinstance(entry, WalEntry):
                entry = WalEntry(*entry)
            if expected is not None and entry.index != expected:
                raise ValueError(
                    f"WAL append out of order: got index {entry.index}, expected {expected}; "
                    "call truncate_from(index) before overwriting entries")
            if frames is None:
                encoded.append(encode_entry(entry))
            expected = entry.index + 1
        frames = encoded
        tail = self._segments[-1]
        pending = bytearray()
        try:
            for entry, frame in zip(batch, frames):
                if tail.size + len(pending) + len(frame) > self.segment_size and (len(tail.indexes) or pending):
                    self._write(pending)
                    pending = bytearray()
                    self._rotate()
                    tail = self._segments[-1]
                tail.indexes.append(entry[1])
                tail.offsets.append(tail.size + len(pending))
                pending += frame
            self._write(pending)
        except OSError as exc:
            self._fail("appending entries", exc)
        self._last_index = batch[-1][1]
        if sync:
            self.sync()

    def _write(self, data: bytearray) -> None:
        if data:
            assert self._fd is not None
            write_all(self._fd, data)
            self._segments[-1].size += len(data)
            self._unsynced = True

    def _rotate(self) -> None:
        """Seal the full segment (fsync, close) and start the next one."""
        assert self._fd is not None
        if self._unsynced:
            fsync_fd(self._fd)
            self._unsynced = False
        os.close(self._fd)
        self._fd = None
        self._new_segment()

    @_locked
    def sync(self) -> None:
        """Make every appended entry durable: one fsync, none when nothing is pending."""
        # fsync, not fdatasync, on purpose. fdatasync would be enough for durability (it
        # still writes the metadata needed to read the data back, and every append here
        # grows the file, so the new size is such metadata), but for that same reason it
        # saves nothing on this WAL: a size change commits the file system journal either
        # way (measured on this machine's ext4, 200 appends of 150 bytes: fsync p50 0.38 ms,
        # fdatasync 0.37 ms). It pays off only for writes inside an already-sized file
        # (etcd preallocates 64 MB segments: 0.20 ms here), which would put zero-filled
        # tails in every segment, and open() treats a zero-filled tail as a torn write to
        # cut and report; that format change is left undone. The simulator's file system
        # models fsync only, so one primitive also keeps both worlds alike.
        self._check_open()
        if not self._unsynced:
            return
        try:
            fsync_fd(self._fd)  # type: ignore[arg-type]
        except OSError as exc:
            self._fail("fsync", exc)
        self._unsynced = False

    # -- truncation ---------------------------------------------------------------------

    @_locked
    def truncate_from(self, index: int) -> None:
        """Delete every entry with index >= ``index``, durably, before returning.

        Raft calls this when a leader's entries conflict with ours from ``index`` on.
        Afterwards the next append must start at ``index`` (or anywhere, if the log
        became empty, e.g. before installing a snapshot).
        """
        self._check_open()
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"truncate_from needs an index >= 0, got {index!r}")
        if self._last_index is None or index > self._last_index:
            return
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None
        self._unsynced = False
        try:
            # Step 1: whole segments at or after the cut go, newest first.
            removed = False
            while self._segments and (not len(self._segments[-1].indexes)
                                      or self._segments[-1].indexes[0] >= index):
                seg = self._segments.pop()
                os.remove(seg.path)
                removed = True
            # Bad segments AlertAndContinue left on disk past the new end go too.
            tail_id = self._segments[-1].segment_id if self._segments else -1
            for seg_id in sorted((i for i in self._skipped_ids if i > tail_id), reverse=True):
                os.remove(os.path.join(self.directory, segment_name(seg_id)))
                self._skipped_ids.remove(seg_id)
                removed = True
            # Step 2: make the removals durable before anything else changes.
            if removed:
                fsync_dir(self.directory)
            # Step 3: cut inside the segment that holds the new end, and fsync it.
            if self._segments:
                seg = self._segments[-1]
                pos = bisect.bisect_left(seg.indexes, index)
                if pos < len(seg.indexes):
                    cut = seg.offsets[pos]
                    fd = os.open(seg.path, os.O_RDWR)
                    try:
                        os.ftruncate(fd, cut)
                        fsync_fd(fd)
                    finally:
                        os.close(fd)
                    del seg.indexes[pos:]
                    del seg.offsets[pos:]
                    seg.size = cut
        except OSError as exc:
            self._fail(f"truncating from index {index}", exc)
        # The removals are durable, so their ids may be reused: keep appending to the tail.
        self._next_id = max([s.segment_id for s in self._segments] + self._skipped_ids + [0]) + 1
        self._last_index = None
        for seg in reversed(self._segments):
            if len(seg.indexes):
                self._last_index = seg.indexes[-1]
                break
        self._open_tail()

    @_locked
    def reset(self) -> None:
        """Remove every entry, durably (e.g. before installing a snapshot from a leader).

        Afterwards the next append may start at any index.
        """
        first = self.first_index
        if first is not None:
            self.truncate_from(first)

    @_locked
    def compact_to(self, index: int) -> None:
        """Remove segments whose entries all have index <= ``index`` (covered by a snapshot).

        The newest segment is never removed, so some entries <= ``index`` may remain;
        callers skip them on replay.
        """
        self._check_open()
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"compact_to needs an index >= 0, got {index!r}")
        doomed = []
        for seg in self._segments[:-1]:
            if len(seg.indexes) and seg.indexes[-1] > index:
                break
            doomed.append(seg)
        if not doomed and not self._skipped_ids:
            return
        keep_from = self._segments[len(doomed)].segment_id
        try:
            for seg in doomed:  # oldest first: a crash leaves a suffix
                os.remove(seg.path)
            for seg_id in [i for i in self._skipped_ids if i < keep_from]:
                os.remove(os.path.join(self.directory, segment_name(seg_id)))
                self._skipped_ids.remove(seg_id)
            fsync_dir(self.directory)
        except OSError as exc:
            self._fail(f"compacting to index {index}", exc)
        del self._segments[: len(doomed)]

    @_locked
    def close(self) -> None:
        """Sync pending entries and close. Safe to call twice."""
        if self._fd is None:
            return
        try:
            if not self._broken:
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WAL":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
