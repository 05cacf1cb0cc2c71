"""The in-memory Raft log: a snapshot base plus the entries after it.

`entries[k]` has index `snapshot.index + 1 + k`. Entries above `stable` have not yet been
handed to the caller for persistence. The log also remembers the index of every
configuration entry it holds, because configurations take effect when appended (see the
package docstring) and must be reverted when a suffix of the log is overwritten.
"""

from __future__ import annotations

import bisect
from typing import Sequence

from .confchange import decode_membership
from .errors import InvariantViolation
from .types import Entry, EntryKind, Membership, SnapshotMeta

__all__ = ["RaftLog"]


class RaftLog:
    __slots__ = (
        "snapshot",
        "entries",
        "stable",
        "committed",
        "applied",
        "truncated",
        "_conf_indexes",
        "_conf_values",
    )

    def __init__(self, snapshot: SnapshotMeta, entries: Sequence[Entry]) -> None:
        self.snapshot = snapshot
        self.entries: list[Entry] = []
        self._conf_indexes: list[int] = []
        self._conf_values: list[Membership] = []
        expected = snapshot.index + 1
        prev_term = snapshot.term
        for e in entries:
            if not isinstance(e, Entry):
                raise TypeError(f"log entries must be Entry objects, got {type(e).__name__}")
            if e.index != expected:
                raise ValueError(
                    f"log entries must be contiguous after the snapshot (index {snapshot.index}):"
                    f" expected index {expected}, got {e.index}; repair the WAL (hole or overlap)"
                )
            if e.term < prev_term:
                raise ValueError(
                    f"log entry {e.index} has term {e.term} below the previous term {prev_term}"
                )
            prev_term = e.term
            expected += 1
            self.entries.append(e)
            if e.kind is EntryKind.CONFIG:
                self._note_config(e)
        self.stable = self.last_index()
        self.committed = snapshot.index
        self.applied = snapshot.index
        # Set when a suffix of already-persisted entries was overwritten: the next Ready must
        # tell the caller to truncate its stored log first.
        self.truncated = False

    # -- positions ---------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snapshot.index + 1

    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """The term at `index`, or None if it was compacted away or is beyond the log."""
        off = index - self.snapshot.index
        if off == 0:
            return self.snapshot.term
        if off < 0 or off > len(self.entries):
            return None
        return self.entries[off - 1].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.snapshot.index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    # -- configuration history ---------------------------------------------------------

    def _note_config(self, e: Entry) -> None:
        self._conf_indexes.append(e.index)
        self._conf_values.append(decode_membership(e.data))

    def membership(self) -> Membership:
        """The configuration in force: that of the last config entry in the log."""
        return self._conf_values[-1] if self._conf_values else self.snapshot.membership

    def membership_at(self, index: int) -> Membership:
        k = bisect.bisect_right(self._conf_indexes, index)
        return self._conf_values[k - 1] if k else self.snapshot.membership

    def last_config_index(self) -> int:
        return self._conf_indexes[-1] if self._conf_indexes else self.snapshot.index

    # -- mutation ----------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], unsafe_overwrite_committed: bool = False) -> None:
        """Append `entries`, first dropping any of our entries at or after entries[0].index.

        `unsafe_overwrite_committed` exists only for the planted bug
        `unsafe_accept_lower_term_append`, which must be able to break safety visibly.
        """
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed and not unsafe_overwrite_committed:
            raise InvariantViolation(
                "committed-entry-overwritten",
                f"refusing to overwrite committed entry {after} (term {self.term(after)}) with "
                f"one of term {entries[0].term}; commit index {self.committed}",
                index=after,
            )
        if after > self.last_index() + 1:
            raise InvariantViolation(
                "log-gap",
                f"append at index {after} would leave a gap after the last index {self.last_index()}",
                index=after,
            )
        if after <= self.last_index():
            del self.entries[after - self.snapshot.index - 1 :]
            k = bisect.bisect_left(self._conf_indexes, after)
            del self._conf_indexes[k:]
            del self._conf_values[k:]
            if after <= self.stable:
                self.stable = after - 1
                self.truncated = True
        self.entries.extend(entries)
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                self._note_config(e)

    def commit_to(self, index: int) -> None:
        """Raise the commit index to `index`: never backwards, never past the last entry."""
        if index < self.committed:
            raise InvariantViolation(
                "commit-index-regressed",
                f"commit index would go back from {self.committed} to {index}",
                index=index,
            )
        if index > self.last_index():
            raise InvariantViolation(
                "commit-beyond-log",
                f"commit index {index} would pass the last log index {self.last_index()}",
                index=index,
            )
        self.committed = index

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if all match."""
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (fast back-off, §5.3)."""
        index = min(index, self.last_index())
        if index <= self.snapshot.index:
            return index
        # Terms never decrease along a log, so a binary search finds it in O(log n).
        k = bisect.bisect_right(
            self.entries, term, 0, index - self.snapshot.index, key=lambda e: e.term
        )
        return self.snapshot.index + k

    def slice(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries lo..hi (inclusive), at most max_count and (beyond the first) max_bytes."""
        base = self.snapshot.index + 1
        hi = min(hi, lo + max_count - 1)
        out = self.entries[lo - base : hi - base + 1]
        size = 0
        for k, e in enumerate(out):
            size += len(e.data) + 32
            if size > max_bytes and k > 0:
                return out[:k]
        return out

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.snapshot.index :]

    def committed_to_apply(self, max_count: int) -> list[Entry]:
        lo = self.applied + 1
        hi = min(self.committed, self.applied + max_count)
        if hi < lo:
            return []
        base = self.snapshot.index + 1
        return self.entries[lo - base : hi - base + 1]

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop entries up to meta.index (a snapshot now covers them)."""
        drop = meta.index - self.snapshot.index
        if drop <= 0:
            return
        del self.entries[:drop]
        k = bisect.bisect_right(self._conf_indexes, meta.index)
        del self._conf_indexes[:k]
        del self._conf_values[:k]
        self.snapshot = meta

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.snapshot = meta
        self.entries = []
        self._conf_indexes = []
        self._conf_values = []
        self.committed = meta.index
        self.applied = meta.index
        self.stable = meta.index
        self.truncated = False  # the caller replaces its whole log by the snapshot
