"""Writer behaviour: rotation, group commit, truncation, compaction, crash safety."""

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ukehi.storage import WAL, CorruptionPolicy, StorageError, WalBrokenError, WalEntry, scan_wal
from ukehi.storage.format import HEADER_SIZE

from walfiles import FsyncCounter, as_tuples, entry, header, seg_path


def entries(lo, hi, term=1):
    return [WalEntry(*entry(i, term=term)) for i in range(lo, hi)]


def test_rotation_at_size_limit(tmp_path):
    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=4096)
    frame_len = len(WalEntry(*entry(1)).command) + 36  # close enough: commands vary by a byte
    wal.append(entries(1, 301), sync=True)
    wal.close()
    names = sorted(os.listdir(d))
    assert len(names) >= 300 * frame_len // 4096
    for name in names:
        assert os.path.getsize(os.path.join(d, name)) <= 4096
        with open(os.path.join(d, name), "rb") as f:
            assert f.read(HEADER_SIZE) == header(2, int(name[4:12]))
    _wal, replay = WAL.open(d, segment_size=4096)
    assert as_tuples(replay.entries) == as_tuples(entries(1, 301))
    _wal.close()


def test_entry_larger_than_segment_gets_its_own_segment(tmp_path):
    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=4096)
    big = WalEntry(1, 2, b"z" * 10000, 0)
    wal.append([WalEntry(1, 1, b"a", 0), big, WalEntry(1, 3, b"b", 0)], sync=True)
    wal.close()
    assert wal.segment_names == ["wal-00000001.seg", "wal-00000002.seg", "wal-00000003.seg"]
    _wal, replay = WAL.open(d, segment_size=4096)
    assert replay.entries[1] == big and len(replay.entries) == 3
    _wal.close()


def test_group_commit_one_fsync_per_batch(tmp_path, monkeypatch):
    wal, _ = WAL.open(str(tmp_path))
    counter = FsyncCounter(monkeypatch)
    wal.append(entries(1, 257), sync=True)
    assert (counter.files, counter.dirs) == (1, 0)
    counter.reset()
    wal.append(entries(257, 260))
    wal.append(entries(260, 270))
    assert counter.files == 0  # not durable yet: no fsync until sync()
    wal.sync()
    assert counter.files == 1
    wal.sync()  # nothing pending
    assert counter.files == 1
    wal.close()


def test_new_segment_fsyncs_file_and_directory(tmp_path, monkeypatch):
    counter = FsyncCounter(monkeypatch)
    wal, _ = WAL.open(str(tmp_path), segment_size=4096)
    assert counter.dirs >= 1  # the first segment's directory entry
    counter.reset()
    wal.append(entries(1, 200), sync=True)  # crosses several segments
    rotations = len(wal.segment_names) - 1
    assert rotations >= 2
    assert counter.dirs == rotations
    # Each rotation: fsync the sealed segment, fsync the new header; plus the final sync.
    assert counter.files == 2 * rotations + 1
    wal.close()


def test_failed_fsync_breaks_the_wal(tmp_path, monkeypatch):
    wal, _ = WAL.open(str(tmp_path))

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(WalBrokenError, match="restart"):
        wal.append(entries(1, 3), sync=True)
    monkeypatch.undo()
    with pytest.raises(WalBrokenError, match="unusable"):
        wal.append(entries(3, 4))
    with pytest.raises(WalBrokenError):
        wal.sync()


def test_append_must_continue_the_log(tmp_path):
    wal, _ = WAL.open(str(tmp_path))
    wal.append(entries(5, 8))
    with pytest.raises(ValueError, match="expected 8"):
        wal.append(entries(9, 10))
    with pytest.raises(ValueError, match="truncate_from"):
        wal.append(entries(6, 7))
    wal.close()


@pytest.mark.parametrize("cut", [1, 2, 40, 41, 42, 99, 100])
def test_truncate_from_then_overwrite(tmp_path, cut):
    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=4096)
    wal.append(entries(1, 101), sync=True)
    wal.truncate_from(cut)
    assert wal.last_index == (cut - 1 if cut > 1 else None)
    wal.append(entries(cut, cut + 5, term=2), sync=True)
    wal.close()
    _wal, replay = WAL.open(d, segment_size=4096)
    assert as_tuples(replay.entries) == as_tuples(entries(1, cut) + entries(cut, cut + 5, term=2))
    assert replay.report.clean
    _wal.close()


