"""CorruptionPolicy conformance: every field of an entry, torn and zero-filled tails,
middle segments, bad headers, missing segments, hostile lengths, under every policy.

The log used by most tests: three v2 segments holding indexes 1-4, 5-8 and 9-12.
"Middle" corruption hits index 6 (segment 2), "last" hits index 10 (segment 3, not
its last entry, so it cannot pass for a crash tail).
"""

import os
import tracemalloc

import pytest

from ukehi.storage import WAL, CorruptionPolicy, CorruptionRefusedError, WalEntry, scan_wal

from walfiles import as_tuples, build_v2_log, entry, flip, seg_path, tree_digest, v2_frame, write_segment

LAYOUT = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
ALL = list(range(1, 13))
TRUNCATE = CorruptionPolicy.TruncateToLastGood
REFUSE = CorruptionPolicy.RefuseStart
ALERT = CorruptionPolicy.AlertAndContinue


def cmd_len(index):
    return len(entry(index)[2])


# (field, byte offset inside the frame as a function of the command length, xor mask, expected kind)
FIELDS = [
    ("length-high-byte", lambda n: 3, 0xFF, "impossible-length"),
    ("length-low-bit", lambda n: 0, 0x01, "crc-mismatch"),
    ("term", lambda n: 4 + 2, 0xFF, "crc-mismatch"),
    ("index", lambda n: 12, 0x01, "crc-mismatch"),
    ("cmd_len", lambda n: 20, 0x01, "crc-mismatch"),
    ("command", lambda n: 24 + 1, 0x20, "crc-mismatch"),
    ("fencing_token", lambda n: 24 + n + 1, 0xFF, "crc-mismatch"),
    ("crc", lambda n: 32 + n + 2, 0x10, "crc-mismatch"),
]


def open_wal(d, policy):
    wal, replay = WAL.open(d, policy)
    wal.close()
    return replay


