"""Writes/s of a sharded Ukehi cluster (issue 15) next to the unsharded one, on loopback.

    .venv/bin/python bench/sharded.py                       # 3 nodes; unsharded, 1, 4, 16 shards
    .venv/bin/python bench/sharded.py --nodes 5 --shards 1,16 --duration 5 --rounds 2
    .venv/bin/python bench/sharded.py --add-node --rounds 3  # movement: a 6th node joins 5, 16 shards

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

`--add-node` measures movement instead (issue 15: "adding a 6th node to 5 moves close to 1/6
of the shards and none between old nodes"): a running cluster of `--nodes` (default 5) nodes
and `--shards` (default 16) shards of replication factor 3 gets `--keys` keys written, then one
more node is started with `--join` and added (`add_node`); once the rebalance is done every
key is read back. Reported per round: how many shard replicas changed node between the map
before and after, how many went to the new node and how many between old nodes, against the
ideal (replicas / new node count), the replica moves the nodes logged (`move-done`, and
failed ones), what the partitioner's `plan()` predicted, and the seconds the rebalance took.
Placement depends only on the node names, so round 1 uses n1..n6 and each further round
another set of names (`r<round>x<i>`), to show the spread over node sets.
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


def start_node(base: str, name: str, port: int, peers: str, shards: int | None, rf: int,
               log_level: str = "warning", extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "ukehi.cli", "node", "--id", name, "--listen", f"127.0.0.1:{port}",
            "--peers", peers, "--data-dir", os.path.join(base, name), "--insecure",
            "--election-timeout", "300:600", "--heartbeat", "50", "--log-level", log_level, *extra]
    if shards is not None:
        argv += ["--shards", str(shards), "--replication-factor", str(rf)]
    log = open(os.path.join(base, f"{name}.log"), "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    finally:
        log.close()


def start_cluster(base: str, nodes: int, shards: int | None, names: list[str] | None = None,
                  log_level: str = "warning", extra: tuple[str, ...] = ()) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    names = names or [f"n{i + 1}" for i in range(nodes)]
    ports = [free_port() for _ in range(nodes)]
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(names, ports))
    procs = [start_node(base, n, p, peers, shards, min(3, nodes), log_level, extra) for n, p in zip(names, ports)]
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


def one(nodes: int, shards: int | None, inflight: int, duration: float, max_ops: int,
        value_size: int = 100) -> dict[str, Any]:
    """One layout: start `nodes` nodes (`shards` shards, None: unsharded), load them, stop them.
    Also the sharded cell of bench/throughput.py."""
    base = tempfile.mkdtemp(prefix="ukehi-sharded-bench-")
    procs, addresses = start_cluster(base, nodes, shards)
    try:
        asyncio.run(wait_ready(addresses))
        cpu0 = cpu_seconds([p.pid for p in procs])
        result = asyncio.run(load(addresses, inflight, duration, max_ops, "v" * value_size))
        cpu = cpu_seconds([p.pid for p in procs]) - cpu0
        result["cpu_ms_per_write"] = round(1000 * cpu / max(1, result["ok"]), 2)
        return result
    finally:
        stop(procs)
        shutil.rmtree(base, ignore_errors=True)


def add_node_round(rnd: int, nodes: int, shards: int, keys: int, max_moves: int) -> dict[str, Any]:
    """One movement measurement: `nodes` nodes and `shards` shards, then one node added."""
    from ukehi.shardmap import ShardMap, plan

    names = [f"n{i + 1}" for i in range(nodes + 1)] if rnd == 1 else [f"r{rnd}x{i + 1}" for i in range(nodes + 1)]
    old, new = names[:-1], names[-1]
    rf = min(3, nodes)
    base = tempfile.mkdtemp(prefix="ukehi-add-node-bench-")
    procs, addresses = start_cluster(base, nodes, shards, old, log_level="info",
                                     extra=("--max-moves", str(max_moves)))
    try:
        async def scenario() -> dict[str, Any]:
            await wait_ready(addresses)
            async with UkehiClient(addresses, timeout=10.0) as c:
                written = {f"key{i}": i for i in range(keys)}
                for k, v in written.items():
                    r = await c.put(k, v)
                    if not r.ok:
                        raise RuntimeError(f"put {k}: {r}")
                before = await c.rebalance_status()
                smap0 = c.shard_map
                assert before.ok and smap0 is not None
                port = free_port()
                peers = ",".join(f"{n}=127.0.0.1:{a.rsplit(':', 1)[1]}" for n, a in zip(old, addresses))
                procs.append(start_node(base, new, port, peers, shards, rf, "info",
                                        ("--join", "--max-moves", str(max_moves))))
                async with UkehiClient([f"127.0.0.1:{port}"], timeout=2.0) as probe:
                    for _ in range(100):
                        if (await probe.status(f"127.0.0.1:{port}", timeout=1.0)).ok:
                            break
                        await asyncio.sleep(0.2)
                t0 = time.monotonic()
                added = await c.add_node(new, f"127.0.0.1:{port}", timeout=20.0)
                if not added.ok:
                    raise RuntimeError(f"add_node: {added}")
                done = await c.wait_rebalanced(120.0)
                seconds = time.monotonic() - t0
                if not done.ok:
                    raise RuntimeError(f"rebalance: {done}")
                smap1 = c.shard_map
                assert smap1 is not None
                read_ok = 0
                for k, v in written.items():
                    r = await c.get(k)
                    read_ok += r.ok and r.value == v
            return {"smap0": smap0, "smap1": smap1, "seconds": seconds, "read_ok": read_ok,
                    "predicted": sum(len(m.add) for m in plan(smap0, list(old) + [new]))}

        out = asyncio.run(scenario())
    finally:
        stop(procs)
    logs = "".join(open(os.path.join(base, f"{n}.log"), encoding="utf-8", errors="replace").read() for n in names)
    shutil.rmtree(base, ignore_errors=True)
    smap0: ShardMap = out["smap0"]
    smap1: ShardMap = out["smap1"]
    to_new = between_old = 0
    touched = 0
    for s in range(shards):
        came = set(smap1.members[s]) - set(smap0.members[s])
        touched += bool(came)
        to_new += len(came & {new})
        between_old += len(came - {new})
    replicas = shards * rf
    moved = to_new + between_old
    return {"round": rnd, "nodes": nodes, "new_node": new, "shards": shards, "replicas": replicas,
            "moved": moved, "to_new": to_new, "between_old": between_old, "predicted": out["predicted"],
            "ideal": round(replicas / (nodes + 1), 2), "moved_fraction": round(moved / replicas, 3),
            "shards_touched": touched, "move_done_logged": logs.count("event=move-done "),
            "move_failed_logged": logs.count("event=move-failed "), "epochs": smap1.epoch - smap0.epoch,
            "rebalance_s": round(out["seconds"], 2), "keys": keys, "keys_read_ok": out["read_ok"]}


def add_node_main(args: argparse.Namespace) -> int:
    nodes = args.nodes if args.nodes_given else 5
    try:
        shards = int(args.shards) if args.shards_given else 16
    except ValueError:
        print(f"bench/sharded.py --add-node: --shards {args.shards!r}: give one shard count", file=sys.stderr)
        return 254
    rf = min(3, nodes)
    print(f"adding node {nodes + 1} to {nodes} nodes, {shards} shards of replication factor {rf} "
          f"({shards * rf} replicas; ideal move: {shards * rf}/{nodes + 1} = {shards * rf / (nodes + 1):.2f}), "
          f"--max-moves {args.max_moves}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'round':>5} {'moved':>6} {'to new':>7} {'old->old':>8} {'ideal':>6} {'fraction':>8} {'predicted':>9} "
          f"{'shards':>6} {'logged':>6} {'failed':>6} {'seconds':>7} {'keys ok':>9}")
    rows = []
    for rnd in range(1, args.rounds + 1):
        r = add_node_round(rnd, nodes, shards, args.keys, args.max_moves)
        rows.append(r)
        print(f"{rnd:>5} {r['moved']:>6} {r['to_new']:>7} {r['between_old']:>8} {r['ideal']:>6} "
              f"{r['moved_fraction']:>8} {r['predicted']:>9} {r['shards_touched']:>6} {r['move_done_logged']:>6} "
              f"{r['move_failed_logged']:>6} {r['rebalance_s']:>7} {r['keys_read_ok']:>4}/{r['keys']:<4}", flush=True)
    total = sum(r["moved"] for r in rows)
    print(json.dumps({"bench": "sharded-add-node", "nodes": nodes, "shards": shards, "replication_factor": rf,
                      "max_moves": args.max_moves, "ideal_fraction": round(1 / (nodes + 1), 3),
                      "mean_moved_fraction": round(total / sum(r["replicas"] for r in rows), 3),
                      "between_old_total": sum(r["between_old"] for r in rows),
                      "load_average_end": round(os.getloadavg()[0], 1), "rows": rows}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=None, help="nodes (default 3; 5 with --add-node)")
    ap.add_argument("--shards", default=None, help="layouts: none (unsharded) or a shard count (default "
                    "none,1,4,16; one count, default 16, with --add-node)")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--max-ops", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--add-node", action="store_true", help="measure movement: add one node to a running cluster")
    ap.add_argument("--keys", type=int, default=200, help="--add-node: keys written before and read after")
    ap.add_argument("--max-moves", type=int, default=2, help="--add-node: replica moves at once (the nodes' flag)")
    args = ap.parse_args(argv)
    args.nodes_given, args.shards_given = args.nodes is not None, args.shards is not None
    if args.add_node:
        return add_node_main(args)
    args.nodes = 3 if args.nodes is None else args.nodes
    args.shards = "none,1,4,16" if args.shards is None else args.shards
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
