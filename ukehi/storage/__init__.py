"""Durable storage for a node: WAL v2 (and the v1 read path), hard state, snapshots.

Start here: :class:`DataDir` opens ``DATA_DIR/group-N/{wal,snap,hardstate}`` and replays
under a :class:`CorruptionPolicy`. The pieces are usable alone: :class:`WAL`,
:func:`scan_wal` (read-only replay), :class:`HardStateFile`, :class:`SnapshotStore`.
"""

from .datadir import DataDir, GroupStorage, Recovered, group_dir_name, open_group_storage
from .errors import (
    CorruptionRefusedError,
    HardStateCorruptError,
    SnapshotCorruptError,
    StorageError,
    WalBrokenError,
)
from .format import MAX_COMMAND_LEN, WalEntry, decode_header, encode_entry, encode_header, segment_name
from .hardstate import HardState, HardStateFile, decode_hard_state, encode_hard_state
from .policy import Action, CorruptionPolicy, CorruptionReport, Finding, Kind
from .scan import WalScan, scan_wal
from .snapshot import Snapshot, SnapshotStore, decode_snapshot, encode_snapshot, verify_snapshot_bytes
from .wal import DEFAULT_SEGMENT_SIZE, WAL, ReplayResult

__all__ = [
    "Action", "CorruptionPolicy", "CorruptionRefusedError", "CorruptionReport", "DEFAULT_SEGMENT_SIZE",
    "DataDir", "Finding", "GroupStorage", "HardState", "HardStateCorruptError", "HardStateFile", "Kind",
    "MAX_COMMAND_LEN", "Recovered", "ReplayResult", "Snapshot", "SnapshotCorruptError", "SnapshotStore",
    "StorageError", "WAL", "WalBrokenError", "WalEntry", "WalScan", "decode_hard_state", "decode_header",
    "decode_snapshot", "encode_entry", "encode_hard_state", "encode_header", "encode_snapshot",
    "group_dir_name", "open_group_storage", "scan_wal", "segment_name", "verify_snapshot_bytes",
]