def expected(indexes):
    return [entry(i) for i in indexes]


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
@pytest.mark.parametrize("where, bad", [("middle-segment", 6), ("last-segment", 10)])
@pytest.mark.parametrize("field, at, mask, kind", FIELDS, ids=[f[0] for f in FIELDS])
def test_corrupt_field(tmp_path, policy, where, bad, field, at, mask, kind):
    d = str(tmp_path)
    where_is = build_v2_log(d, LAYOUT)
    path, offset = where_is[bad]
    flip(path, offset + at(cmd_len(bad)), mask)
    name = os.path.basename(path)
    before = tree_digest(d)

    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError) as err:
            WAL.open(d, policy)
        message = str(err.value)
        assert name in message and f"byte offset {offset}" in message and kind in message
        assert tree_digest(d) == before  # nothing changed on disk
        finding = err.value.report.findings[-1]
        assert (finding.segment, finding.offset, finding.kind, finding.action) == (name, offset, kind, "refused")
        assert [e.index for e in err.value.entries] == list(range(1, bad))
        return

    replay = open_wal(d, policy)
    report = replay.report
    first = report.findings[0]
    assert (first.segment, first.offset, first.kind) == (name, offset, kind)
    assert not report.clean

    if policy is TRUNCATE:
        assert as_tuples(replay.entries) == expected(range(1, bad))
        assert first.action == "cut"
        assert replay.recovering
        assert replay.last_good_index == bad - 1
        assert replay.highest_index_seen == 12
        assert report.entries_dropped == 12 - bad  # readable entries after the bad one
        # Cut on disk: the damaged segment ends where the bad entry began; later ones are gone.
        assert os.path.getsize(path) == offset
        seg_no = int(name[4:12])
        assert all(not os.path.exists(seg_path(d, later)) for later in range(seg_no + 1, 4))
        assert report.segments_removed == [os.path.basename(seg_path(d, s)) for s in range(seg_no + 1, 4)]
        again = open_wal(d, policy)
        assert again.report.clean and as_tuples(again.entries) == expected(range(1, bad))
    else:
        assert as_tuples(replay.entries) == expected(i for i in ALL if i != bad)
        assert first.action == "skipped"
        assert not replay.recovering
        assert report.entries_skipped == 1 and report.entries_dropped == 0
        hole = report.findings[1]
        assert (hole.kind, hole.action, hole.index) == ("index-discontinuity", "kept", bad + 1)
        assert tree_digest(d) == before  # skipping changes nothing on disk
        if kind == "impossible-length":
            assert report.resynced == 1 and "resynchronised" in first.detail


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
@pytest.mark.parametrize("keep_bytes", [2, 10, 30])
def test_torn_tail_is_cut_under_every_policy(tmp_path, policy, keep_bytes):
    d = str(tmp_path)
    where_is = build_v2_log(d, LAYOUT)
    path, offset = where_is[12]
    os.truncate(path, offset + keep_bytes)
    replay = open_wal(d, policy)
    assert as_tuples(replay.entries) == expected(range(1, 12))
    assert replay.report.clean and not replay.recovering
    [finding] = replay.report.findings
    assert (finding.kind, finding.action, finding.offset, finding.length) == ("torn-tail", "cut", offset, keep_bytes)
    assert os.path.getsize(path) == offset


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_zero_filled_tail_is_cut_under_every_policy(tmp_path, policy):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    path = seg_path(d, 3)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    replay = open_wal(d, policy)
    assert as_tuples(replay.entries) == expected(ALL)
    [finding] = replay.report.findings
    assert (finding.kind, finding.action, finding.offset) == ("zero-filled-tail", "cut", size)
    assert replay.report.clean
    assert os.path.getsize(path) == size


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_partial_entry_followed_by_zeros_is_a_torn_tail(tmp_path, policy):
    d = str(tmp_path)
    where_is = build_v2_log(d, LAYOUT)
    path, offset = where_is[12]
    frame = v2_frame(*entry(12))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(frame[:14] + b"\0" * (len(frame) - 14 + 100))  # header made it, the rest did not
    replay = open_wal(d, policy)
    assert as_tuples(replay.entries) == expected(range(1, 12))
    assert [f.kind for f in replay.report.findings] == ["torn-tail"]
    assert os.path.getsize(path) == offset


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_zeros_in_a_middle_segment_are_corruption(tmp_path, policy):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    path = seg_path(d, 2)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 64)
    before = tree_digest(d)
    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError, match=f"wal-00000002.seg at byte offset {size}"):
            WAL.open(d, policy)
        assert tree_digest(d) == before
        return
    replay = open_wal(d, policy)
    first = replay.report.findings[0]
    assert (first.kind, first.offset) == ("impossible-length", size)
    assert "zero bytes" in first.detail
    if policy is TRUNCATE:
        assert as_tuples(replay.entries) == expected(range(1, 9))
        assert replay.report.entries_dropped == 4 and replay.highest_index_seen == 12
        assert os.path.getsize(path) == size and not os.path.exists(seg_path(d, 3))
    else:
        assert as_tuples(replay.entries) == expected(ALL)  # the zeros held no entry
        assert first.action == "skipped"


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_bad_header_in_a_middle_segment(tmp_path, policy):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    flip(seg_path(d, 2), 0, 0xFF)
    before = tree_digest(d)
    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError, match="wal-00000002.seg at byte offset 0: bad-header"):
            WAL.open(d, policy)
        assert tree_digest(d) == before
        return
    replay = open_wal(d, policy)
    first = replay.report.findings[0]
    assert (first.segment, first.kind) == ("wal-00000002.seg", "bad-header")
    if policy is TRUNCATE:
        assert as_tuples(replay.entries) == expected(range(1, 5))
        assert not os.path.exists(seg_path(d, 2)) and not os.path.exists(seg_path(d, 3))
        assert replay.recovering and replay.highest_index_seen == 12
    else:
        assert as_tuples(replay.entries) == expected([1, 2, 3, 4, 9, 10, 11, 12])
        assert first.action == "skipped"
        assert tree_digest(d) == before


