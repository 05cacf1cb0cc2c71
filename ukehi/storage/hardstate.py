"""Raft hard state (term, vote, commit), persisted atomically and durably.

RULE FOR THE NODE: call :meth:`HardStateFile.save` and let it return BEFORE sending a
vote (or a response that depends on the new term). ``save`` returns only after the new
record is fsynced, renamed into place and the directory fsynced, so a vote, once sent,
survives a crash and the node can never vote twice in one term.

Record layout (little-endian), CRC-32 over every byte before the CRC::

    magic b"UKHS" · version u16 (1) · term u64 · commit u64 ·
    vote tag u8 (0 none, 1 u64 id, 2 utf-8 id) · [vote u64 | len u16 + bytes] · crc32 u32
"""

from __future__ import annotations

from .vfs import os  # the real os, or the simulator's file system (vfs.use)
import struct
import zlib
from dataclasses import dataclass

from .errors import HardStateCorruptError, StorageError
from .fsutil import atomic_write, read_file

MAGIC = b"UKHS"
VERSION = 1
_HEAD = struct.Struct("<4sHQQB")
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_CRC = struct.Struct("<I")
_U64_MAX = (1 << 64) - 1
MAX_VOTE_ID_BYTES = 1024


@dataclass(frozen=True)
class HardState:
    term: int = 0
    vote: int | str | None = None  # node id voted for in ``term``
    commit: int = 0

    def __post_init__(self) -> None:
        for name in ("term", "commit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64_MAX:
                raise ValueError(f"HardState.{name} must be an int in 0..2**64-1, got {value!r}")
        vote = self.vote
        if vote is None:
            return
        if isinstance(vote, bool) or not isinstance(vote, (int, str)):
            raise TypeError(f"HardState.vote must be a node id (int or str) or None, got {type(vote).__name__}")
        if isinstance(vote, int) and not 0 <= vote <= _U64_MAX:
            raise ValueError(f"HardState.vote id must fit in a u64, got {vote}")
        if isinstance(vote, str) and len(vote.encode()) > MAX_VOTE_ID_BYTES:
            raise ValueError(f"HardState.vote id is longer than {MAX_VOTE_ID_BYTES} bytes")


def encode_hard_state(state: HardState) -> bytes:
    if state.vote is None:
        body = _HEAD.pack(MAGIC, VERSION, state.term, state.commit, 0)
    elif isinstance(state.vote, int):
        body = _HEAD.pack(MAGIC, VERSION, state.term, state.commit, 1) + _U64.pack(state.vote)
    else:
        raw = state.vote.encode("utf-8")
        body = _HEAD.pack(MAGIC, VERSION, state.term, state.commit, 2) + _U16.pack(len(raw)) + raw
    return body + _CRC.pack(zlib.crc32(body))


def decode_hard_state(data: bytes, source: str = "hard state") -> HardState:
    """Decode and CRC-check a hard-state record; HardStateCorruptError says what is wrong."""
    def bad(why: str) -> HardStateCorruptError:
        return HardStateCorruptError(
            f"{source} is not a valid hard-state record: {why}. The node cannot know its term and "
            "vote; restore the file from a backup, or remove the node's data directory and re-add "
            "the node to the cluster as a new member")

    if len(data) < _HEAD.size + _CRC.size:
        raise bad(f"{len(data)} bytes, too short")
    (stored,) = _CRC.unpack_from(data, len(data) - 4)
    if zlib.crc32(memoryview(data)[:-4]) != stored:
        raise bad("CRC mismatch")
    magic, version, term, commit, tag = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise bad(f"magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise bad(f"version {version}, this build reads version {VERSION}")
    rest = data[_HEAD.size : -4]
    if tag == 0 and not rest:
        vote: int | str | None = None
    elif tag == 1 and len(rest) == 8:
        (vote,) = _U64.unpack(rest)
    elif tag == 2 and len(rest) >= 2 and _U16.unpack_from(rest)[0] == len(rest) - 2:
        try:
            vote = rest[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise bad("vote id is not UTF-8") from None
    else:
        raise bad(f"vote tag {tag} with {len(rest)} bytes of vote data")
    return HardState(term=term, vote=vote, commit=commit)


class HardStateFile:
    """The hard-state file of one Raft group (``.../group-N/hardstate``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> HardState:
        """The saved hard state; a fresh ``HardState()`` when the file does not exist yet."""
        if not os.path.exists(self.path):
            return HardState()
        if os.path.isdir(self.path):
            raise StorageError(f"hard-state path {self.path} is a directory; move it away")
        return decode_hard_state(read_file(self.path, "hard-state file"), source=self.path)

    def save(self, state: HardState) -> None:
        """Durably replace the hard state. Returns only once it is on stable storage."""
        if not isinstance(state, HardState):
            raise TypeError(f"save() needs a HardState, got {type(state).__name__}")
        atomic_write(self.path, encode_hard_state(state))
