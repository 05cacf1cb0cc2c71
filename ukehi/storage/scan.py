"""Read a WAL directory and decide, under a CorruptionPolicy, what replay keeps.

This module only READS. :func:`scan_wal` returns the entries the policy keeps, the
corruption report, and the list of disk changes (cuts, removals) the policy calls for;
:func:`apply_actions` performs those changes. ``ukehi wal dump`` runs the scan alone
(a dry run); :class:`~ukehi.storage.wal.WAL` runs both.

Bounds against hostile bytes: a segment is read whole (its size is the file's size),
no length field is trusted before it is checked against both the bytes left in the
segment and :data:`~ukehi.storage.format.MAX_ENTRY_LEN`, and the forward scan that
looks for the next good entry after an impossible length is bounded by a byte window
and a CRC budget.
"""

from __future__ import annotations

import gc
from .vfs import os  # the real os, or the simulator's file system (vfs.use)
import struct
import zlib
from array import array
from dataclasses import dataclass, field

from .errors import CorruptionRefusedError, StorageError
from .format import (
    CRC,
    ENTRY_HEAD,
    FIXED_LEN,
    HEADER_SIZE,
    LEN,
    MAX_ENTRY_LEN,
    MAX_SEGMENT_FILE,
    TOKEN,
    WalEntry,
    decode_header,
    parse_segment_name,
)
from .fsutil import fsync_dir, fsync_fd, read_file
from .policy import Action, CorruptionPolicy, CorruptionReport, Finding, Kind

_FRAME_HEAD = struct.Struct("<IQQI")  # entry_len, term, index, cmd_len

# How far past a bad entry the forward scan looks for the next well-formed entry, and how
# many bytes it may CRC while doing so. Past these, the rest of the segment counts as bad.
RESYNC_WINDOW = 1024 * 1024
RESYNC_CRC_BUDGET = 64 * 1024 * 1024


@dataclass
class SegmentInfo:
    """A segment as it stands after the policy's disk actions."""

    segment_id: int
    path: str
    version: int
    size: int  # bytes on disk once the actions are applied
    indexes: array = field(default_factory=lambda: array("Q"))  # kept entries, in file order
    offsets: array = field(default_factory=lambda: array("Q"))
    appendable: bool = True  # ends on a clean entry boundary, so new entries may follow

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class DiskAction:
    kind: str  # "truncate" or "remove"
    path: str
    size: int = 0  # new size for "truncate"
    segment_id: int = 0


@dataclass
class WalScan:
    directory: str
    policy: CorruptionPolicy
    segments: list[SegmentInfo]
    entries: list[WalEntry]
    report: CorruptionReport
    actions: list[DiskAction]
    next_segment_id: int  # first id free for a new segment (above every file seen)
    # (segment name, offset, version) per kept entry; only filled when asked for (dump).
    locations: list[tuple[str, int, int]] | None = None


