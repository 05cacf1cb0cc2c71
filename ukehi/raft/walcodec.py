"""Fold an entry's kind into the WAL command bytes, and back.

The WAL v2 record stores only (term, index, cmd, fencing_token). The command stored is one
kind byte (EntryKind: 0 normal, 1 noop, 2 config) followed by the entry's data.
"""

from __future__ import annotations

from .confchange import decode_membership
from .types import Entry, EntryKind, check_u64

__all__ = ["entry_to_wal_command", "entry_from_wal"]

_KIND_BYTES = {k: bytes([k.value]) for k in EntryKind}


def entry_to_wal_command(entry: Entry) -> bytes:
    return _KIND_BYTES[entry.kind] + entry.data


def entry_from_wal(term: int, index: int, cmd: bytes, token: int) -> Entry:
    """Rebuild an Entry from a WAL record; raises ValueError on an unknown kind byte."""
    term = check_u64("WAL entry term", term)
    index = check_u64("WAL entry index", index)
    token = check_u64("WAL entry fencing_token", token)
    if not isinstance(cmd, (bytes, bytearray, memoryview)):
        raise TypeError(f"WAL entry command must be bytes, got {type(cmd).__name__}")
    if len(cmd) == 0:
        raise ValueError(
            f"WAL entry {index} has an empty command; a Raft entry command starts with a kind byte"
        )
    kind_byte = cmd[0]
    if kind_byte > 2:
        raise ValueError(
            f"WAL entry {index} has unknown kind byte {kind_byte} (0 normal, 1 noop, 2 config)"
        )
    kind = EntryKind(kind_byte)
    data = bytes(cmd[1:])
    if kind is EntryKind.CONFIG:
        decode_membership(data)  # refuse a corrupt configuration now, not mid-replay
    return Entry(term, index, kind, data, token)
