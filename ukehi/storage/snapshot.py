"""Snapshot files: CRC-checked on load and on receipt, written atomically, newest N kept.

File ``snap-{index:016x}-{term:016x}.snap`` (little-endian), CRC-32 over every byte before it::

    magic b"UKSN" · version u16 (1) · index u64 · term u64 ·
    config kind u8 (0 none, 1 opaque bytes, 2 msgpack map) · config_len u32 · config ·
    data_len u64 · data · crc32 u32

``index``/``term`` are those of the last entry the snapshot covers; ``config`` is the
membership configuration at that index.
"""

from __future__ import annotations

from .vfs import os  # the real os, or the simulator's file system (vfs.use)
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import SnapshotCorruptError
from .fsutil import atomic_write, ensure_dir, fsync_dir, read_file

MAGIC = b"UKSN"
VERSION = 1
_HEAD = struct.Struct("<4sHQQBI")
_U64 = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_U64_MAX = (1 << 64) - 1
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
DEFAULT_KEEP = 3


@dataclass(frozen=True)
class Snapshot:
    index: int  # last log index the snapshot covers
    term: int  # term of that entry
    data: bytes  # the state machine's serialized state
    config: dict[str, Any] | bytes | None = None  # membership configuration at ``index``

    def __post_init__(self) -> None:
        for name in ("index", "term"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64_MAX:
                raise ValueError(f"Snapshot.{name} must be an int in 0..2**64-1, got {value!r}")
        if not isinstance(self.data, (bytes, bytearray)):
            raise TypeError(f"Snapshot.data must be bytes, got {type(self.data).__name__}")
        if self.config is not None and not isinstance(self.config, (dict, bytes, bytearray)):
            raise TypeError(f"Snapshot.config must be a dict, bytes or None, got {type(self.config).__name__}")


def encode_snapshot(snap: Snapshot) -> bytes:
    """The snapshot's file bytes (also what a leader sends in InstallSnapshot chunks)."""
    if snap.config is None:
        kind, config = 0, b""
    elif isinstance(snap.config, (bytes, bytearray)):
        kind, config = 1, bytes(snap.config)
    else:
        kind, config = 2, msgpack.packb(snap.config, use_bin_type=True)
    body = b"".join((
        _HEAD.pack(MAGIC, VERSION, snap.index, snap.term, kind, len(config)), config,
        _U64.pack(len(snap.data)), bytes(snap.data),
    ))
    return body + _CRC.pack(zlib.crc32(body))


def decode_snapshot(data: bytes, source: str = "received snapshot") -> Snapshot:
    """Verify (CRC, lengths, magic) and decode snapshot bytes, from a file or the network.

    Raises SnapshotCorruptError naming ``source`` and what is wrong. Call it on the
    reassembled bytes of an InstallSnapshot transfer before installing anything.
    """
    def bad(why: str) -> SnapshotCorruptError:
        return SnapshotCorruptError(f"{source} is not a valid snapshot: {why}")

    size = len(data)
    if size < _HEAD.size + _U64.size + _CRC.size:
        raise bad(f"{size} bytes, too short for a snapshot")
    magic, version, index, term, kind, config_len = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise bad(f"magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise bad(f"version {version}, this build reads version {VERSION}")
    (stored,) = _CRC.unpack_from(data, size - 4)
    actual = zlib.crc32(memoryview(data)[: size - 4])
    if actual != stored:
        raise bad(f"CRC mismatch (stored 0x{stored:08X}, computed 0x{actual:08X}): the bytes are damaged")
    pos = _HEAD.size
    if config_len > size - pos - _U64.size - _CRC.size:
        raise bad(f"config length {config_len} exceeds the {size} bytes available")
    config_raw = bytes(data[pos : pos + config_len])
    pos += config_len
    (data_len,) = _U64.unpack_from(data, pos)
    pos += _U64.size
    if data_len != size - pos - _CRC.size:
        raise bad(f"data length {data_len} does not match the {size - pos - _CRC.size} bytes present")
    config: dict[str, Any] | bytes | None
    if kind == 0 and not config_raw:
        config = None
    elif kind == 1:
        config = config_raw
    elif kind == 2:
        try:
            config = msgpack.unpackb(config_raw, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several types for bad bytes
            raise bad(f"config is not valid msgpack ({exc})") from None
        if not isinstance(config, dict):
            raise bad(f"config decodes to {type(config).__name__}, expected a map")
    else:
        raise bad(f"unknown config kind {kind}")
    return Snapshot(index=index, term=term, data=bytes(data[pos : pos + data_len]), config=config)


def verify_snapshot_bytes(data: bytes, source: str = "received snapshot") -> Snapshot:
    """Alias of :func:`decode_snapshot` for the receiving side of InstallSnapshot."""
    return decode_snapshot(data, source)


def snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


class SnapshotStore:
    """The ``snap/`` directory of one Raft group."""

    def __init__(self, directory: str, keep: int = DEFAULT_KEEP, create: bool = True) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1 (snapshots to keep), got {keep!r}")
        self.directory = directory
        self.keep = keep
        ensure_dir(directory, "snapshot directory", create)
        # A crash during save leaves a temp file; it was never renamed, so it is not a snapshot.
        for name in os.listdir(directory):
            if name.endswith(".tmp"):
                os.remove(os.path.join(directory, name))

    def list(self) -> list[tuple[int, int, str]]:
        """(index, term, path) of every snapshot file, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            match = _NAME.match(name)
            if match:
                found.append((int(match.group(1), 16), int(match.group(2), 16),
                              os.path.join(self.directory, name)))
        found.sort()
        return found

    def save(self, snap: Snapshot) -> str:
        """Write durably (temp, fsync, rename, fsync dir), then remove all but the newest ``keep``."""
        path = os.path.join(self.directory, snapshot_name(snap.index, snap.term))
        atomic_write(path, encode_snapshot(snap))
        self._prune()
        return path

    def save_bytes(self, data: bytes) -> Snapshot:
        """Verify snapshot bytes received from a leader, then store them. Returns the snapshot."""
        snap = decode_snapshot(data)
        atomic_write(os.path.join(self.directory, snapshot_name(snap.index, snap.term)), bytes(data))
        self._prune()
        return snap

    def _prune(self) -> None:
        old = self.list()[: -self.keep]
        for _index, _term, path in old:
            os.remove(path)
        if old:
            fsync_dir(self.directory)

    def load(self, path: str) -> Snapshot:
        snap = decode_snapshot(read_file(path, "snapshot"), source=f"snapshot file {path}")
        match = _NAME.match(os.path.basename(path))
        if match and (int(match.group(1), 16), int(match.group(2), 16)) != (snap.index, snap.term):
            raise SnapshotCorruptError(
                f"snapshot file {path} holds index {snap.index} term {snap.term}, "
                "which does not match its name; the file was renamed or replaced")
        return snap

    def load_latest(self) -> Snapshot | None:
        """The newest snapshot, CRC-checked; None when there is none.

        A damaged newest snapshot is an error, not a reason to fall back silently: the
        WAL may already be compacted past older snapshots.
        """
        files = self.list()
        if not files:
            return None
        path = files[-1][2]
        try:
            return self.load(path)
        except SnapshotCorruptError as exc:
            raise SnapshotCorruptError(
                f"{exc}. Move the file away to fall back to an older snapshot (only safe if the "
                "WAL still holds the entries after it), or rebuild this node from the cluster") from None
