"""Byte format: the encoder matches the spec bytes, v1 and v2 segments read back."""

import os
import struct

import pytest

from ukehi.storage import WAL, WalEntry, decode_header, encode_entry, encode_header, scan_wal, segment_name
from ukehi.storage.format import MAX_COMMAND_LEN

from walfiles import as_tuples, entry, header, seg_path, v1_frame, v2_frame, write_segment


def test_header_bytes_are_the_spec_bytes():
    assert encode_header(7, 2) == bytes.fromhex("324c4157" "02000000" "07000000")
    assert encode_header(7, 1) == bytes.fromhex("314c4157" "01000000" "07000000")
    assert decode_header(header(2, 9)) == (2, 9)
    assert decode_header(header(1, 3)) == (1, 3)
    assert segment_name(42) == "wal-00000042.seg"


def test_entry_bytes_match_hand_built_v2_and_v1():
    e = WalEntry(term=3, index=17, command=b"put x 1", fencing_token=(3 << 32) | 5)
    assert encode_entry(e) == v2_frame(3, 17, b"put x 1", (3 << 32) | 5)
    assert encode_entry(WalEntry(3, 17, b"put x 1"), version=1) == v1_frame(3, 17, b"put x 1")
    frame = encode_entry(e)
    # entry_len counts the bytes after itself, CRC included.
    assert struct.unpack_from("<I", frame)[0] == len(frame) - 4 == 8 + 8 + 4 + 7 + 8 + 4


@pytest.mark.parametrize("bad", [
    WalEntry(-1, 1, b"x"), WalEntry(1, 2**64, b"x"), WalEntry(1, 1, b"x", -5), WalEntry(1, 1, "text"),
])
def test_encode_rejects_bad_fields(bad):
    with pytest.raises((ValueError, TypeError)):
        encode_entry(bad)


def test_encode_rejects_oversized_command_and_v1_token():
    class Huge(bytes):
        def __len__(self):
            return MAX_COMMAND_LEN + 1
    with pytest.raises(ValueError, match="WAL limit"):
        encode_entry(WalEntry(1, 1, Huge(b"")))
    with pytest.raises(ValueError, match="v1 entry cannot carry"):
        encode_entry(WalEntry(1, 1, b"x", 9), version=1)


@pytest.mark.parametrize("data, why", [
    (b"\x00" * 5, "needs 12"),
    (struct.pack("<III", 0x57414C32, 1, 0), "magic"),
    (struct.pack("<III", 0xDEADBEEF, 2, 0), "0xDEADBEEF"),
])
def test_decode_header_names_the_problem(data, why):
    with pytest.raises(ValueError, match=why):
        decode_header(data)


def test_v2_round_trip_through_the_writer(tmp_path):
    wal, replay = WAL.open(str(tmp_path))
    assert replay.entries == [] and replay.report.clean
    written = [entry(i, term=2) for i in range(1, 51)]
    wal.append([WalEntry(*e) for e in written], sync=True)
    wal.close()
    # The file is exactly header + hand-built frames.
    with open(seg_path(str(tmp_path), 1), "rb") as f:
        assert f.read() == header(2, 1) + b"".join(v2_frame(*e) for e in written)
    _wal, replay = WAL.open(str(tmp_path))
    assert as_tuples(replay.entries) == written
    _wal.close()


def test_v1_segment_reads_back_with_token_zero(tmp_path):
    d = str(tmp_path)
    write_segment(d, 1, 1, [v1_frame(1, i, b"v1-%d" % i) for i in range(1, 6)])
    scan = scan_wal(d, with_locations=True)
    assert as_tuples(scan.entries) == [(1, i, b"v1-%d" % i, 0) for i in range(1, 6)]
    assert scan.report.clean
    assert [loc[2] for loc in scan.locations] == [1] * 5


def test_writer_starts_new_v2_segment_after_v1(tmp_path):
    d = str(tmp_path)
    v1_path = write_segment(d, 1, 1, [v1_frame(1, i, b"old") for i in range(1, 4)])
    with open(v1_path, "rb") as f:
        v1_bytes = f.read()
    wal, replay = WAL.open(d)
    assert [e.index for e in replay.entries] == [1, 2, 3]
    wal.append([WalEntry(2, 4, b"new", (2 << 32) | 1)], sync=True)
    wal.close()
    with open(v1_path, "rb") as f:
        assert f.read() == v1_bytes  # never appended to
    with open(seg_path(d, 2), "rb") as f:
        assert f.read() == header(2, 2) + v2_frame(2, 4, b"new", (2 << 32) | 1)
    _wal, replay = WAL.open(d)
    assert as_tuples(replay.entries) == [(1, 1, b"old", 0), (1, 2, b"old", 0), (1, 3, b"old", 0),
                                         (2, 4, b"new", (2 << 32) | 1)]
    _wal.close()


def test_mixed_v1_then_v2_segments_replay_in_order(tmp_path):
    d = str(tmp_path)
    write_segment(d, 1, 1, [v1_frame(1, 1, b"a"), v1_frame(1, 2, b"b")])
    write_segment(d, 2, 2, [v2_frame(2, 3, b"c", 77)])
    scan = scan_wal(d)
    assert as_tuples(scan.entries) == [(1, 1, b"a", 0), (1, 2, b"b", 0), (2, 3, b"c", 77)]


def test_unrelated_files_in_wal_dir_are_ignored(tmp_path):
    d = str(tmp_path)
    write_segment(d, 1, 2, [v2_frame(1, 1, b"a", 1)])
    (tmp_path / "README").write_text("notes")
    (tmp_path / "wal-1.seg").write_bytes(b"not eight digits")
    assert [e.index for e in scan_wal(d).entries] == [1]
    assert sorted(os.listdir(d)) == ["README", "wal-00000001.seg", "wal-1.seg"]


def test_v1_corruption_and_torn_tail_are_detected(tmp_path):
    d = str(tmp_path)
    frames = [v1_frame(1, i, b"v1-%d" % i) for i in range(1, 6)]
    path = write_segment(d, 1, 1, frames)
    third = 12 + len(frames[0]) + len(frames[1])
    with open(path, "r+b") as f:
        f.seek(third + 26)  # a command byte of index 3
        f.write(b"!")
    scan = scan_wal(d)
    assert [e.index for e in scan.entries] == [1, 2]
    assert (scan.report.findings[0].kind, scan.report.findings[0].offset) == ("crc-mismatch", third)
    os.truncate(path, third - 3)  # now only a torn tail of index 2 remains
    scan = scan_wal(d)
    assert [e.index for e in scan.entries] == [1] and scan.report.clean
    assert scan.report.findings[0].kind == "torn-tail"
