"""CorruptionPolicy and the structured report of what replay found and did.

Policies (DESIGN.md, "WAL v2"), applied at start-up replay on a CRC mismatch, an
impossible length, a bad segment header or an index discontinuity:

- ``TruncateToLastGood`` (default): keep the entries before the first bad one, cut the
  WAL there on disk (later segments removed), report what was dropped; the node starts
  recovering and grants no votes until it has caught up past the cut.
- ``RefuseStart``: raise :class:`CorruptionRefusedError` naming segment and offset;
  nothing on disk changes.
- ``AlertAndContinue``: report, skip the bad entry, keep later entries (holes possible).

A torn tail or zero-filled tail at the very end of the LAST segment is the normal result
of a crash, not corruption: every policy cuts it and reports it as informational.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class CorruptionPolicy(enum.Enum):
    TruncateToLastGood = "truncate-to-last-good"
    RefuseStart = "refuse-start"
    AlertAndContinue = "alert-and-continue"

    @classmethod
    def parse(cls, text: "str | CorruptionPolicy") -> "CorruptionPolicy":
        """Accept ``truncate-to-last-good``, ``TruncateToLastGood``, ``truncate_to_last_good`` (any case)."""
        if isinstance(text, CorruptionPolicy):
            return text
        if not isinstance(text, str):
            raise TypeError(f"corruption policy must be a string, got {type(text).__name__}")
        key = text.strip().replace("_", "").replace("-", "").lower()
        for policy in cls:
            if policy.name.lower() == key:
                return policy
        choices = ", ".join(p.value for p in cls)
        raise ValueError(f"unknown corruption policy {text!r}; choose one of: {choices}")

    def __str__(self) -> str:
        return self.value


class Kind:
    """What a finding is (string constants, so reports stay plain JSON)."""

    CRC_MISMATCH = "crc-mismatch"
    IMPOSSIBLE_LENGTH = "impossible-length"
    BAD_HEADER = "bad-header"
    INDEX_DISCONTINUITY = "index-discontinuity"
    EMPTY_SEGMENT = "empty-segment"  # a segment with no entries before a later segment
    TORN_TAIL = "torn-tail"  # informational: partial last entry of the last segment
    ZERO_FILLED_TAIL = "zero-filled-tail"  # informational: zeros after the last entry

    INFORMATIONAL = frozenset({TORN_TAIL, ZERO_FILLED_TAIL})


class Action:
    """What replay did about a finding."""

    CUT = "cut"  # the WAL is (or, for a dry run, would be) cut at this offset on disk
    DROPPED = "dropped"  # readable data after a cut, thrown away
    SKIPPED = "skipped"  # AlertAndContinue stepped over the bad bytes
    KEPT = "kept"  # AlertAndContinue kept an entry after a hole
    REFUSED = "refused"  # RefuseStart: start refused here


@dataclass(frozen=True)
class Finding:
    segment: str  # file name, e.g. wal-00000003.seg
    offset: int  # byte offset in that file where the problem starts
    kind: str  # a Kind constant
    action: str  # an Action constant
    index: int | None = None  # Raft index, when known (unverified if the CRC failed)
    length: int | None = None  # bytes affected (cut, skipped or dropped), when known
    detail: str = ""

    @property
    def informational(self) -> bool:
        return self.kind in Kind.INFORMATIONAL

    def describe(self) -> str:
        where = f"{self.segment} at byte offset {self.offset}"
        idx = f" (index {self.index})" if self.index is not None else ""
        return f"{self.kind} in {where}{idx}: {self.action}; {self.detail}".rstrip("; ")


@dataclass
class CorruptionReport:
    """What replay found, under which policy, and what it did; ``to_dict()`` is JSON-ready."""

    policy: CorruptionPolicy
    findings: list[Finding] = field(default_factory=list)
    segments: int = 0
    entries_kept: int = 0
    entries_skipped: int = 0  # AlertAndContinue: bad entries stepped over
    entries_dropped: int = 0  # TruncateToLastGood: readable entries after the cut
    bytes_cut: int = 0  # bytes removed from disk (cuts, torn/zero tails, removed segments)
    segments_removed: list[str] = field(default_factory=list)
    first_index: int | None = None
    last_good_index: int | None = None  # last index kept
    highest_index_seen: int | None = None  # highest index read, kept or dropped
    # After a TruncateToLastGood cut: grant no votes until caught up to this index. At least
    # highest_index_seen, and it also counts the entries that may have been in bytes the cut
    # dropped without reading them (a WAL damaged at its first entry has nothing readable,
    # yet the node may have acknowledged entries there): see scan._count_readable.
    recover_until: int | None = None
    refused: bool = False
    recovering: bool = False  # TruncateToLastGood cut entries: grant no votes until caught up
    resynced: int = 0  # times an impossible length was followed by a forward scan that found an entry

    @property
    def corruption(self) -> list[Finding]:
        """Findings that are corruption (not the normal torn/zero tail after a crash)."""
        return [f for f in self.findings if not f.informational]

    @property
    def clean(self) -> bool:
        return not self.corruption

    def summary(self) -> str:
        if self.clean:
            extra = f" ({len(self.findings)} crash tail(s) cut)" if self.findings else ""
            return f"WAL clean: {self.entries_kept} entries in {self.segments} segment(s){extra}"
        lines = [
            f"WAL corruption under policy {self.policy.value}: "
            f"{self.entries_kept} kept, {self.entries_skipped} skipped, {self.entries_dropped} dropped"
        ]
        lines += ["  " + f.describe() for f in self.findings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "clean": self.clean,
            "refused": self.refused,
            "recovering": self.recovering,
            "segments": self.segments,
            "entries_kept": self.entries_kept,
            "entries_skipped": self.entries_skipped,
            "entries_dropped": self.entries_dropped,
            "bytes_cut": self.bytes_cut,
            "segments_removed": list(self.segments_removed),
            "first_index": self.first_index,
            "last_good_index": self.last_good_index,
            "highest_index_seen": self.highest_index_seen,
            "recover_until": self.recover_until,
            "resynced": self.resynced,
            "findings": [asdict(f) for f in self.findings],
        }