def test_segment_id_mismatch_is_a_bad_header(tmp_path):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    os.replace(seg_path(d, 3), seg_path(d, 4))  # header still says 3
    with pytest.raises(CorruptionRefusedError, match="header says segment id 3"):
        scan_wal(d, REFUSE)


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_missing_middle_segment_is_an_index_discontinuity(tmp_path, policy):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    os.remove(seg_path(d, 2))
    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError, match="index-discontinuity"):
            WAL.open(d, policy)
        return
    replay = open_wal(d, policy)
    first = replay.report.findings[0]
    assert (first.kind, first.segment, first.offset, first.index) == (
        "index-discontinuity", "wal-00000003.seg", 12, 9)
    if policy is TRUNCATE:
        assert as_tuples(replay.entries) == expected(range(1, 5))
        assert replay.recovering and replay.highest_index_seen == 12
    else:
        assert as_tuples(replay.entries) == expected([1, 2, 3, 4, 9, 10, 11, 12])
        assert first.action == "kept"


@pytest.mark.parametrize("policy", [TRUNCATE, ALERT])
def test_index_going_backwards_is_never_replayed(tmp_path, policy):
    d = str(tmp_path)
    write_segment(d, 1, 2, [v2_frame(*entry(i)) for i in (1, 2, 3)])
    write_segment(d, 2, 2, [v2_frame(*entry(i)) for i in (2, 3, 4)])  # stale copy
    replay = open_wal(d, policy)
    assert [e.index for e in replay.entries][:3] == [1, 2, 3]
    assert sorted({e.index for e in replay.entries}) == [e.index for e in replay.entries]
    assert replay.report.findings[0].kind == "index-discontinuity"
    if policy is ALERT:
        assert [e.index for e in replay.entries] == [1, 2, 3, 4]


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_torn_header_of_last_segment_is_removed(tmp_path, policy):
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    with open(seg_path(d, 4), "wb") as f:
        f.write(b"\x32\x4c\x41")  # crash right after creating segment 4
    wal, replay = WAL.open(d, policy)
    assert as_tuples(replay.entries) == expected(ALL)
    assert [(f.kind, f.segment) for f in replay.report.findings] == [("torn-tail", "wal-00000004.seg")]
    assert not os.path.exists(seg_path(d, 4))
    size = os.path.getsize(seg_path(d, 3))
    wal.append([WalEntry(*entry(13))], sync=True)  # goes on in segment 3
    wal.close()
    assert os.path.getsize(seg_path(d, 3)) == size + len(v2_frame(*entry(13)))


def test_hostile_length_is_bounded(tmp_path):
    """A huge entry_len followed by megabytes of junk: no big allocation, the scan gives up
    after its window, and the next segment is still read."""
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    path = seg_path(d, 2)
    junk = bytes((i * 131 + 7) % 251 for i in range(3 * 1024 * 1024))
    with open(path, "r+b") as f:
        f.seek(12)
        f.write(b"\xf0\xff\xff\xff" + junk)
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        scan = scan_wal(d, ALERT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * size
    assert [e.index for e in scan.entries] == [1, 2, 3, 4, 9, 10, 11, 12]
    first = scan.report.findings[0]
    assert (first.kind, first.offset, first.action) == ("impossible-length", 12, "skipped")
    assert "rest of segment skipped" in first.detail
    assert first.length == size - 12


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_unreadable_end_of_last_segment(tmp_path, policy):
    """An impossible length that is not a crash tail (the bytes after it are not a partial
    entry): corruption; under AlertAndContinue new entries go to a fresh segment."""
    d = str(tmp_path)
    where_is = build_v2_log(d, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]])
    path, offset = where_is[11]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x05\x00\x00\x00")
    before = tree_digest(d)
    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError, match="impossible-length"):
            WAL.open(d, policy)
        assert tree_digest(d) == before
        return
    wal, replay = WAL.open(d, policy)
    assert replay.report.findings[0].kind == "impossible-length"
    assert as_tuples(replay.entries) == expected(range(1, 11))
    wal.append([WalEntry(*entry(11, term=2))], sync=True)
    wal.close()
    if policy is ALERT:
        assert os.path.exists(seg_path(d, 4))  # not appended after the unreadable bytes
    _wal, again = WAL.open(d, policy)
    assert as_tuples(again.entries) == expected(range(1, 11)) + [entry(11, term=2)]
    _wal.close()


