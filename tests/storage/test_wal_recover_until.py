"""TruncateToLastGood's ``recover_until``: an upper bound on every index the cut may have
dropped, readable or not, so a node refuses votes until it is past every entry it may have
acknowledged. ``highest_index_seen`` alone missed entries whose bytes no longer read as
entries (sim seed 5025: a WAL zeroed from its first entry on read as nothing, and the node
voted at once with an empty log).

Log: v2 frames of entries 1-12 (``entry(i)``: 44-46 bytes each, the smallest v2 frame is 36).
"""

import os

from ukehi.storage import DataDir, HardState, Snapshot, scan_wal
from ukehi.storage.format import HEADER_SIZE

from walfiles import build_v2_log, entry, seg_path, v2_frame, write_segment

TRUNCATE = "truncate-to-last-good"


def zero(path, start, end):
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))


def test_damage_at_the_first_entry_still_bounds_what_was_lost(tmp_path):
    d = str(tmp_path)
    where = build_v2_log(d, [list(range(1, 13))])
    path, _ = where[1]
    size = os.path.getsize(path)
    zero(path, HEADER_SIZE + 10, size - 5)  # the last bytes stay: not a crash's zero tail
    scan = scan_wal(d, TRUNCATE)
    report = scan.report
    assert scan.entries == [] and report.recovering and report.highest_index_seen is None
    assert report.recover_until >= 12
    # No looser than the bytes allow: every frame is at least 36 bytes.
    assert report.recover_until <= (size - HEADER_SIZE) // 36


def test_readable_entries_after_the_damage_keep_the_bound_tight(tmp_path):
    # The ordinary case: one entry's bytes damaged, every later entry reads. The bound is the
    # highest index read, not inflated by counting the readable entries as unknown.
    d = str(tmp_path)
    where = build_v2_log(d, [list(range(1, 13))])
    path, off = where[4]
    zero(path, off + 8, off + 30)
    report = scan_wal(d, TRUNCATE).report
    assert report.last_good_index == 3 and report.highest_index_seen == 12
    assert report.recover_until == 12


def test_unreadable_bytes_at_the_end_count_past_the_last_readable_entry(tmp_path):
    d = str(tmp_path)
    where = build_v2_log(d, [list(range(1, 13))])
    path, off6 = where[6]
    _, off9 = where[9]
    size = os.path.getsize(path)
    zero(path, off6 + 4, off6 + 20)  # entry 6 damaged: the cut is here; 7 and 8 still read
    zero(path, off9 + 4, size - 2)  # 9..12 unreadable to the end (last bytes not zero)
    report = scan_wal(d, TRUNCATE).report
    assert report.last_good_index == 5 and report.highest_index_seen == 8
    assert report.recover_until >= 12


def test_a_copied_older_entry_does_not_stand_for_the_one_it_overwrote(tmp_path):
    # Entry 3's frame copied over entry 12's (same length class): the last frame reads, but
    # as index 3, and says nothing about the index written there (12).
    d = str(tmp_path)
    frames = [v2_frame(*entry(i)) for i in range(1, 13)]
    frames[10] = frames[10][:-1] + bytes([frames[10][-1] ^ 0xFF])  # 11: CRC broken, the cut
    assert len(frames[2]) <= len(frames[11])
    frames[11] = frames[2] + b"\x01" * (len(frames[11]) - len(frames[2]))
    write_segment(d, 1, 2, frames)
    report = scan_wal(d, TRUNCATE).report
    assert report.last_good_index == 10
    assert report.recover_until >= 12


def test_an_unreadable_later_segment_counts_by_its_size(tmp_path):
    d = str(tmp_path)
    build_v2_log(d, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    zero(seg_path(d, 2), 0, 4)  # segment 2's header (magic) gone: the whole segment unreadable
    report = scan_wal(d, TRUNCATE).report
    assert report.last_good_index == 4 and report.highest_index_seen == 12
    assert report.recover_until >= 12
    zero(seg_path(d, 3), 0, 4)  # and segment 3's: nothing after 4 reads at all
    report = scan_wal(d, TRUNCATE).report
    assert report.highest_index_seen in (4, 5) and report.recover_until >= 12


def test_the_data_dir_bounds_from_the_snapshot_and_persists_the_bound(tmp_path):
    # The WAL after a snapshot at 20 holds 21..26; all of it is damaged. recover_until counts
    # from the snapshot's index, and a restart before catching up still waits for it.
    store = DataDir(str(tmp_path)).open_group(0)
    from ukehi.storage import WalEntry
    store.snapshots.save(Snapshot(20, 1, b"sm", {"voters": ["n1"]}))
    store.wal.append([WalEntry(*entry(i)) for i in range(21, 27)], sync=True)
    store.hard_state.save(HardState(1, "n1", 20))
    store.close()
    wal_dir = tmp_path / "group-0" / "wal"
    [name] = os.listdir(wal_dir)
    path = str(wal_dir / name)
    zero(path, HEADER_SIZE + 6, os.path.getsize(path) - 3)
    store = DataDir(str(tmp_path)).open_group(0, TRUNCATE)
    rec = store.recovered
    assert rec.recovering and rec.entries == [] and rec.recover_until >= 26
    bound = rec.recover_until
    store.close()
    store = DataDir(str(tmp_path)).open_group(0, TRUNCATE)
    assert store.recovered.recovering and store.recovered.recover_until == bound
    store.close()


def test_a_readable_entry_after_an_unreadable_segment_bounds_what_the_segment_held(tmp_path):
    # Segment 2 (5..8, ~180 bytes: room for 6 smallest frames) is unreadable, segment 3 reads
    # as 9: what segment 2 held came before 9, so the bound is 9, not 4 + 6. Counted by size
    # alone, a damaged 64 MB segment header would keep the node from voting for millions of
    # entries although every later one reads.
    d = str(tmp_path)
    build_v2_log(d, [[1, 2, 3, 4], [5, 6, 7, 8], [9]])
    assert (os.path.getsize(seg_path(d, 2)) - HEADER_SIZE) // 28 > 5
    zero(seg_path(d, 2), 0, 4)
    report = scan_wal(d, TRUNCATE).report
    assert report.last_good_index == 4 and report.highest_index_seen == 9
    assert report.recover_until == 9