def test_truncate_beyond_end_is_a_no_op(tmp_path):
    wal, _ = WAL.open(str(tmp_path))
    wal.append(entries(1, 4), sync=True)
    wal.truncate_from(10)
    assert wal.last_index == 3
    wal.close()


def test_reset_allows_a_new_start_index(tmp_path):
    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=4096)
    wal.append(entries(1, 100), sync=True)
    wal.reset()
    assert wal.first_index is None and wal.last_index is None
    wal.append(entries(500, 503), sync=True)
    wal.close()
    _wal, replay = WAL.open(d)
    assert [e.index for e in replay.entries] == [500, 501, 502]
    _wal.close()


def test_compact_to_removes_whole_old_segments_only(tmp_path, monkeypatch):
    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=4096)
    wal.append(entries(1, 201), sync=True)
    before = len(wal.segment_names)
    counter = FsyncCounter(monkeypatch)
    wal.compact_to(120)
    assert counter.dirs == 1
    first = wal.first_index
    assert first is not None and first <= 121  # entry 121 must survive
    assert len(wal.segment_names) < before
    wal.compact_to(10_000)  # never removes the newest segment
    assert len(wal.segment_names) == 1 and wal.last_index == 200
    wal.close()
    _wal, replay = WAL.open(d, segment_size=4096)
    assert replay.entries[-1].index == 200 and replay.report.clean
    _wal.close()


class SimulatedCrash(Exception):
    pass


def crash_after(monkeypatch, steps):
    """Make the ``steps``-th disk-changing call (remove, ftruncate, fsync) raise SimulatedCrash."""
    count = {"n": 0}

    def wrap(fn):
        def inner(*args, **kwargs):
            count["n"] += 1
            if count["n"] > steps:
                raise SimulatedCrash()
            return fn(*args, **kwargs)
        return inner

    for name in ("remove", "ftruncate", "fsync"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    return count


@pytest.mark.parametrize("cut", [30, 75])
def test_truncation_crash_at_every_step_leaves_a_prefix(tmp_path, monkeypatch, cut):
    """Crash after each step of truncate_from: replay is a prefix of the old log, never a mix,
    and finishing the truncation afterwards gives exactly old[:cut] + new."""
    old = entries(1, 101)
    steps = 0
    while True:
        d = str(tmp_path / f"run{steps}")
        wal, _ = WAL.open(d, segment_size=2048)
        wal.append(old, sync=True)
        with monkeypatch.context() as m:
            crash_after(m, steps)
            try:
                wal.truncate_from(cut)
                completed = True
            except SimulatedCrash:
                completed = False
        if not completed:
            for fd_owner in (wal,):  # the crashed process's fd would be closed by the OS
                if fd_owner._fd is not None:
                    os.close(fd_owner._fd)
        wal2, replay = WAL.open(d, segment_size=2048)
        got = as_tuples(replay.entries)
        assert got == as_tuples(old[: len(got)]), f"crash after step {steps}: not a prefix"
        assert len(got) >= cut - 1, f"crash after step {steps}: lost entries before the cut"
        wal2.truncate_from(cut)
        new = entries(cut, cut + 3, term=2)
        wal2.append(new, sync=True)
        wal2.close()
        _w, replay = WAL.open(d, segment_size=2048)
        assert as_tuples(replay.entries) == as_tuples(old[: cut - 1] + new)
        _w.close()
        if completed:
            break
        steps += 1
    assert steps >= 3  # removals, directory fsync, cut and file fsync were all interrupted


def test_torn_tail_is_cut_on_disk_before_appending(tmp_path):
    d = str(tmp_path)
    wal, _ = WAL.open(d)
    wal.append(entries(1, 6), sync=True)
    wal.close()
    path = seg_path(d, 1)
    size = os.path.getsize(path)
    os.truncate(path, size - 5)  # the last entry lost its tail in a crash
    wal, replay = WAL.open(d)
    assert [e.index for e in replay.entries] == [1, 2, 3, 4]
    last_frame = len(entries(5, 6)[0].command) + 36
    assert os.path.getsize(path) == size - last_frame
    wal.append(entries(5, 7, term=2), sync=True)
    wal.close()
    _w, replay = WAL.open(d)
    assert replay.report.clean and replay.report.findings == []
    assert as_tuples(replay.entries) == as_tuples(entries(1, 5) + entries(5, 7, term=2))
    _w.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="segment_size"):
        WAL.open(str(tmp_path), segment_size=10)
    with pytest.raises(ValueError, match="unknown corruption policy"):
        WAL.open(str(tmp_path), policy="yolo")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        WAL.open(str(tmp_path / "afile"))
    with pytest.raises(StorageError, match="does not exist"):
        WAL.open(str(tmp_path / "missing"), create=False)
    wal, _ = WAL.open(str(tmp_path / "w"))
    with pytest.raises(ValueError):
        wal.truncate_from(-1)
    with pytest.raises(ValueError):
        wal.compact_to("3")
    wal.close()
    with pytest.raises(StorageError, match="closed"):
        wal.append(entries(1, 2))


