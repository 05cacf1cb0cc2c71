"""LazyFS (harness/lazyfs): un-fsynced writes are lost at a drop, fsynced ones are not.

Mounts the real FUSE file system in a temp dir (root and /dev/fuse needed) and drives it
with the node's own WAL, then with a real one-node cluster: a power cut after acknowledged
writes loses some of them with the lost-unfsynced bug and none without it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.backends.process import proc_stat
from harness.lazyfs.mount import LazyMount, fuse_support
from ukehi.bugs import ENV_VAR
from ukehi.client import UkehiClient
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


# ---------------------------------------------------------------- a real node on LazyFS

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _put_until_acked(address: str, values: range, deadline: float) -> int:
    """Put each value under key k (waiting for a leader first); the last acknowledged one."""
    last = -1
    async with UkehiClient([address], timeout=2.0) as client:
        for value in values:
            while True:
                result = await client.put("k", value)
                if result.ok:
                    last = value
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"put {value} never acknowledged: {result}")
                await asyncio.sleep(0.1)
    return last


async def _get(address: str, deadline: float) -> object:
    async with UkehiClient([address], timeout=2.0) as client:
        while True:
            result = await client.get("k")
            if result.ok:
                return result.value
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to get after the restart: {result}")
            await asyncio.sleep(0.1)


def _power_cut_after_writes(lazy: LazyMount, bug: str | None) -> tuple[int, object, dict]:
    """One-node cluster on LazyFS: 20 acked puts, kill -9 at once, drop, restart, read."""
    port = _free_port()
    argv = [sys.executable, "-m", "ukehi.cli", "node", "--id", "n1", "--listen", f"127.0.0.1:{port}",
            "--peers", f"n1=127.0.0.1:{port}", "--data-dir", str(lazy.mountpoint / "data"),
            "--election-timeout", "150:300", "--heartbeat", "50", "--insecure"]  # plain TCP: WAL under test
    env = dict(os.environ)
    if bug:
        argv += ["--unsafe-bug", bug]
        env[ENV_VAR] = "1"
    log = open(lazy.mountpoint.parent / "node.log", "ab")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        acked = asyncio.run(_put_until_acked(f"127.0.0.1:{port}", range(1, 21), time.monotonic() + 60))
        procs[0].kill()  # within a millisecond of the last ack, long before the 1 s background fsync
        procs[0].wait(10)
        record = lazy.drop()
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        value = asyncio.run(_get(f"127.0.0.1:{port}", time.monotonic() + 60))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log.close()
    return acked, value, record


def test_a_power_cut_loses_acknowledged_writes_only_with_lost_unfsynced(lazy: LazyMount) -> None:
    acked, value, record = _power_cut_after_writes(lazy, "lost-unfsynced")
    assert acked == 20
    assert record["lost_bytes"] > 0, record
    assert value != 20, f"the last acknowledged write survived the power cut: {record}"


def test_the_correct_node_keeps_every_acknowledged_write_through_a_power_cut(lazy: LazyMount) -> None:
    acked, value, record = _power_cut_after_writes(lazy, None)
    assert acked == 20 and value == 20, record


def test_cleanup_unmounts_what_a_killed_harness_left_mounted(tmp_path: Path) -> None:
    """A harness SIGKILLed mid-run leaves its LazyFS mounted and its daemon running;
    `ukehi-jepsen cleanup` unmounts it and stops the daemon, and leaves live harnesses' alone."""
    mnt = tmp_path / "mnt"
    harness = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from harness.lazyfs.mount import LazyMount\n"
         "m = LazyMount(Path(sys.argv[1]) / 'backing', Path(sys.argv[1]) / 'mnt', Path(sys.argv[1]) / 'log')\n"
         "m.mount()\n"
         "print(m.proc.pid, flush=True)\n"
         "time.sleep(120)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        daemon = int(harness.stdout.readline())
        assert os.path.ismount(mnt)
        cleanup = [sys.executable, "-m", "harness.cli", "cleanup"]
        done = subprocess.run(cleanup, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and str(mnt) not in done.stdout, done.stdout + done.stderr
        assert os.path.ismount(mnt)  # its harness is alive: untouched
    finally:
        harness.kill()
        harness.wait()
    assert os.path.ismount(mnt)  # a SIGKILLed harness unmounts nothing
    done = subprocess.run(cleanup, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"lazyfs mount {mnt} (daemon {daemon};" in done.stdout, done.stdout
    assert not os.path.ismount(mnt)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (stat := proc_stat(daemon)) is not None and stat[0] != "Z":
        time.sleep(0.1)
    stat = proc_stat(daemon)
    assert stat is None or stat[0] == "Z", "the daemon still runs"
