"""LazyFS (harness/lazyfs): un-fsynced writes are lost at a drop, fsynced ones are not.

Mounts the real FUSE file system in a temp dir (root and /dev/fuse needed) and drives it
with the node's own WAL, as the lazyfs nemesis does with a running node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from harness.lazyfs.mount import LazyMount, fuse_support
from ukehi.storage import WAL, WalEntry, scan_wal

_ok, _why = fuse_support()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not _ok, reason=f"LazyFS cannot run here: {_why}")]


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyMount]:
    mount = LazyMount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "lazyfs.log")
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()
    assert not os.path.ismount(tmp_path / "mnt")


def test_unfsynced_file_data_is_lost_and_fsynced_data_kept(lazy: LazyMount) -> None:
    path = lazy.mountpoint / "f"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.write(fd, b"+volatile")
    os.close(fd)
    assert path.read_bytes() == b"durable+volatile"  # readers see the page cache
    assert (lazy.backing / "f").read_bytes() == b"durable"  # the disk does not, yet
    record = lazy.drop()
    assert path.read_bytes() == b"durable"
    assert record["lost"] == {"/f": {"bytes": 9, "length_changed": True}} and record["drops"] == 1


def test_the_wal_keeps_synced_batches_and_loses_the_unsynced_tail(lazy: LazyMount) -> None:
    directory = str(lazy.mountpoint / "wal")
    wal, _ = WAL.open(directory)
    wal.append([WalEntry(1, i, b"cmd%d" % i, 0) for i in (1, 2, 3)], sync=True)
    wal.append([WalEntry(1, i, b"cmd%d" % i, 0) for i in (4, 5)])  # what lost-unfsynced acks
    assert [e.index for e in scan_wal(directory).entries] == [1, 2, 3, 4, 5]
    lazy.drop()  # the power cut (the WAL object stands for the killed process: not used again)
    os.close(wal._fd)  # type: ignore[arg-type]
    assert [e.index for e in scan_wal(directory).entries] == [1, 2, 3]


def test_renames_carry_unsynced_data_and_a_truncation_is_undone_by_a_drop(lazy: LazyMount) -> None:
    tmp = lazy.mountpoint / "hs.tmp"
    tmp.write_bytes(b"state-1")
    fd = os.open(tmp, os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, lazy.mountpoint / "hs")
    assert (lazy.mountpoint / "hs").read_bytes() == b"state-1"
    os.truncate(lazy.mountpoint / "hs", 2)
    assert (lazy.mountpoint / "hs").read_bytes() == b"st"
    lazy.drop()
    assert (lazy.mountpoint / "hs").read_bytes() == b"state-1"
