"""WAL.append with records encoded beforehand (WAL.encode, on the node's event loop) writes
the same bytes as encoding inside append, and refuses frames that do not match."""

from __future__ import annotations

import os

import pytest

from ukehi.storage.format import WalEntry
from ukehi.storage.wal import WAL


def _segments(d: str) -> dict[str, bytes]:
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def test_pre_encoded_frames_write_the_same_bytes_and_replay_the_same_entries(tmp_path):
    entries = [WalEntry(2, i, b"\x00cmd-%d" % i, (2 << 32) | i) for i in range(1, 40)]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # A small segment size, so the batch also rotates across segments.
    wa, _ = WAL.open(a, segment_size=1024)
    wb, _ = WAL.open(b, segment_size=1024)
    wa.append(entries[:20], sync=True)
    wa.append(entries[20:], sync=True)
    wb.append(entries[:20], sync=True, frames=WAL.encode(entries[:20]))
    wb.append(entries[20:], sync=True, frames=WAL.encode(entries[20:]))
    wa.close()
    wb.close()
    assert len(_segments(a)) > 1 and _segments(a) == _segments(b)
    wal, replay = WAL.open(b, segment_size=1024)
    assert replay.entries == entries and wal.last_index == 39
    wal.close()


def test_frames_must_match_the_entries_and_order_is_still_checked(tmp_path):
    wal, _ = WAL.open(str(tmp_path / "w"))
    e = [WalEntry(1, 1, b"\x00a", 0), WalEntry(1, 2, b"\x00b", 0)]
    with pytest.raises(ValueError, match="2 entries"):
        wal.append(e, frames=WAL.encode(e[:1]))
    wal.append(e, frames=WAL.encode(e))
    late = [WalEntry(1, 5, b"\x00c", 0)]
    with pytest.raises(ValueError, match="out of order"):
        wal.append(late, frames=WAL.encode(late))
    assert wal.last_index == 2
    wal.close()
