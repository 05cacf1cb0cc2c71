"""WAL benchmark: group-commit append throughput and replay speed.

    .venv/bin/python bench/wal.py [--seconds 3] [--replay-entries 1000000] [--dir DIR]

Appends 100-byte commands with fsync on at batch sizes 1, 16 and 256 (each size runs
for at most --seconds and --max-entries), then builds a --replay-entries log and times
its replay (WAL.open, which reads, CRC-checks and decodes every entry). Prints a table,
then one JSON line with the figures as the last line. Run it on the disk you care about:
fsync cost is the disk's, and a tmpfs makes it meaningless (the table names the filesystem).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ukehi.storage import WAL, WalEntry  # noqa: E402
from ukehi.storage.scan import scan_wal  # noqa: E402

COMMAND = b"c" * 100


class CountingFsync:
    """Counts os.fsync calls made by the WAL (file and directory)."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = os.fsync

    def __enter__(self) -> "CountingFsync":
        def counting(fd: int) -> None:
            self.calls += 1
            self._real(fd)
        os.fsync = counting
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real


def bench_append(directory: str, batch_size: int, seconds: float, max_entries: int) -> dict:
    path = os.path.join(directory, f"append-{batch_size}")
    wal, _ = WAL.open(path)
    index = 1
    with CountingFsync() as fsyncs:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline and index <= max_entries:
            wal.append([WalEntry(1, i, COMMAND, i) for i in range(index, index + batch_size)], sync=True)
            index += batch_size
        elapsed = time.perf_counter() - start
    wal.close()
    shutil.rmtree(path)
    entries = index - 1
    return {"batch": batch_size, "entries": entries, "seconds": round(elapsed, 3),
            "entries_per_s": round(entries / elapsed), "fsyncs": fsyncs.calls,
            "fsyncs_per_s": round(fsyncs.calls / elapsed), "batches_per_fsync": round(entries / batch_size / max(fsyncs.calls, 1), 2)}


def bench_replay(directory: str, count: int) -> dict:
    path = os.path.join(directory, "replay")
    wal, _ = WAL.open(path)
    start = time.perf_counter()
    chunk = 10_000
    for lo in range(1, count + 1, chunk):
        wal.append([WalEntry(1, i, COMMAND, i) for i in range(lo, min(lo + chunk, count + 1))])
    wal.sync()
    wal.close()
    build = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    scan = scan_wal(path)
    elapsed = time.perf_counter() - start
    if len(scan.entries) != count or scan.entries[-1].index != count or not scan.report.clean:
        raise SystemExit(f"replay returned {len(scan.entries)} entries, expected {count}: benchmark invalid")
    del scan
    start = time.perf_counter()
    wal, replay = WAL.open(path)
    open_elapsed = time.perf_counter() - start
    wal.close()
    shutil.rmtree(path)
    return {"entries": count, "bytes": size, "segments": replay.report.segments,
            "build_seconds": round(build, 3), "replay_seconds": round(elapsed, 3),
            "replay_entries_per_s": round(count / elapsed), "replay_mb_per_s": round(size / elapsed / 1e6, 1),
            "open_seconds": round(open_elapsed, 3)}


def filesystem_of(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=True).stdout.splitlines()
        return out[1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time limit per batch size (default 3)")
    parser.add_argument("--max-entries", type=int, default=200_000, help="entry limit per batch size")
    parser.add_argument("--replay-entries", type=int, default=1_000_000, help="size of the replayed log")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir under /tmp)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.max_entries < 1 or args.replay_entries < 1:
        parser.error("--seconds, --max-entries and --replay-entries must be positive")
    base = tempfile.mkdtemp(prefix="ukehi-bench-wal-", dir=args.dir)
    try:
        fs = filesystem_of(base)
        appends = [bench_append(base, b, args.seconds, args.max_entries) for b in (1, 16, 256)]
        replay = bench_replay(base, args.replay_entries)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"WAL append, 100-byte commands, fsync per batch ({fs} at {os.path.dirname(base)})")
    print(f"{'batch':>6} {'entries':>9} {'seconds':>8} {'entries/s':>11} {'fsyncs/s':>9}")
    for row in appends:
        print(f"{row['batch']:>6} {row['entries']:>9} {row['seconds']:>8} {row['entries_per_s']:>11,} {row['fsyncs_per_s']:>9,}")
    print()
    print(f"WAL replay of {replay['entries']:,} entries ({replay['bytes'] / 1e6:.1f} MB, {replay['segments']} segments)")
    print(f"  scan (read, CRC, decode): {replay['replay_seconds']} s = {replay['replay_entries_per_s']:,} entries/s, "
          f"{replay['replay_mb_per_s']} MB/s")
    print(f"  WAL.open (scan + open for append): {replay['open_seconds']} s")
    print(json.dumps({"bench": "wal", "filesystem": fs, "append": appends, "replay": replay}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
