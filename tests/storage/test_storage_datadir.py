"""DataDir facade: per-group layout, replay with snapshot, recovery marker, clear errors."""

import json
import os

import pytest

from ukehi.storage import (
    CorruptionPolicy,
    CorruptionRefusedError,
    DataDir,
    HardState,
    HardStateCorruptError,
    Snapshot,
    SnapshotCorruptError,
    SnapshotStore,
    StorageError,
    WalEntry,
)

from walfiles import as_tuples, entry, flip, tree_digest


def fill(tmp_path, n=30, snapshot_at=None, segment_size=1024):
    store = DataDir(str(tmp_path)).open_group(0, segment_size=segment_size)
    store.wal.append([WalEntry(*entry(i)) for i in range(1, n + 1)], sync=True)
    store.hard_state.save(HardState(1, "n1", n))
    if snapshot_at is not None:
        store.snapshots.save(Snapshot(snapshot_at, 1, b"sm state", {"voters": ["n1"]}))
        store.wal.compact_to(snapshot_at)
    store.close()


def test_layout_is_one_directory_per_group(tmp_path):
    data = DataDir(str(tmp_path))
    for group in (0, 7):
        data.open_group(group).close()
    assert data.groups() == [0, 7]
    assert sorted(os.listdir(tmp_path / "group-0")) == ["snap", "wal"]
    assert os.listdir(tmp_path / "group-0" / "wal") == ["wal-00000001.seg"]


def test_restart_returns_hard_state_snapshot_and_entries_after_it(tmp_path):
    fill(tmp_path, n=30, snapshot_at=20)
    store = DataDir(str(tmp_path)).open_group(0, segment_size=1024)
    rec = store.recovered
    assert rec.hard_state == HardState(1, "n1", 30)
    assert rec.snapshot.index == 20 and rec.snapshot.config == {"voters": ["n1"]}
    assert as_tuples(rec.entries) == [entry(i) for i in range(21, 31)]
    assert rec.report.clean and not rec.recovering
    store.wal.append([WalEntry(*entry(31))], sync=True)  # the log goes on where it ended
    store.close()


def test_corrupt_snapshot_stops_open_with_clear_error(tmp_path):
    fill(tmp_path, n=10, snapshot_at=5)
    snap_dir = tmp_path / "group-0" / "snap"
    [name] = os.listdir(snap_dir)
    flip(str(snap_dir / name), 30)
    with pytest.raises(SnapshotCorruptError, match=name):
        DataDir(str(tmp_path)).open_group(0)


def test_corrupt_hard_state_stops_open(tmp_path):
    fill(tmp_path, n=3)
    flip(str(tmp_path / "group-0" / "hardstate"), 6)
    with pytest.raises(HardStateCorruptError, match="hardstate"):
        DataDir(str(tmp_path)).open_group(0)


def corrupt_entry(tmp_path, index):
    """Flip a command byte of ``index`` (entries are ~36 + len bytes; find it by scanning)."""
    from ukehi.storage import scan_wal
    wal_dir = str(tmp_path / "group-0" / "wal")
    scan = scan_wal(wal_dir, with_locations=True)
    pos = [e.index for e in scan.entries].index(index)
    name, offset, _ = scan.locations[pos]
    flip(os.path.join(wal_dir, name), offset + 26)


def test_truncate_policy_recovering_state_survives_restart_until_caught_up(tmp_path):
    fill(tmp_path, n=30)
    corrupt_entry(tmp_path, 12)
    store = DataDir(str(tmp_path)).open_group(0, CorruptionPolicy.TruncateToLastGood)
    rec = store.recovered
    assert rec.recovering and rec.last_good_index == 11 and rec.highest_index_seen == 30
    assert rec.recover_until == 30
    assert [e.index for e in rec.entries] == list(range(1, 12))
    store.close()
    # Crash again before catching up: still recovering, still knows it must reach index 30.
    store = DataDir(str(tmp_path)).open_group(0)
    assert store.recovered.report.clean
    assert store.recovered.recovering and store.recovered.recover_until == 30
    store.wal.append([WalEntry(*entry(i, term=2)) for i in range(12, 25)], sync=True)
    store.close()
    # Part of the way there (24 < 30): still recovering.
    store = DataDir(str(tmp_path)).open_group(0)
    assert store.recovered.recovering and store.recovered.recover_until == 30
    store.wal.append([WalEntry(*entry(i, term=2)) for i in range(25, 32)], sync=True)
    store.close()
    # The durable log reached 30: the marker lapses by itself.
    store = DataDir(str(tmp_path)).open_group(0)
    assert not store.recovered.recovering and store.recovered.entries[-1].index == 31
    assert not (tmp_path / "group-0" / "recovering").exists()
    store.close()


