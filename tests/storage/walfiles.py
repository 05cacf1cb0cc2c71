"""Hand-built WAL bytes for the storage tests.

Written with struct straight from the DESIGN.md byte format, NOT with ukehi.storage's
encoder, so the tests check the implementation against the spec rather than itself.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zlib

MAGIC_V1 = 0x57414C31
MAGIC_V2 = 0x57414C32


def header(version: int, segment_id: int) -> bytes:
    magic = MAGIC_V2 if version == 2 else MAGIC_V1
    return struct.pack("<III", magic, version, segment_id)


def v2_frame(term: int, index: int, cmd: bytes, token: int) -> bytes:
    body = struct.pack("<QQI", term, index, len(cmd)) + cmd + struct.pack("<Q", token)
    return struct.pack("<I", len(body) + 4) + body + struct.pack("<I", zlib.crc32(body))


def v1_frame(term: int, index: int, cmd: bytes) -> bytes:
    body = struct.pack("<QQI", term, index, len(cmd)) + cmd
    return struct.pack("<I", len(body) + 4) + body + struct.pack("<I", zlib.crc32(body))


def seg_path(directory: str, segment_id: int) -> str:
    return os.path.join(directory, f"wal-{segment_id:08}.seg")


def write_segment(directory: str, segment_id: int, version: int, frames: list[bytes]) -> str:
    os.makedirs(directory, exist_ok=True)
    path = seg_path(directory, segment_id)
    with open(path, "wb") as f:
        f.write(header(version, segment_id) + b"".join(frames))
    return path


def entry(index: int, term: int = 1, token: int | None = None) -> tuple[int, int, bytes, int]:
    """A deterministic (term, index, command, token) for ``index``."""
    cmd = f"set k{index} v{index * 7}".encode()
    return (term, index, cmd, (term << 32) | index if token is None else token)


def build_v2_log(directory: str, layout: list[list[int]]) -> dict[int, tuple[str, int]]:
    """Write v2 segments 1.. with the given indexes; return {index: (path, offset)}."""
    where: dict[int, tuple[str, int]] = {}
    for seg_id, indexes in enumerate(layout, start=1):
        frames, offset = [], 12
        for i in indexes:
            frame = v2_frame(*entry(i))
            where[i] = (seg_path(directory, seg_id), offset)
            frames.append(frame)
            offset += len(frame)
        write_segment(directory, seg_id, 2, frames)
    return where


def tree_digest(directory: str) -> dict[str, str]:
    """name -> sha256 of every file under ``directory``, to prove nothing changed."""
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def flip(path: str, offset: int, mask: int = 0xFF) -> None:
    """XOR one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def as_tuples(entries) -> list[tuple[int, int, bytes, int]]:
    return [(e.term, e.index, bytes(e.command), e.fencing_token) for e in entries]


class FsyncCounter:
    """Wraps os.fsync, counting file and directory fsyncs separately."""

    def __init__(self, monkeypatch):
        self.files = 0
        self.dirs = 0
        real = os.fsync

        def counting(fd):
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.dirs += 1
            else:
                self.files += 1
            return real(fd)

        monkeypatch.setattr(os, "fsync", counting)

    def reset(self):
        self.files = self.dirs = 0
