"""Writes/s of a sharded Ukehi cluster (issue 15) next to the unsharded one, on loopback.

    .venv/bin/python bench/sharded.py                       # 3 nodes; unsharded, 1, 4, 16 shards
    .venv/bin/python bench/sharded.py --nodes 5 --shards 1,16 --duration 5 --rounds 2

For each layout, `--nodes` real `ukehi node` processes (fsync on, plain TCP: the layouts are
compared, not TLS), replication factor 3; once a leader serves every shard, a closed loop of
`--inflight` concurrent `put`s of 100-byte values over distinct keys (so they spread over the
shards) from one asyncio `UkehiClient` in this process, for `--duration` seconds or
`--max-ops` operations. Reported: committed writes/s, p50/p99 latency, and the CPU the node
processes used per write (user + system, /proc). Layouts run in turn, `--rounds` times, so
load from elsewhere on the machine falls on all of them; the table has each round, and the
last line is one JSON object with every figure.

On this 2-core machine every node process is one Python interpreter: more shards mean more
Raft groups (more heartbeats, more Ready loops, more fsyncs: one WAL per group) per process,
so a gain can come only from batching across groups, and a loss from their overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ukehi.client import UkehiClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster(base: str, nodes: int, shards: int | None) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ports = [free_port() for _ in range(nodes)]
    peers = ",".join(f"n{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    procs = []
    for i, port in enumerate(ports):
        argv = [sys.executable, "-m", "ukehi.cli", "node", "--id", f"n{i + 1}", "--listen", f"127.0.0.1:{port}",
                "--peers", peers, "--data-dir", os.path.join(base, f"n{i + 1}"), "--insecure",
                "--election-timeout", "300:600", "--heartbeat", "50", "--log-level", "warning"]
        if shards is not None:
            argv += ["--shards", str(shards), "--replication-factor", str(min(3, nodes))]
        log = open(os.path.join(base, f"n{i + 1}.log"), "wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True))
        log.close()
    return procs, [f"127.0.0.1:{p}" for p in ports]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(10)


async def wait_ready(addresses: list[str], timeout: float = 60.0) -> None:
    """Until every shard (or the one group) has a leader, then one write goes through."""
    deadline = time.monotonic() + timeout
    async with UkehiClient(addresses, timeout=2.0) as c:
        while time.monotonic() < deadline:
            sts = [r.value for r in (await c.cluster_status(timeout=1.0)).values() if r.ok]
            if sts and all(s.get("phase") == "running" for s in sts):
                if "shards" in sts[0]:
                    led = {int(k) for s in sts for k, g in s["shards"].items() if g["role"] == "leader"}
                    ready = led == set(range(int(sts[0]["shard_count"])))
                else:
                    ready = any(s.get("role") == "leader" for s in sts)
                if ready and (await c.put("warm-up", "x", timeout=5.0)).ok:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"cluster at {addresses} not ready in {timeout} s")


async def load(addresses: list[str], inflight: int, duration: float, max_ops: int, value: str) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    counter = iter(range(10**9))
    stop_at = time.monotonic() + duration
    async with UkehiClient(addresses, timeout=10.0) as c:
        async def worker() -> None:
            nonlocal failed
            while time.monotonic() < stop_at and len(latencies) + failed < max_ops:
                t0 = time.perf_counter()
                r = await c.put(f"k{next(counter)}", value)
                if r.ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed += 1
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
    return {"ok": len(latencies), "failed": failed, "seconds": round(elapsed, 2),
            "writes_per_s": round(len(latencies) / elapsed, 1), "p50_ms": round(pct(0.5), 2),
            "p99_ms": round(pct(0.99), 2)}


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def one(nodes: int, shards: int | None, inflight: int, duration: float, max_ops: int) -> dict[str, Any]:
    base = tempfile.mkdtemp(prefix="ukehi-sharded-bench-")
    procs, addresses = start_cluster(base, nodes, shards)
    try:
        asyncio.run(wait_ready(addresses))
        cpu0 = cpu_seconds([p.pid for p in procs])
        result = asyncio.run(load(addresses, inflight, duration, max_ops, "v" * 100))
        cpu = cpu_seconds([p.pid for p in procs]) - cpu0
        result["cpu_ms_per_write"] = round(1000 * cpu / max(1, result["ok"]), 2)
        return result
    finally:
        stop(procs)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--shards", default="none,1,4,16", help="layouts: none (unsharded) or a shard count")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--max-ops", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        layouts = [None if s.strip() == "none" else int(s) for s in args.shards.split(",") if s.strip()]
    except ValueError:
        print(f"bench/sharded.py: --shards {args.shards!r}: give none or shard counts, e.g. none,1,4,16",
              file=sys.stderr)
        return 254
    rows = []
    print(f"{args.nodes} nodes, replication factor {min(3, args.nodes)}, {args.inflight} puts in flight, "
          f"{args.duration:g} s per layout; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'round':>5} {'shards':>8} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/w':>9} {'failed':>7}")
    for rnd in range(1, args.rounds + 1):
        for shards in layouts:
            r = one(args.nodes, shards, args.inflight, args.duration, args.max_ops)
            r.update(round=rnd, shards=shards)
            rows.append(r)
            print(f"{rnd:>5} {('none' if shards is None else shards):>8} {r['writes_per_s']:>9} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8} {r['cpu_ms_per_write']:>9} {r['failed']:>7}", flush=True)
    print(json.dumps({"bench": "sharded", "nodes": args.nodes, "inflight": args.inflight,
                      "load_average_end": round(os.getloadavg()[0], 1), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