def test_mark_caught_up_drops_the_marker_at_once(tmp_path):
    fill(tmp_path, n=30)
    corrupt_entry(tmp_path, 12)
    store = DataDir(str(tmp_path)).open_group(0)
    assert store.recovered.recovering
    store.mark_caught_up()
    store.close()
    store = DataDir(str(tmp_path)).open_group(0)
    assert not store.recovered.recovering
    store.close()


def test_snapshot_past_the_cut_ends_recovering(tmp_path):
    fill(tmp_path, n=30)
    corrupt_entry(tmp_path, 12)
    store = DataDir(str(tmp_path)).open_group(0)
    assert store.recovered.recovering
    store.snapshots.save(Snapshot(40, 2, b"from leader"))  # InstallSnapshot from the leader
    store.wal.reset()
    store.close()
    store = DataDir(str(tmp_path)).open_group(0)
    assert not store.recovered.recovering and store.recovered.snapshot.index == 40
    store.close()


def test_unreadable_recovery_marker_is_an_error(tmp_path):
    fill(tmp_path, n=3)
    (tmp_path / "group-0" / "recovering").write_text("{not json")
    with pytest.raises(StorageError, match="caught up"):
        DataDir(str(tmp_path)).open_group(0)


def test_refuse_start_leaves_data_dir_identical(tmp_path):
    fill(tmp_path, n=30)
    corrupt_entry(tmp_path, 12)
    before = tree_digest(str(tmp_path))
    with pytest.raises(CorruptionRefusedError, match="byte offset"):
        DataDir(str(tmp_path)).open_group(0, "refuse-start")
    assert tree_digest(str(tmp_path)) == before


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_gap_between_snapshot_and_wal(tmp_path, policy):
    """The WAL was compacted past the newest snapshot (index 25), which is lost; an older one covers 10."""
    fill(tmp_path, n=40, snapshot_at=25)
    snap_dir = tmp_path / "group-0" / "snap"
    [name] = os.listdir(snap_dir)
    os.remove(snap_dir / name)
    SnapshotStore(str(snap_dir)).save(Snapshot(10, 1, b"old"))
    first = DataDir(str(tmp_path)).open_group(0, "alert-and-continue")
    first_index = first.recovered.entries[0].index
    first.close()
    assert first_index > 11  # the premise: a real gap
    before = tree_digest(str(tmp_path))
    if policy is CorruptionPolicy.RefuseStart:
        with pytest.raises(CorruptionRefusedError, match=f"indexes 11..{first_index - 1} are missing"):
            DataDir(str(tmp_path)).open_group(0, policy)
        assert tree_digest(str(tmp_path)) == before
        return
    store = DataDir(str(tmp_path)).open_group(0, policy)
    rec = store.recovered
    finding = rec.report.findings[-1]
    assert finding.kind == "index-discontinuity" and finding.index == first_index
    if policy is CorruptionPolicy.TruncateToLastGood:
        assert rec.entries == [] and rec.recovering and rec.highest_index_seen == 40
        store.wal.append([WalEntry(*entry(11, term=2))], sync=True)  # the log restarts after the snapshot
    else:
        assert [e.index for e in rec.entries] == list(range(first_index, 41))
        assert finding.action == "kept"
    store.close()


def test_missing_data_dir_without_create(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        DataDir(str(tmp_path / "nope"), create=False)
    DataDir(str(tmp_path / "d")).open_group(0).close()
    with pytest.raises(StorageError, match="group 3 directory .* does not exist"):
        DataDir(str(tmp_path / "d"), create=False).open_group(3)


def test_wrong_files_where_directories_belong(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        DataDir(str(tmp_path / "file"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "group-0").write_text("x")
    with pytest.raises(StorageError, match="group 0 directory .* not a directory"):
        DataDir(str(tmp_path / "d")).open_group(0)
    with pytest.raises(ValueError, match="group id"):
        DataDir(str(tmp_path / "d")).open_group(-1)


def test_permission_denied_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    (tmp_path / "d").mkdir()
    with pytest.raises(StorageError, match="not readable and writable"):
        DataDir(str(tmp_path / "d"))


def test_recovery_marker_content(tmp_path):
    fill(tmp_path, n=10)
    corrupt_entry(tmp_path, 4)
    DataDir(str(tmp_path)).open_group(0).close()
    assert json.loads((tmp_path / "group-0" / "recovering").read_text()) == {"highest_index_seen": 10}
