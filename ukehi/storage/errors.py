"""Exceptions raised by the storage layer.

Every message names the file (and the byte offset when there is one) and says what
the operator can do next, because these errors reach people at start-up, not code.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class: something about a data directory or a storage file is wrong."""


class CorruptionRefusedError(StorageError):
    """Replay found corruption and the policy is RefuseStart; nothing on disk was changed.

    ``report`` is the :class:`~ukehi.storage.policy.CorruptionReport` built so far;
    ``entries`` and ``locations`` hold what was readable before the corruption (for
    ``ukehi wal dump``).
    """

    def __init__(self, message: str, report: object, entries: list | None = None,
                 locations: list | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.entries = entries if entries is not None else []
        self.locations = locations if locations is not None else []


class WalBrokenError(StorageError):
    """A write or fsync to the WAL failed; the WAL refuses further writes.

    After a failed fsync the kernel may have dropped dirty pages, so retrying could
    silently lose data. The node must exit and restart; replay will cut any torn tail.
    """


class HardStateCorruptError(StorageError):
    """The hard-state file exists but is not a valid, CRC-checked hard-state record."""


class SnapshotCorruptError(StorageError):
    """A snapshot (file or received bytes) fails its format or CRC check."""
