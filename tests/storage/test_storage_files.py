"""Hard state and snapshot files: atomic, durable, CRC really checked."""

import os
import struct
import zlib

import pytest

from ukehi.storage import (
    HardState,
    HardStateCorruptError,
    HardStateFile,
    Snapshot,
    SnapshotCorruptError,
    SnapshotStore,
    StorageError,
    decode_hard_state,
    decode_snapshot,
    encode_hard_state,
    encode_snapshot,
    verify_snapshot_bytes,
)

from walfiles import FsyncCounter


@pytest.mark.parametrize("state", [
    HardState(), HardState(5, "n3", 17), HardState(2**64 - 1, 2**64 - 1, 2**64 - 1), HardState(1, "ノード", 0),
])
def test_hard_state_round_trip(tmp_path, state):
    f = HardStateFile(str(tmp_path / "hardstate"))
    f.save(state)
    assert f.load() == state
    assert os.listdir(tmp_path) == ["hardstate"]  # no temp file left behind


def test_missing_hard_state_is_fresh(tmp_path):
    assert HardStateFile(str(tmp_path / "hardstate")).load() == HardState(0, None, 0)


def test_hard_state_save_is_durable_before_returning(tmp_path, monkeypatch):
    counter = FsyncCounter(monkeypatch)
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append((counter.files, counter.dirs))  # what was fsynced before the rename
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    HardStateFile(str(tmp_path / "hardstate")).save(HardState(3, "n1", 2))
    assert renamed == [(1, 0)]  # temp file fsynced, then renamed...
    assert (counter.files, counter.dirs) == (1, 1)  # ...then the directory fsynced


def test_hard_state_corruption_is_detected_at_every_byte(tmp_path):
    good = encode_hard_state(HardState(7, "n2", 5))
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x40
        with pytest.raises(HardStateCorruptError, match="not a valid hard-state record"):
            decode_hard_state(bytes(bad))
    path = tmp_path / "hardstate"
    path.write_bytes(good[:-1])
    with pytest.raises(HardStateCorruptError, match=str(path)):
        HardStateFile(str(path)).load()


def test_hard_state_with_valid_crc_but_bad_layout_is_refused():
    body = b"UKHS" + struct.pack("<HQQB", 1, 1, 1, 2) + struct.pack("<H", 50) + b"short"
    with pytest.raises(HardStateCorruptError, match="vote tag 2"):
        decode_hard_state(body + struct.pack("<I", zlib.crc32(body)))


@pytest.mark.parametrize("kwargs", [dict(term=-1), dict(commit=1.5), dict(vote=True), dict(vote=3.0),
                                    dict(vote="x" * 2000)])
def test_hard_state_rejects_bad_fields(kwargs):
    with pytest.raises((ValueError, TypeError)):
        HardState(**kwargs)


def test_hard_state_path_is_a_directory(tmp_path):
    (tmp_path / "hardstate").mkdir()
    with pytest.raises(StorageError, match="is a directory"):
        HardStateFile(str(tmp_path / "hardstate")).load()


def test_permission_error_says_what_to_check(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StorageError, match="permission denied.*owner and mode"):
        HardStateFile(str(tmp_path / "hardstate")).save(HardState(1, None, 0))


# -- snapshots ------------------------------------------------------------------------

CONFIG = {"voters": ["n1", "n2", "n3"], "learners": [], "joint": None}


@pytest.mark.parametrize("config", [None, CONFIG, b"\x00opaque\xff"])
def test_snapshot_round_trip(tmp_path, config):
    store = SnapshotStore(str(tmp_path / "snap"))
    snap = Snapshot(index=100, term=4, data=b"state" * 1000, config=config)
    path = store.save(snap)
    assert os.path.basename(path) == "snap-0000000000000064-0000000000000004.snap"
    assert store.load_latest() == snap


def test_corrupt_snapshot_is_refused_on_load(tmp_path):
    store = SnapshotStore(str(tmp_path))
    path = store.save(Snapshot(10, 2, b"important state", CONFIG))
    with open(path, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(SnapshotCorruptError, match=r"CRC mismatch.*Move the file away") as err:
        store.load_latest()
    assert path in str(err.value)


def test_received_snapshot_bytes_are_verified_at_every_byte():
    good = encode_snapshot(Snapshot(9, 3, b"abcdef", CONFIG))
    assert verify_snapshot_bytes(good) == decode_snapshot(good)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x08
        with pytest.raises(SnapshotCorruptError, match="received snapshot"):
            verify_snapshot_bytes(bytes(bad))
    for cut in (0, 5, len(good) - 1):
        with pytest.raises(SnapshotCorruptError):
            verify_snapshot_bytes(good[:cut])


def test_hostile_lengths_with_valid_crc_are_refused():
    # A sender that computes a valid CRC over lying length fields.
    head = b"UKSN" + struct.pack("<HQQBI", 1, 1, 1, 1, 0xFFFFFFF0)
    body = head + struct.pack("<Q", 0)
    with pytest.raises(SnapshotCorruptError, match="config length"):
        decode_snapshot(body + struct.pack("<I", zlib.crc32(body)))
    head = b"UKSN" + struct.pack("<HQQBI", 1, 1, 1, 0, 0) + struct.pack("<Q", 2**63) + b"xy"
    with pytest.raises(SnapshotCorruptError, match="data length"):
        decode_snapshot(head + struct.pack("<I", zlib.crc32(head)))


def test_store_keeps_newest_n_and_verifies_received_bytes(tmp_path):
    store = SnapshotStore(str(tmp_path), keep=2)
    for i in range(1, 6):
        store.save(Snapshot(i * 10, 1, b"s%d" % i))
    assert [index for index, _, _ in store.list()] == [40, 50]
    received = encode_snapshot(Snapshot(60, 2, b"from leader", CONFIG))
    assert store.save_bytes(received).index == 60
    assert [index for index, _, _ in store.list()] == [50, 60]
    with pytest.raises(SnapshotCorruptError):
        store.save_bytes(received[:-1] + bytes([received[-1] ^ 1]))
    assert [index for index, _, _ in store.list()] == [50, 60]  # nothing stored


def test_snapshot_save_is_atomic_and_durable(tmp_path, monkeypatch):
    store = SnapshotStore(str(tmp_path))
    counter = FsyncCounter(monkeypatch)
    store.save(Snapshot(1, 1, b"x"))
    assert (counter.files, counter.dirs) == (1, 1)
    (tmp_path / "snap-0000000000000002-0000000000000001.snap.tmp").write_bytes(b"half written")
    store = SnapshotStore(str(tmp_path))  # a crash mid-save leaves a temp file: cleaned up
    assert sorted(os.listdir(tmp_path)) == ["snap-0000000000000001-0000000000000001.snap"]


def test_renamed_snapshot_file_is_refused(tmp_path):
    store = SnapshotStore(str(tmp_path))
    path = store.save(Snapshot(5, 1, b"x"))
    os.rename(path, os.path.join(str(tmp_path), "snap-0000000000000009-0000000000000001.snap"))
    with pytest.raises(SnapshotCorruptError, match="does not match its name"):
        store.load_latest()


@pytest.mark.parametrize("kwargs", [dict(index=-1, term=1, data=b""), dict(index=1, term=1, data="text"),
                                    dict(index=1, term=1, data=b"", config=[1, 2])])
def test_snapshot_rejects_bad_fields(kwargs):
    with pytest.raises((ValueError, TypeError)):
        Snapshot(**kwargs)


def test_snapshot_store_bad_keep(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        SnapshotStore(str(tmp_path), keep=0)