def test_policy_spellings():
    for text in ("truncate-to-last-good", "TruncateToLastGood", "truncate_to_last_good"):
        assert CorruptionPolicy.parse(text) is CorruptionPolicy.TruncateToLastGood
    assert CorruptionPolicy.parse("refuse-start") is CorruptionPolicy.RefuseStart
    assert CorruptionPolicy.parse("AlertAndContinue") is CorruptionPolicy.AlertAndContinue
    with pytest.raises(ValueError, match="refuse-start"):
        CorruptionPolicy.parse("refuse")


# -- property: random appends, truncations, compactions and reopens match a list model --

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 400), st.just(False)),
    st.tuples(st.just("compact"), st.integers(0, 400), st.just(False)),
    st.tuples(st.just("reopen"), st.just(0), st.just(False)),
), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_replay_matches_list_model(tmp_path_factory, ops):
    d = str(tmp_path_factory.mktemp("prop"))
    wal, _ = WAL.open(d, segment_size=4096)
    model: list[tuple] = []  # every entry the log holds, oldest first
    compacted = 0  # entries with index <= this may have been dropped by compaction
    term = 1
    for op, arg, sync in ops:
        if op == "append":
            start = model[-1][1] + 1 if model else 1
            batch = entries(start, start + arg, term=term)
            wal.append(batch, sync=sync)
            model += as_tuples(batch)
        elif op == "truncate":
            if model and arg >= model[0][1]:
                wal.truncate_from(arg)
                model = [e for e in model if e[1] < arg]
                term += 1
        elif op == "compact":
            wal.compact_to(arg)
            compacted = max(compacted, arg)
        else:
            wal.close()
            wal, replay = WAL.open(d, segment_size=4096)
            got = as_tuples(replay.entries)
            assert replay.report.clean
            assert got == model[len(model) - len(got):]  # a suffix of the model...
            assert all(e[1] <= compacted for e in model[: len(model) - len(got)])  # ...losing only compacted
            model = got
    wal.close()
    got = as_tuples(scan_wal(d).entries)
    assert got == model[len(model) - len(got):]
    assert all(e[1] <= compacted for e in model[: len(model) - len(got)])


def test_append_and_compact_from_two_threads(tmp_path):
    """The node appends in one worker thread and compacts in another."""
    import threading

    d = str(tmp_path)
    wal, _ = WAL.open(d, segment_size=1024)
    errors = []

    def appender():
        try:
            for lo in range(1, 2001, 20):
                wal.append(entries(lo, lo + 20), sync=True)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    def compactor():
        try:
            for i in range(200):
                last = wal.last_index
                if last:
                    wal.compact_to(last // 2)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender), threading.Thread(target=compactor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wal.close()
    assert errors == []
    replay = scan_wal(d)
    assert replay.report.clean and replay.entries[-1].index == 2000
    got = as_tuples(replay.entries)
    assert got == as_tuples(entries(got[0][1], 2001))
