"""WAL segment byte format (v2, and v1 for reading), byte-compatible with amaters-cluster.

Segment file ``wal-{id:08}.seg`` starts with a 12-byte header::

    magic u32 LE (0x57414C32 for v2, 0x57414C31 for v1) · version u32 LE · segment id u32 LE

followed by entries. A v2 entry, all little-endian::

    entry_len u32   bytes after this field, CRC included
    term      u64
    index     u64
    cmd_len   u32
    cmd       cmd_len bytes
    fencing_token u64
    crc32     u32   zlib CRC-32 (IEEE) over term .. fencing_token

A v1 entry is the same without ``fencing_token``; it reads back with token 0.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

MAGIC_V1 = 0x57414C31
MAGIC_V2 = 0x57414C32
MAGIC_BY_VERSION = {1: MAGIC_V1, 2: MAGIC_V2}

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size  # 12

LEN = struct.Struct("<I")
ENTRY_HEAD = struct.Struct("<QQI")  # term, index, cmd_len
TOKEN = struct.Struct("<Q")
CRC = struct.Struct("<I")

# entry_len = FIXED + cmd_len: term 8 + index 8 + cmd_len 4 (+ token 8) + crc 4.
FIXED_LEN = {1: 24, 2: 32}  # also the smallest possible entry_len (empty command)

# A sane upper bound for one command. A length field above it is "impossible", so a
# flipped high bit never makes the reader allocate or scan gigabytes.
MAX_COMMAND_LEN = 64 * 1024 * 1024
MAX_ENTRY_LEN = MAX_COMMAND_LEN + FIXED_LEN[2]

# The writer's segment size limit may be set up to MAX_SEGMENT_SIZE. A segment file is at
# most that, or one oversized entry alone; replay refuses to read anything bigger.
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024
MAX_SEGMENT_FILE = MAX_SEGMENT_SIZE + 12 + 4 + MAX_ENTRY_LEN

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1

_SEGMENT_NAME = re.compile(r"^wal-(\d{8})\.seg$")


class WalEntry(NamedTuple):
    """One Raft log entry as stored in the WAL. (A NamedTuple: replay builds millions.)"""

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index(); the Raft name wins
    command: bytes
    fencing_token: int = 0


def segment_name(segment_id: int) -> str:
    """File name of segment ``segment_id``: ``wal-{id:08}.seg``."""
    if not isinstance(segment_id, int) or not 0 <= segment_id <= 99_999_999:
        raise ValueError(f"segment id must be an int in 0..99999999 (8 digits), got {segment_id!r}")
    return f"wal-{segment_id:08}.seg"


def parse_segment_name(name: str) -> int | None:
    """Segment id encoded in a file name, or None when the name is not a segment's."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def encode_header(segment_id: int, version: int = 2) -> bytes:
    """The 12-byte segment header for ``version`` (1 or 2)."""
    if version not in MAGIC_BY_VERSION:
        raise ValueError(f"WAL version must be 1 or 2, got {version!r}")
    if not isinstance(segment_id, int) or not 0 <= segment_id <= U32_MAX:
        raise ValueError(f"segment id must be a u32, got {segment_id!r}")
    return HEADER.pack(MAGIC_BY_VERSION[version], version, segment_id)


def decode_header(data: bytes) -> tuple[int, int]:
    """Return ``(version, segment_id)`` of a segment header, or raise ValueError saying what is wrong."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"segment header is {len(data)} bytes, needs {HEADER_SIZE}")
    magic, version, segment_id = HEADER.unpack_from(data, 0)
    if magic == MAGIC_V2 and version == 2:
        return 2, segment_id
    if magic == MAGIC_V1 and version == 1:
        return 1, segment_id
    raise ValueError(
        f"bad segment header: magic 0x{magic:08X}, version {version} "
        f"(expected 0x{MAGIC_V2:08X}/2 or 0x{MAGIC_V1:08X}/1)"
    )


def encode_entry(entry: WalEntry, version: int = 2) -> bytes:
    """Encode one entry (v2 by default; v1 drops the fencing token, which must then be 0)."""
    term, index, command, token = entry
    if not isinstance(command, (bytes, bytearray, memoryview)):
        raise TypeError(f"entry {index!r}: command must be bytes, got {type(command).__name__}")
    for name, value in (("term", term), ("index", index), ("fencing_token", token)):
        if not isinstance(value, int) or not 0 <= value <= U64_MAX:
            raise ValueError(f"entry {index!r}: {name} must be an int in 0..2**64-1, got {value!r}")
    cmd_len = len(command)
    if cmd_len > MAX_COMMAND_LEN:
        raise ValueError(
            f"entry {index}: command is {cmd_len} bytes, the WAL limit is {MAX_COMMAND_LEN}; "
            "split it or store large values outside the log"
        )
    if version == 2:
        body = ENTRY_HEAD.pack(term, index, cmd_len) + bytes(command) + TOKEN.pack(token)
    elif version == 1:
        if token:
            raise ValueError(f"entry {index}: a v1 entry cannot carry fencing token {token}")
        body = ENTRY_HEAD.pack(term, index, cmd_len) + bytes(command)
    else:
        raise ValueError(f"WAL version must be 1 or 2, got {version!r}")
    return LEN.pack(len(body) + 4) + body + CRC.pack(zlib.crc32(body))