def test_truncate_report_round_trips_to_json(tmp_path):
    import json
    d = str(tmp_path)
    where_is = build_v2_log(d, LAYOUT)
    path, offset = where_is[6]
    flip(path, offset + 30)
    report = scan_wal(d, TRUNCATE).report
    data = json.loads(json.dumps(report.to_dict()))
    assert data["policy"] == "truncate-to-last-good" and data["recovering"] is True
    assert data["findings"][0]["kind"] == "crc-mismatch" and data["findings"][0]["action"] == "cut"
    assert data["entries_kept"] == 5 and data["entries_dropped"] == 6 and data["last_good_index"] == 5
    assert data["segments_removed"] == ["wal-00000003.seg"]
    assert "crc-mismatch" in report.summary()


@pytest.mark.parametrize("policy", list(CorruptionPolicy))
def test_segment_emptied_to_its_header_is_lost_data(tmp_path, policy):
    """Segment 1 truncated to its header: without a check the log would silently start at 5."""
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    os.truncate(seg_path(d, 1), 12)
    before = tree_digest(d)
    if policy is REFUSE:
        with pytest.raises(CorruptionRefusedError, match="wal-00000001.seg at byte offset 12: empty-segment"):
            WAL.open(d, policy)
        assert tree_digest(d) == before
        return
    replay = open_wal(d, policy)
    assert replay.report.findings[0].kind == "empty-segment"
    if policy is TRUNCATE:
        assert replay.entries == [] and replay.recovering and replay.highest_index_seen == 12
        assert os.listdir(d) == ["wal-00000001.seg"]  # the writer's fresh segment
    else:
        assert as_tuples(replay.entries) == expected(range(5, 13))


def test_cut_that_empties_a_segment_removes_it(tmp_path):
    """So the writer never leaves an empty segment before a newer one."""
    d = str(tmp_path)
    where_is = build_v2_log(d, LAYOUT)
    path, offset = where_is[9]
    assert offset == 12
    flip(path, offset + 30)
    wal, replay = WAL.open(d, TRUNCATE)
    assert [e.index for e in replay.entries] == list(range(1, 9))
    assert replay.report.segments_removed == ["wal-00000003.seg"]
    wal.append([WalEntry(*entry(9, term=2))], sync=True)
    wal.close()
    again = scan_wal(d, REFUSE)
    assert again.report.clean and [e.index for e in again.entries] == list(range(1, 10))


@pytest.mark.parametrize("policy", [TRUNCATE, ALERT])
def test_oversized_segment_file_is_not_read(tmp_path, policy):
    """A (sparse) segment file bigger than any writer makes is reported, never loaded."""
    from ukehi.storage.format import MAX_SEGMENT_FILE
    d = str(tmp_path)
    build_v2_log(d, LAYOUT)
    os.truncate(seg_path(d, 2), MAX_SEGMENT_FILE + 1)
    tracemalloc.start()
    try:
        scan = scan_wal(d, policy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    first = scan.report.findings[0]
    assert (first.segment, first.kind) == ("wal-00000002.seg", "bad-header")
    assert "more than any writer makes" in first.detail
    if policy is TRUNCATE:
        assert [e.index for e in scan.entries] == [1, 2, 3, 4]
    else:
        assert [e.index for e in scan.entries] == [1, 2, 3, 4, 9, 10, 11, 12]
