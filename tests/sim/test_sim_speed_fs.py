"""What the simulator's speed-ups must not change.

SimFS no longer copies a file at every fsync: it notes the synced length and copies the
synced bytes only before something changes them (an in-place write, a truncation, O_TRUNC).
A crash must still bring back exactly the bytes of the last fsync, however the file changed
since. The sim runner reads the exported node files once for the info-write resolution and
the white-box checkers; their verdicts must equal those of each reading on its own.
"""

from __future__ import annotations

import random

import pytest

from ukehi.sim.fs import SimFS


def _file(fs: SimFS, data: bytes) -> int:
    """/n/d/f holding ``data``, fsynced, with its directory entry durable; returns a fd."""
    fs.register_node("/n")
    fs.makedirs("/n/d")
    fd = fs.open("/n/d/f", fs.O_RDWR | fs.O_CREAT)
    fs.write(fd, data)
    fs.fsync(fd)
    fs.fsync(fs.open("/n/d", fs.O_RDONLY))
    return fd


def _after_crash(fs: SimFS) -> bytes:
    fs.crash("/n", random.Random(7), torn_probability=0.0)
    fs.revive("/n")
    rfd = fs.open("/n/d/f", fs.O_RDONLY)
    return fs.read(rfd, 1 << 20)


@pytest.mark.parametrize("change", ["overwrite-in-place", "truncate-below", "reopen-with-o-trunc", "append"])
def test_a_crash_brings_back_the_bytes_of_the_last_fsync(change: str):
    fs = SimFS()
    fd = _file(fs, b"0123456789")
    if change == "overwrite-in-place":
        fd2 = fs.open("/n/d/f", fs.O_RDWR)
        fs.write(fd2, b"XY")  # at offset 0, inside the synced bytes
    elif change == "truncate-below":
        fs.ftruncate(fd, 3)
        fs.write(fs.open("/n/d/f", fs.O_WRONLY | fs.O_APPEND), b"zz")
    elif change == "reopen-with-o-trunc":
        fs.write(fs.open("/n/d/f", fs.O_WRONLY | fs.O_TRUNC), b"new")
    else:
        fs.write(fs.open("/n/d/f", fs.O_WRONLY | fs.O_APPEND), b"-tail")
    assert _after_crash(fs) == b"0123456789"


def test_bytes_synced_after_an_in_place_change_survive_and_a_torn_append_keeps_a_prefix():
    fs = SimFS()
    fd = _file(fs, b"abcdef")
    fd2 = fs.open("/n/d/f", fs.O_RDWR)
    fs.write(fd2, b"XY")
    fs.fsync(fd2)  # "XYcdef" is now what a crash leaves
    fs.write(fs.open("/n/d/f", fs.O_WRONLY | fs.O_APPEND), b"0123456789")
    fs.crash("/n", random.Random(3), torn_probability=1.0)  # always torn: a prefix of the append
    fs.revive("/n")
    got = fs.read(fs.open("/n/d/f", fs.O_RDONLY), 100)
    assert got.startswith(b"XYcdef") and b"XYcdef0123456789".startswith(got) and len(got) > 6


def test_reading_the_node_files_once_gives_the_verdicts_of_reading_them_twice(monkeypatch: pytest.MonkeyPatch):
    import harness.sim.runner as runner
    from harness.sim.runner import SimSettings, run_seed

    # a kv seed (resolved info writes and every white-box checker) with WAL damage on the way
    settings = SimSettings(workload="kv", nemeses=("damage", "kill", "partition"), duration=4.0)
    shared = run_seed(3, settings)
    calls: list[object] = []
    real = runner._read_cluster

    def unshared(*args: object) -> None:
        calls.append(real(*args))
        return None  # each reader reads the files on its own, as before the sharing

    monkeypatch.setattr(runner, "_read_cluster", unshared)
    alone = run_seed(3, settings)
    assert calls and calls[0] is not None  # the shared read happened in the first run's place
    assert shared.digest == alone.digest

    def verdicts(r: object) -> dict[str, object]:
        out = {}
        for name, res in r.checkers.items():  # type: ignore[attr-defined]
            out[name] = {k: v for k, v in res.items() if "seconds" not in k and k not in ("explanation", "elapsed_s")}
        return out

    assert verdicts(shared) == verdicts(alone)
    assert "durability" in shared.checkers and shared.valid is True