def list_segments(directory: str) -> list[tuple[int, str]]:
    """(segment id, path) for every ``wal-XXXXXXXX.seg`` file in ``directory``, by id."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError as exc:
        raise StorageError(f"WAL directory {directory} does not exist; check the data directory path") from exc
    except NotADirectoryError as exc:
        raise StorageError(f"WAL directory {directory} is a file, not a directory") from exc
    except PermissionError as exc:
        raise StorageError(f"cannot list WAL directory {directory}: permission denied; check its owner and mode") from exc
    found = []
    for name in names:
        seg_id = parse_segment_name(name)
        if seg_id is not None:
            found.append((seg_id, os.path.join(directory, name)))
    found.sort()
    return found


def _entry_at(buf: bytes, p: int, end: int, fixed: int, min_index: int | None) -> int:
    """Return the end offset of a CRC-valid entry starting at ``p``, or -1."""
    if end - p < 4 + fixed:
        return -1
    (elen,) = LEN.unpack_from(buf, p)
    if elen < fixed or elen > MAX_ENTRY_LEN or elen > end - p - 4:
        return -1
    _term, index, cmd_len = ENTRY_HEAD.unpack_from(buf, p + 4)
    if cmd_len != elen - fixed or (min_index is not None and index <= min_index):
        return -1
    if zlib.crc32(memoryview(buf)[p + 4 : p + elen]) != CRC.unpack_from(buf, p + elen)[0]:
        return -1
    return p + 4 + elen


def resync(buf: bytes, start: int, end: int, version: int, min_index: int | None,
           window: int = RESYNC_WINDOW) -> int | None:
    """First offset in ``[start, start+window]`` where a well-formed, CRC-valid entry starts.

    Cheap checks (length range, cmd_len == entry_len - fixed, index above ``min_index``)
    run before any CRC, and the CRC work is capped, so hostile bytes cannot make this slow.
    """
    fixed = FIXED_LEN[version]
    limit = min(end - 4 - fixed, start + window)
    budget = RESYNC_CRC_BUDGET
    unpack_len = LEN.unpack_from
    mv = memoryview(buf)
    p = start
    while p <= limit:
        (elen,) = unpack_len(buf, p)
        if fixed <= elen <= MAX_ENTRY_LEN and elen <= end - p - 4:
            if unpack_len(buf, p + 20)[0] == elen - fixed:
                index = ENTRY_HEAD.unpack_from(buf, p + 4)[1]
                if min_index is None or index > min_index:
                    budget -= elen
                    if budget < 0:
                        return None
                    if zlib.crc32(mv[p + 4 : p + elen]) == CRC.unpack_from(buf, p + elen)[0]:
                        return p
        p += 1
    return None


class _Bound:
    """An upper bound on the indexes of the entries a TruncateToLastGood cut drops, readable or
    not, kept while the scan walks the dropped bytes in file order (see :func:`_count_readable`).

    ``value`` bounds the index of the entry at the walk's position; ``last`` is the highest
    readable index met so far (the last kept one at the cut; None with nothing kept).
    """

    __slots__ = ("value", "last")

    def __init__(self, value: int, last: int | None) -> None:
        self.value = value
        self.last = last


def _count_readable(buf: bytes, pos: int, end: int, version: int,
                    bound: _Bound | None = None) -> tuple[int, int | None]:
    """(entries, highest index) readable from ``pos`` on, resyncing over bad bytes.

    With ``bound``, also raise it over these bytes. Indexes go up by one per entry in file
    order (a suffix truncation cuts the file) and no entry is shorter than ``4 +
    FIXED_LEN[version]`` bytes, so a run of ``g`` unreadable bytes held at most ``g // that``
    entries. A readable entry that goes past every readable index before it is the one written
    there, or a copy of a later one (a copy's source reads, and the walk met any earlier
    source first): the bound at that point is its index, whatever the bytes before it held.
    One that does not go past them is not the entry written there (a copied chunk): its bytes
    count as unreadable too. A node that
    cut its WAL refuses votes until caught up to this bound: the entries it acknowledged may
    lie in bytes that no longer read as entries (a WAL damaged at its first entry reads as
    nothing at all).
    """
    fixed = FIXED_LEN[version]
    smallest = 4 + fixed
    count, highest = 0, None
    while pos < end:
        nxt = _entry_at(buf, pos, end, fixed, None)
        if nxt < 0:
            found = resync(buf, pos + 1, end, version, None)
            if bound is not None:
                bound.value += ((end if found is None else found) - pos) // smallest
            if found is None:
                break
            pos = found
            continue
        index = ENTRY_HEAD.unpack_from(buf, pos + 4)[1]
        count += 1
        highest = index if highest is None else max(highest, index)
        if bound is not None:
            if bound.last is None or index > bound.last:
                bound.value = index
                bound.last = index
            else:
                bound.value += (nxt - pos) // smallest
        pos = nxt
    return count, highest


# The smallest entry of any version (v1, empty command): how many entries an unreadable
# segment of unknown version may have held.
_SMALLEST_ENTRY = 4 + min(FIXED_LEN.values())


def _span(lo: int, hi: int) -> str:
    return f"index {lo} is" if lo == hi else f"indexes {lo}..{hi} are"


class _Refuse(Exception):
    pass


class _Scanner:
    """One pass over the segments. Policy decisions happen where a problem is found:
    :meth:`_bad` (bytes that are not an entry), :meth:`_discontinuity` (an index that does
    not follow), :meth:`_bad_header` and :meth:`_empty_segment` (whole segments)."""

    def __init__(self, directory: str, policy: CorruptionPolicy, with_locations: bool,
                 resync_window: int) -> None:
        self.directory = directory
        self.policy = policy
        self.window = resync_window
        self.report = CorruptionReport(policy=policy)
        self.entries: list[WalEntry] = []
        self.locations: list[tuple[str, int, int]] | None = [] if with_locations else None
        self.segments: list[SegmentInfo] = []
        self.actions: list[DiskAction] = []
        self.prev: int | None = None  # last kept index
        self.hole = False  # bad bytes were skipped since `prev`, so a jump in index is explained
        self.cut = False  # TruncateToLastGood has cut; everything later is dropped
        self.alert = policy is CorruptionPolicy.AlertAndContinue
        # The no-crc-check planted bug (ukehi/bugs.py): frames whose lengths look right are
        # taken as they are, so damaged bytes replay as entries. Never set otherwise.
        self.skip_crc = False
        self.highest: int | None = None
        self.files: list[tuple[int, str]] = []
        # Upper bound on the index of every entry the cut dropped, readable or not (see
        # _count_readable); None until TruncateToLastGood cuts. ``base`` bounds the index
        # before the first WAL entry (the caller's snapshot index, say; 0 without one).
        self.base = 0
        self.bound: _Bound | None = None

    # -- findings -----------------------------------------------------------------------

    def _note_index(self, index: int) -> None:
        if self.highest is None or index > self.highest:
            self.highest = index

    def _refuse(self, name: str, offset: int, kind: str, index: int | None, detail: str) -> None:
        self.report.findings.append(Finding(name, offset, kind, Action.REFUSED, index, None, detail))
        self.report.refused = True
        raise _Refuse()

    def _start_bound(self) -> _Bound:
        """The bound at the cut: the last kept index, or the base when nothing was kept."""
        if self.bound is None:
            self.bound = _Bound(self.prev if self.prev is not None else self.base, self.prev)
        return self.bound

    def _cut(self, seg: SegmentInfo, buf: bytes, offset: int, kind: str, index: int | None,
             detail: str) -> None:
        """TruncateToLastGood: cut this segment at ``offset`` (>= HEADER_SIZE, an entry's
        start); later segments get removed by :meth:`_drop_segment`."""
        end = len(buf)
        dropped, high = _count_readable(buf, offset, end, seg.version, self._start_bound())
        self.report.entries_dropped += dropped
        if high is not None:
            self._note_index(high)
        if offset == HEADER_SIZE:
            # No entry left: remove the file rather than leave an empty segment, which
            # would look like lost data if a newer segment ever followed it.
            self.actions.append(DiskAction("remove", seg.path, 0, seg.segment_id))
            self.report.segments_removed.append(seg.name)
            self.report.bytes_cut += end
        else:
            self.actions.append(DiskAction("truncate", seg.path, offset, seg.segment_id))
            self.report.bytes_cut += end - offset
        extra = f"; {dropped} readable entries after it dropped" if dropped else ""
        self.report.findings.append(Finding(seg.name, offset, kind, Action.CUT, index, end - offset,
                                            detail + extra))
        seg.size = offset
        self.cut = True

    # -- segments -----------------------------------------------------------------------

    def run(self) -> None:
        files = self.files = list_segments(self.directory)
        self.report.segments = len(files)
        for i, (seg_id, path) in enumerate(files):
            last = i == len(files) - 1
            name = os.path.basename(path)
            size = os.path.getsize(path)
            if size > MAX_SEGMENT_FILE:
                # No writer makes a segment this big; reading it would allocate its size.
                if self.cut:
                    self._drop_segment(seg_id, path, b"", size)
                else:
                    self._bad_header(seg_id, path, name, size,
                                     f"segment file is {size} bytes, more than any writer makes "
                                     f"({MAX_SEGMENT_FILE}); not read")
                continue
            buf = read_file(path, "WAL segment")
            if self.cut:
                self._drop_segment(seg_id, path, buf, len(buf))
                continue
            try:
                version, header_id = decode_header(buf)
                if header_id != seg_id:
                    raise ValueError(f"header says segment id {header_id}, the file name says {seg_id}")
            except ValueError as exc:
                if last and (len(buf) < HEADER_SIZE or buf.count(0) == len(buf)):
                    # Crash while creating the segment: the header never made it to disk.
                    self.actions.append(DiskAction("remove", path, 0, seg_id))
                    self.report.bytes_cut += len(buf)
                    self.report.segments_removed.append(name)
                    self.report.findings.append(Finding(
                        name, 0, Kind.TORN_TAIL, Action.CUT, None, len(buf),
                        "segment header incomplete (crash while creating the segment); segment removed"))
                    continue
                self._bad_header(seg_id, path, name, len(buf), str(exc))
                continue
            seg = SegmentInfo(seg_id, path, version, len(buf))
            self.segments.append(seg)
            if len(buf) == HEADER_SIZE and not last:
                self._empty_segment(seg)
                continue
            self._scan_entries(seg, buf, last)

    def _empty_segment(self, seg: SegmentInfo) -> None:
        """A segment with a header and nothing else, followed by another segment.

        The writer never leaves one (it rotates only after an entry, and a cut that
        empties a segment removes it), so its entries were lost, e.g. the file was
        truncated. Without this check the log would silently start at the next segment.
        """
        detail = "segment holds no entries but later segments exist: its entries were lost"
        if self.policy is CorruptionPolicy.RefuseStart:
            self._refuse(seg.name, HEADER_SIZE, Kind.EMPTY_SEGMENT, None, detail)
        if self.policy is CorruptionPolicy.TruncateToLastGood:
            self._cut(seg, b"\0" * HEADER_SIZE, HEADER_SIZE, Kind.EMPTY_SEGMENT, None, detail)
            return
        self.report.findings.append(Finding(seg.name, HEADER_SIZE, Kind.EMPTY_SEGMENT, Action.SKIPPED,
                                            None, 0, detail + "; continuing with the next segment"))
        self.hole = True

    def _drop_segment(self, seg_id: int, path: str, buf: bytes, size: int) -> None:
        self.actions.append(DiskAction("remove", path, 0, seg_id))
        self.report.bytes_cut += size
        self.report.segments_removed.append(os.path.basename(path))
        try:
            version, _ = decode_header(buf)
        except ValueError:
            self._bound_unreadable(size)
            return
        dropped, high = _count_readable(buf, HEADER_SIZE, len(buf), version, self._start_bound())
        self.report.entries_dropped += dropped
        if high is not None:
            self._note_index(high)

    def _bound_unreadable(self, size: int) -> None:
        """A dropped segment none of whose bytes can be read (its version unknown too)."""
        bound = self._start_bound()
        if size <= MAX_SEGMENT_FILE:
            # A file larger than any writer makes was not written by this WAL (run() does not
            # read it): it holds no entry this node acknowledged.
            bound.value += max(0, size - HEADER_SIZE) // _SMALLEST_ENTRY

    def _bad_header(self, seg_id: int, path: str, name: str, size: int, why: str) -> None:
        detail = f"{why}; the whole segment is unreadable"
        if self.policy is CorruptionPolicy.RefuseStart:
            self._refuse(name, 0, Kind.BAD_HEADER, None, detail)
        if self.policy is CorruptionPolicy.TruncateToLastGood:
            self._bound_unreadable(size)
            self.report.findings.append(Finding(name, 0, Kind.BAD_HEADER, Action.CUT, None, size,
                                                detail + "; segment removed with everything after it"))
            self.actions.append(DiskAction("remove", path, 0, seg_id))
            self.report.bytes_cut += size
            self.report.segments_removed.append(name)
            self.cut = True
            return
        self.report.findings.append(Finding(name, 0, Kind.BAD_HEADER, Action.SKIPPED, None, size,
                                            detail + "; segment skipped (left on disk)"))
        self.report.entries_skipped += 1
        self.hole = True

    def _scan_entries(self, seg: SegmentInfo, buf: bytes, last: bool) -> None:
        # The hot loop: locals only, one CRC and three struct unpacks per entry.
        version = seg.version
        fixed = FIXED_LEN[version]
        v2 = version == 2
        end = len(buf)
        mv = memoryview(buf)
        crc32 = zlib.crc32
        skip_crc = self.skip_crc
        unpack_len = LEN.unpack_from
        unpack_head = ENTRY_HEAD.unpack_from
        unpack_token = TOKEN.unpack_from
        append = self.entries.append
        add_index = seg.indexes.append
        add_offset = seg.offsets.append
        locations = self.locations
        name = seg.name
        unpack_frame = _FRAME_HEAD.unpack_from
        min_frame = 4 + fixed
        pos = HEADER_SIZE
        expect = -1 if self.prev is None else self.prev + 1
        while pos < end:
            # Fast path: a well-formed entry that follows the previous one. Anything else
            # (first entry, holes, damage) takes the careful path below.
            if end - pos >= min_frame:
                elen, term, index, cmd_len = unpack_frame(buf, pos)
                nxt = pos + 4 + elen
                if (index == expect and cmd_len == elen - fixed and nxt <= end
                        and (skip_crc or crc32(mv[pos + 4 : pos + elen]) == unpack_len(buf, pos + elen)[0])):
                    cstart = pos + 24
                    cend = cstart + cmd_len
                    append(WalEntry(term, index, buf[cstart:cend], unpack_token(buf, cend)[0] if v2 else 0))
                    add_index(index)
                    add_offset(pos)
                    if locations is not None:
                        locations.append((name, pos, version))
                    expect = index + 1
                    pos = nxt
                    continue
            if expect >= 0 and self.prev != expect - 1:
                self.prev = expect - 1
                self.hole = False
            remaining = end - pos
            if remaining >= 4:
                (elen,) = unpack_len(buf, pos)
                if fixed <= elen <= MAX_ENTRY_LEN and elen <= remaining - 4:
                    if skip_crc or crc32(mv[pos + 4 : pos + elen]) == unpack_len(buf, pos + elen)[0]:
                        term, index, cmd_len = unpack_head(buf, pos + 4)
                        if cmd_len == elen - fixed:
                            prev = self.prev
                            if prev is None or index == prev + 1 or (
                                    index > prev and (self.hole or self.alert)):
                                cstart = pos + 24
                                cend = cstart + cmd_len
                                token = unpack_token(buf, cend)[0] if v2 else 0
                                append(WalEntry(term, index, buf[cstart:cend], token))
                                add_index(index)
                                add_offset(pos)
                                if locations is not None:
                                    locations.append((name, pos, version))
                                if prev is not None and index != prev + 1:
                                    why = "after skipped bytes" if self.hole else "(a segment may be missing)"
                                    self.report.findings.append(Finding(
                                        name, pos, Kind.INDEX_DISCONTINUITY, Action.KEPT, index, None,
                                        f"hole: {_span(prev + 1, index - 1)} missing {why}"))
                                self.prev = index
                                self.hole = False
                                expect = index + 1
                                pos += 4 + elen
                                continue
                            if not self._discontinuity(seg, buf, pos, index, pos + 4 + elen):
                                return
                            pos += 4 + elen
                            continue
                        kind, claimed = Kind.IMPOSSIBLE_LENGTH, index
                        detail = f"cmd_len {cmd_len} disagrees with entry_len {elen} (CRC is valid: a writer bug)"
                    else:
                        kind = Kind.CRC_MISMATCH
                        claimed = unpack_head(buf, pos + 4)[1] if elen >= 20 else None
                        stored = unpack_len(buf, pos + elen)[0]
                        actual = crc32(mv[pos + 4 : pos + elen])
                        detail = (f"stored CRC 0x{stored:08X}, computed 0x{actual:08X} over {elen - 4} bytes"
                                  " (index field unverified)")
                else:
                    kind, claimed = Kind.IMPOSSIBLE_LENGTH, None
                    detail = (f"entry_len {elen} is impossible: must be {fixed}..{MAX_ENTRY_LEN} "
                              f"and at most the {remaining - 4} bytes left in the segment")
            else:
                elen = -1
                kind, claimed = Kind.IMPOSSIBLE_LENGTH, None
                detail = f"{remaining} stray bytes, too few for an entry length"
            pos = self._bad(seg, buf, pos, last, kind, claimed, elen, detail)
            if pos < 0:
                return
        if expect >= 0 and self.prev != expect - 1:
            self.prev = expect - 1
            self.hole = False

    def _discontinuity(self, seg: SegmentInfo, buf: bytes, pos: int, index: int, nxt: int) -> bool:
        """A CRC-valid entry whose index does not follow the previous one. False: stop this segment."""
        detail = f"index {index} follows index {self.prev}"
        if self.policy is CorruptionPolicy.RefuseStart:
            self._refuse(seg.name, pos, Kind.INDEX_DISCONTINUITY, index, detail)
        if self.policy is CorruptionPolicy.TruncateToLastGood:
            self._cut(seg, buf, pos, Kind.INDEX_DISCONTINUITY, index, detail)
            return False
        # AlertAndContinue: a step back would replay a mix of two histories; skip that entry.
        self.report.findings.append(Finding(seg.name, pos, Kind.INDEX_DISCONTINUITY, Action.SKIPPED, index,
                                            nxt - pos, detail + "; entry skipped (index does not increase)"))
        self.report.entries_skipped += 1
        self._note_index(index)
        return True

    def _bad(self, seg: SegmentInfo, buf: bytes, pos: int, last: bool, kind: str,
             claimed: int | None, elen: int, detail: str) -> int:
        """Handle bad bytes at ``pos``; return where to continue, or -1 to stop this segment."""
        end = len(buf)
        name = seg.name
        remaining = end - pos
        version = seg.version
        if last and buf.count(0, pos, end) == remaining:
            self._tail(seg, pos, Kind.ZERO_FILLED_TAIL, f"{remaining} zero bytes after the last entry")
            return -1
        resume = None
        if FIXED_LEN[version] <= elen <= MAX_ENTRY_LEN and pos + 4 + elen <= end:
            # The length looked plausible: try the next frame by length first.
            nxt = pos + 4 + elen
            if nxt == end or _entry_at(buf, nxt, end, FIXED_LEN[version], self.prev) >= 0:
                resume = nxt
        scanned = False
        if resume is None:
            resume = resync(buf, pos + 1, end, version, self.prev, self.window)
            scanned = True
        if last and resume is None:
            crc_zero = elen >= 0 and pos + elen <= end and buf.count(0, pos + elen, end) == end - pos - elen
            if kind == Kind.IMPOSSIBLE_LENGTH and (elen < 0 or elen > remaining - 4):
                self._tail(seg, pos, Kind.TORN_TAIL,
                           f"partial entry: {remaining} bytes left, entry_len field says {elen}"
                           if elen >= 0 else f"partial entry length field ({remaining} bytes)")
                return -1
            if kind == Kind.CRC_MISMATCH and crc_zero:
                self._tail(seg, pos, Kind.TORN_TAIL, "partially written entry: its CRC and everything after are zero")
                return -1
        if remaining and buf.count(0, pos, end) == remaining:
            detail = f"{remaining} zero bytes from here to the end of the segment"
        if self.policy is CorruptionPolicy.RefuseStart:
            self._refuse(name, pos, kind, claimed, detail)
        if self.policy is CorruptionPolicy.TruncateToLastGood:
            self._cut(seg, buf, pos, kind, claimed, detail)
            return -1
        # AlertAndContinue
        if resume is None:
            how = f"no well-formed entry in the next {min(self.window, remaining)} bytes; rest of segment skipped"
            resume_at = end
            seg.appendable = False
        elif scanned:
            how = f"resynchronised by scanning forward: next good entry at offset {resume}"
            self.report.resynced += 1
            resume_at = resume
        else:
            how = f"skipped by frame length to offset {resume}"
            resume_at = resume
        self.report.findings.append(Finding(name, pos, kind, Action.SKIPPED, claimed, resume_at - pos,
                                            f"{detail}; {how}"))
        self.report.entries_skipped += 1
        self.hole = True
        return resume_at if resume_at < end else -1

    def _tail(self, seg: SegmentInfo, pos: int, kind: str, detail: str) -> None:
        """A crash tail at the end of the last segment: cut it under every policy."""
        cut = seg.size - pos
        if pos == HEADER_SIZE and not len(seg.indexes):
            # Nothing left in it: remove the file (the writer starts a fresh segment),
            # so no empty segment can end up before a newer one.
            self.actions.append(DiskAction("remove", seg.path, 0, seg.segment_id))
            self.report.segments_removed.append(seg.name)
            detail += "; segment removed"
        else:
            self.actions.append(DiskAction("truncate", seg.path, pos, seg.segment_id))
        self.report.bytes_cut += cut
        self.report.findings.append(Finding(seg.name, pos, kind, Action.CUT, None, cut,
                                            detail + "; normal after a crash, cut"))
        seg.size = pos


def scan_wal(directory: str, policy: CorruptionPolicy = CorruptionPolicy.TruncateToLastGood, *,
             with_locations: bool = False, resync_window: int = RESYNC_WINDOW,
             unsafe_skip_crc: bool = False, base_index: int = 0) -> WalScan:
    """Read every segment in ``directory`` and apply ``policy`` in memory. Never writes.

    ``base_index`` bounds the index before the WAL's first entry (the snapshot's index; 0
    without one): with nothing kept before a TruncateToLastGood cut, the report's
    ``recover_until`` counts the entries the cut may have dropped from there.

    ``unsafe_skip_crc`` is the no-crc-check planted bug (ukehi/bugs.py), for harness tests only.

    Raises :class:`CorruptionRefusedError` under RefuseStart when corruption is found
    (its ``report`` attribute holds the report), :class:`StorageError` when the directory
    cannot be read.
    """
    policy = CorruptionPolicy.parse(policy)
    scanner = _Scanner(directory, policy, with_locations, resync_window)
    scanner.skip_crc = unsafe_skip_crc
    scanner.base = base_index
    # Replay creates millions of small, acyclic objects; the cyclic GC would otherwise
    # rescan them over and over (a ~40% slowdown measured by bench/wal.py).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        scanner.run()
    except _Refuse:
        report = scanner.report
        report.entries_kept = len(scanner.entries)
        first = report.findings[-1]
        error = CorruptionRefusedError(
            f"WAL corruption in {os.path.join(directory, first.segment)} at byte offset {first.offset}: "
            f"{first.kind}: {first.detail}. Policy refuse-start: nothing on disk was changed. "
            f"Inspect it with `ukehi wal dump {directory}`; to start anyway, restart with "
            f"--corruption-policy truncate-to-last-good (cuts the WAL here; the node then catches up "
            f"from the leader) or --corruption-policy alert-and-continue (skips the bad entry).",
            report,
            scanner.entries,  # what was readable before the refusal, for `ukehi wal dump`
            scanner.locations or [],
        )
        raise error from None
    finally:
        if gc_was_enabled:
            gc.enable()
    report = scanner.report
    entries = scanner.entries
    report.entries_kept = len(entries)
    if entries:
        report.first_index = entries[0].index
        report.last_good_index = entries[-1].index  # kept indexes strictly increase
        scanner._note_index(entries[-1].index)
    if any(f.action == Action.CUT and not f.informational for f in report.findings):
        report.recovering = True
        if report.last_good_index is not None:
            # The bad entry itself was at least one past the last good index.
            scanner._note_index(report.last_good_index + 1)
    report.highest_index_seen = scanner.highest
    if report.recovering:
        bound = scanner.bound.value if scanner.bound is not None else None
        report.recover_until = max(v for v in (bound, scanner.highest, base_index) if v is not None)
    removed = {a.path for a in scanner.actions if a.kind == "remove"}
    segments = [s for s in scanner.segments if s.path not in removed]
    # Removed ids may be reused: apply_actions makes the removals durable before any write.
    seen_ids = [seg_id for seg_id, path in scanner.files if path not in removed]
    next_id = (max(seen_ids) + 1) if seen_ids else 1
    return WalScan(directory, policy, segments, entries, report, scanner.actions, next_id, scanner.locations)


def apply_actions(directory: str, actions: list[DiskAction]) -> None:
    """Perform a scan's disk changes, in a crash-safe order.

    Removals go first, newest segment first, then one directory fsync; then each cut
    (ftruncate + fsync). A crash at any point leaves a prefix of the old log on disk,
    never old entries after new ones; replaying it again reaches the same result.
    """
    removals = sorted((a for a in actions if a.kind == "remove"), key=lambda a: a.segment_id, reverse=True)
    for action in removals:
        try:
            os.remove(action.path)
        except FileNotFoundError:
            pass
    if removals:
        fsync_dir(directory)
    for action in actions:
        if action.kind != "truncate":
            continue
        fd = os.open(action.path, os.O_RDWR)
        try:
            os.ftruncate(fd, action.size)
            fsync_fd(fd)
        finally:
            os.close(fd)


__all__ = ["SegmentInfo", "DiskAction", "WalScan", "scan_wal", "apply_actions", "list_segments",
           "resync", "RESYNC_WINDOW"]
