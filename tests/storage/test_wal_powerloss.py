"""Power loss during truncate_from + append: replay never mixes the old and new logs.

A small model of what survives a power cut: a file's bytes as of its last fsync, and the
directory's names as of the last directory fsync (pessimistic: nothing unsynced survives).
After every disk call the WAL makes, the test builds that surviving image in a fresh
directory and replays it.
"""

import os
import stat

import pytest

from ukehi.storage import WAL, CorruptionPolicy, WalEntry, scan_wal

from walfiles import as_tuples, entry


def entries(lo, hi, term=1):
    return [WalEntry(*entry(i, term=term)) for i in range(lo, hi)]


class DurableView:
    def __init__(self, directory):
        self.dir = directory
        self.names = set(os.listdir(directory))
        self.content = {n: self._read(n) for n in self.names}

    def _read(self, name):
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def fsynced(self, fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if os.path.realpath(path) == os.path.realpath(self.dir):
                self.names = set(os.listdir(self.dir))
        elif os.path.dirname(os.path.realpath(path)) == os.path.realpath(self.dir):
            self.content[os.path.basename(path)] = self._read(os.path.basename(path))

    def image(self, target):
        os.makedirs(target)
        for name in self.names:
            with open(os.path.join(target, name), "wb") as f:
                f.write(self.content.get(name, b""))  # created but never fsynced: empty


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc to map fds to paths")
@pytest.mark.parametrize("cut", [3, 30])
def test_power_loss_at_every_step_of_truncate_and_append(tmp_path, monkeypatch, cut):
    d = str(tmp_path / "wal")
    old = entries(1, 51)
    new = entries(cut, cut + 30, term=2)
    wal, _ = WAL.open(d, segment_size=1024)
    wal.append(old, sync=True)

    view = DurableView(d)
    images = []
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        view.fsynced(fd)
        images.append(len(images))
        view.image(str(tmp_path / f"crash{len(images)}"))

    def after(fn):
        def inner(*args, **kwargs):
            result = fn(*args, **kwargs)
            images.append(len(images))
            view.image(str(tmp_path / f"crash{len(images)}"))
            return result
        return inner

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("remove", "ftruncate", "write"):
        monkeypatch.setattr(os, name, after(getattr(os, name)))
    wal.truncate_from(cut)
    wal.append(new[:15], sync=True)
    wal.append(new[15:], sync=True)
    monkeypatch.undo()
    wal.close()

    old_t, new_log = as_tuples(old), as_tuples(old[: cut - 1] + new)
    assert len(images) > 10
    for i in range(1, len(images) + 1):
        # RefuseStart: any sign of a mix (an index going back, a hole) raises.
        got = as_tuples(scan_wal(str(tmp_path / f"crash{i}"), CorruptionPolicy.RefuseStart).entries)
        is_old_prefix = got == old_t[: len(got)] and len(got) >= cut - 1
        is_new_prefix = got == new_log[: len(got)] and len(got) >= cut - 1
        assert is_old_prefix or is_new_prefix, f"power loss after step {i}: replay mixes old and new entries"
    # Once append(sync=True) returned, the new entries survive.
    final = as_tuples(scan_wal(str(tmp_path / f"crash{len(images)}")).entries)
    assert final == new_log


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc to map fds to paths")
def test_power_loss_while_truncate_to_last_good_cuts_at_open(tmp_path, monkeypatch):
    from walfiles import build_v2_log, flip

    d = str(tmp_path / "wal")
    where_is = build_v2_log(d, [list(range(1, 6)), list(range(6, 11)), list(range(11, 16))])
    path, offset = where_is[7]
    flip(path, offset + 30)
    old = as_tuples(entries(1, 16))
    view = DurableView(d)
    count = [0]
    real_fsync = os.fsync

    def snap():
        count[0] += 1
        view.image(str(tmp_path / f"crash{count[0]}"))

    def fsync(fd):
        real_fsync(fd)
        view.fsynced(fd)
        snap()

    def after(fn):
        def inner(*args, **kwargs):
            result = fn(*args, **kwargs)
            snap()
            return result
        return inner

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("remove", "ftruncate", "write"):
        monkeypatch.setattr(os, name, after(getattr(os, name)))
    wal, replay = WAL.open(d)
    new = entries(7, 12, term=2)
    wal.append(new, sync=True)
    monkeypatch.undo()
    wal.close()
    assert as_tuples(replay.entries) == old[:6]

    expected = old[:6] + as_tuples(new)
    assert count[0] >= 5
    for i in range(1, count[0] + 1):
        # Replaying the surviving image again (same policy) must give the good prefix,
        # possibly followed by a prefix of the new entries: never old entries after the cut.
        scan = scan_wal(str(tmp_path / f"crash{i}"))
        got = as_tuples(scan.entries)
        assert got == expected[: len(got)] and len(got) >= 6, f"power loss after step {i}"
        # The only damage ever seen is the original CRC error (or a crash tail), never a
        # reappeared old segment behind new entries, which the policy would also cut.
        assert {f.kind for f in scan.report.findings} <= {"crc-mismatch", "torn-tail", "zero-filled-tail"}
    assert as_tuples(scan_wal(str(tmp_path / f"crash{count[0]}")).entries) == expected
