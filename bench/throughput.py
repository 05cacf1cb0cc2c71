"""Throughput and latency of a 3-node Ukehi cluster on loopback, next to PySyncObj.

    .venv/bin/python bench/throughput.py                 # both systems, 1/16/256 in flight
    .venv/bin/python bench/throughput.py --duration 3 --skip-pysyncobj

Ukehi: three `ukehi node` processes with fsync on (one fsync per Ready batch), driven by
asyncio clients (`ukehi.client`) in `--client-procs` processes over TCP; committed writes/s
and p50/p99 latency of `put` with 100-byte values at each in-flight level, then
linearizable (ReadIndex) reads/s.

PySyncObj (PyPI `pysyncobj`, `pip install -e .[bench]`): three processes with its file
journal (`journalFile`, an mmap that it never flushes, so no fsync), a replicated `set`
with the same value size, driven *inside* one of the node processes through callbacks with
the same number of calls in flight (PySyncObj has no client protocol; this spares it the
client network hop Ukehi pays). PySyncObj has no linearizable read, so reads are Ukehi-only.

The cost of TLS: the Ukehi figures are with mutual TLS (the node's default: a CA made for
the run, node certificates, a client certificate); a second cluster started with --insecure
(plain TCP) runs beside it, and every level alternates between the two (TLS, plain, plain,
TLS, half the duration each) so that load from elsewhere falls on both alike. The table
lists writes/s and p50 of both and their ratio (`--skip-insecure` leaves the second out).

Every level runs for `--duration` seconds or `--max-ops` operations, whichever comes first;
every process started here is killed on exit. Prints a table, then as the LAST line one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def summarize(latencies: list[float], ok: int, failed: int, elapsed: float) -> dict[str, Any]:
    latencies.sort()
    return {
        "ops_per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "ok": ok,
        "failed": failed,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "seconds": round(elapsed, 2),
    }


# ====================================================================== Ukehi
class Processes:
    """Children started by the bench; all killed on exit, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log_path: str) -> subprocess.Popen:
        log = open(log_path, "wb")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        self.procs = []


def make_certs(base: str, nodes: list[str]) -> str:
    """A CA for this bench under BASE/certs, a certificate per node and one for the clients."""
    from ukehi import certs

    d = os.path.join(base, "certs")
    certs.init_ca(d)
    certs.issue(d, "bench", "client", file_stem="client")
    for nid in nodes:
        certs.issue(d, nid, "node", out_dir=os.path.join(d, nid), file_stem="node", with_ca=True)
    return d


def client_tls(tls_dir: str | None) -> Any:
    """What a bench client presents: the bench's client certificate, or None (plain TCP)."""
    from ukehi.tls import ClientTLS

    return ClientTLS.from_dir(tls_dir) if tls_dir else None


def start_ukehi(procs: Processes, base: str, tls: bool = True) -> tuple[list[str], str | None]:
    """Three nodes; returns their addresses and the client TLS directory (None: --insecure)."""
    ports = [free_port() for _ in range(3)]
    nodes = [f"n{i + 1}" for i in range(3)]
    peers = ",".join(f"{nid}=127.0.0.1:{p}" for nid, p in zip(nodes, ports))
    os.makedirs(base, exist_ok=True)
    tls_dir = make_certs(base, nodes) if tls else None
    for nid, port in zip(nodes, ports):
        security = ["--tls-dir", os.path.join(tls_dir, nid)] if tls_dir else ["--insecure"]
        procs.start(
            [sys.executable, "-m", "ukehi.cli", "node", "--id", nid, "--listen", f"127.0.0.1:{port}",
             "--peers", peers, "--data-dir", os.path.join(base, nid), "--election-timeout", "300:600",
             "--heartbeat", "100", "--log-level", "warning", *security],
            os.path.join(base, f"{nid}.log"),
        )
    return [f"127.0.0.1:{p}" for p in ports], tls_dir


async def wait_ready(addresses: list[str], tls_dir: str | None, timeout: float = 30.0) -> None:
    from ukehi.client import UkehiClient

    deadline = time.monotonic() + timeout
    async with UkehiClient(addresses, timeout=2.0, connect_timeout=0.3, tls=client_tls(tls_dir)) as c:
        while time.monotonic() < deadline:
            r = await c.put("bench-warmup", "x")
            if r.ok:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the Ukehi cluster did not accept a write within 30 s; see the node logs")


async def _ukehi_load(addresses: list[str], op: str, inflight: int, duration: float, max_ops: int,
                      value: str, key_prefix: str, tls_dir: str | None = None) -> tuple[list[float], int, int, float]:
    from ukehi.client import UkehiClient

    lat: list[float] = []
    ok = failed = 0
    issued = 0
    async with UkehiClient(addresses, timeout=10.0, tls=client_tls(tls_dir)) as c:
        await c.put(f"{key_prefix}-probe", value)  # find the leader before timing
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop_at = start + duration

        async def worker(w: int) -> None:
            nonlocal ok, failed, issued
            i = 0
            while issued < max_ops and loop.time() < stop_at:
                issued += 1
                key = f"{key_prefix}-{w}-{i % 1000}"
                i += 1
                t0 = time.perf_counter()
                r = await (c.put(key, value) if op == "put" else c.get(key))
                lat.append(time.perf_counter() - t0)
                if r.ok:
                    ok += 1
                else:
                    failed += 1

        await asyncio.gather(*(worker(w) for w in range(inflight)))
        elapsed = loop.time() - start
    return lat, ok, failed, elapsed


def _client_proc(args: tuple, out: Any) -> None:
    lat, ok, failed, elapsed = asyncio.run(_ukehi_load(*args))
    out.put((lat, ok, failed, elapsed))


def ukehi_level(addresses: list[str], op: str, inflight: int, duration: float, max_ops: int,
                value: str, client_procs: int, tls_dir: str | None = None) -> dict[str, Any]:
    """Run one level, split over `client_procs` processes (one asyncio client each)."""
    procs_n = max(1, min(client_procs, inflight))
    per = [inflight // procs_n + (1 if i < inflight % procs_n else 0) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    workers = [
        ctx.Process(target=_client_proc,
                    args=((addresses, op, n, duration, max_ops // procs_n, value, f"{op}{inflight}p{i}", tls_dir),
                          q))
        for i, n in enumerate(per)
    ]
    for w in workers:
        w.start()
    results = [q.get(timeout=duration + 60) for _ in workers]
    for w in workers:
        w.join(10)
    lat = [x for r in results for x in r[0]]
    ok = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    elapsed = max(r[3] for r in results)
    return summarize(lat, ok, failed, elapsed)


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's figures from its interleaved parts: mean rate and p50, worst p99."""
    n = len(parts)
    return {
        "ops_per_s": round(sum(p["ops_per_s"] for p in parts) / n, 1),
        "ok": sum(p["ok"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "p50_ms": round(sum(p["p50_ms"] for p in parts) / n, 2),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "seconds": round(sum(p["seconds"] for p in parts), 2),
    }


def bench_ukehi(levels: list[int], duration: float, max_ops: int, value_size: int,
                client_procs: int, insecure_too: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TLS cluster's figures, and (INSECURE_TOO) a plain-TCP cluster's from the same run.

    Both clusters are up at once and each level alternates between them (TLS, plain, plain,
    TLS; half the duration each), so load from elsewhere on a shared machine falls on both
    alike; a level's figures are the mean of its two halves.
    """
    procs = Processes()
    base = tempfile.mkdtemp(prefix="ukehi-bench-")
    try:
        clusters = {"tls": start_ukehi(procs, os.path.join(base, "tls"), True)}
        if insecure_too:
            clusters["plain"] = start_ukehi(procs, os.path.join(base, "plain"), False)
        for addresses, tls_dir in clusters.values():
            asyncio.run(wait_ready(addresses, tls_dir))
        value = "v" * value_size
        order = ["tls", "plain", "plain", "tls"] if insecure_too else ["tls", "tls"]
        parts: dict[str, dict[str, list[dict[str, Any]]]] = {k: {} for k in clusters}

        def level(key: str, op: str, n: int) -> None:
            for which in order:
                addresses, tls_dir = clusters[which]
                parts[which].setdefault(key, []).append(
                    ukehi_level(addresses, op, n, duration / 2, max(1, max_ops // 2), value, client_procs, tls_dir))

        for n in levels:
            level(str(n), "put", n)
        level("reads", "get", max(levels))
        out = {}
        for which, got in parts.items():
            out[which] = {"writes": {str(n): _combine(got[str(n)]) for n in levels},
                          "reads": _combine(got["reads"]), "fsync": True, "tls": which == "tls"}
        return out["tls"], out.get("plain", {"skipped": True})
    finally:
        procs.kill_all()
        shutil.rmtree(base, ignore_errors=True)


# ====================================================================== PySyncObj
def pysyncobj_node(index: int, ports: list[int], journal_dir: str, levels: list[int], duration: float,
                   max_ops: int, value_size: int, tick_ms: float) -> None:
    """One PySyncObj process; process 0 also runs the load and prints the results."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class KV(SyncObj):
        def __init__(self, me: str, partners: list[str], conf: SyncObjConf) -> None:
            super().__init__(me, partners, conf)
            self._data: dict[str, str] = {}

        @replicated
        def set(self, key: str, value: str) -> None:
            self._data[key] = value

    addrs = [f"127.0.0.1:{p}" for p in ports]
    conf = SyncObjConf(journalFile=os.path.join(journal_dir, f"journal{index}"), dynamicMembershipChange=False,
                       autoTickPeriod=tick_ms / 1000.0)
    kv = KV(addrs[index], [a for i, a in enumerate(addrs) if i != index], conf)
    if index != 0:
        while True:
            time.sleep(1)
    deadline = time.monotonic() + 30
    while not (kv.isReady() and kv._getLeader() is not None):
        if time.monotonic() > deadline:
            print("PSO_RESULT " + json.dumps({"error": "no leader within 30 s"}), flush=True)
            return
        time.sleep(0.05)
    value = "v" * value_size
    results: dict[str, Any] = {}
    for inflight in levels:
        sem = threading.Semaphore(inflight)
        lat: list[float] = []
        counts = {"ok": 0, "failed": 0}
        done = threading.Event()
        lock = threading.Lock()
        outstanding = [0]

        def callback(result: Any, error: Any, t0: float) -> None:
            with lock:
                lat.append(time.perf_counter() - t0)
                counts["ok" if error == FAIL_REASON.SUCCESS else "failed"] += 1
                outstanding[0] -= 1
                if outstanding[0] == 0 and done.is_set():
                    pass
            sem.release()

        start = time.perf_counter()
        issued = 0
        while issued < max_ops and time.perf_counter() - start < duration:
            sem.acquire()
            with lock:
                outstanding[0] += 1
            t0 = time.perf_counter()
            kv.set(f"k{issued % 1000}", value, callback=lambda r, e, t0=t0: callback(r, e, t0))
            issued += 1
        done.set()
        # Wait (bounded) for the calls still in flight.
        for _ in range(inflight):
            if not sem.acquire(timeout=10):
                break
        elapsed = time.perf_counter() - start
        results[str(inflight)] = summarize(lat, counts["ok"], counts["failed"], elapsed)
    print("PSO_RESULT " + json.dumps({"writes": results, "fsync": False}), flush=True)
    kv.destroy()


def bench_pysyncobj(levels: list[int], duration: float, max_ops: int, value_size: int,
                    tick_ms: float) -> dict[str, Any]:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return {"error": "pysyncobj is not installed: .venv/bin/pip install -e '.[bench]'"}
    procs = Processes()
    base = tempfile.mkdtemp(prefix="pysyncobj-bench-")
    ports = [free_port() for _ in range(3)]
    try:
        for i in range(3):
            procs.start(
                [sys.executable, os.path.abspath(__file__), "--pysyncobj-node", str(i),
                 "--pysyncobj-ports", ",".join(map(str, ports)), "--pysyncobj-dir", base,
                 "--levels", ",".join(map(str, levels)), "--duration", str(duration),
                 "--max-ops", str(max_ops), "--value-size", str(value_size),
                 "--pysyncobj-tick-ms", str(tick_ms)],
                os.path.join(base, f"node{i}.log"),
            )
        deadline = time.monotonic() + 60 + len(levels) * (duration + 15)
        log0 = os.path.join(base, "node0.log")
        while time.monotonic() < deadline:
            with open(log0, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if line.startswith("PSO_RESULT "):
                        return json.loads(line[len("PSO_RESULT "):])
            if procs.procs[0].poll() is not None:
                with open(log0, "rb") as f:
                    tail = f.read().decode("utf-8", "replace")[-2000:]
                return {"error": f"pysyncobj node 0 exited with {procs.procs[0].returncode}: {tail}"}
            time.sleep(0.2)
        return {"error": "pysyncobj did not finish in time"}
    finally:
        procs.kill_all()
        shutil.rmtree(base, ignore_errors=True)


# ====================================================================== main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="1,16,256", help="requests in flight, comma list")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per level (default 5)")
    p.add_argument("--max-ops", type=int, default=200_000, help="operations per level at most")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--client-procs", type=int, default=2, help="Ukehi client processes (default 2)")
    p.add_argument("--skip-pysyncobj", action="store_true")
    p.add_argument("--skip-insecure", action="store_true",
                   help="leave out the plain-TCP cluster that shows the cost of TLS")
    p.add_argument("--pysyncobj-tick-ms", type=float, default=50.0,
                   help="PySyncObj autoTickPeriod in ms (default 50, its own default)")
    p.add_argument("--pysyncobj-node", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pysyncobj-ports", help=argparse.SUPPRESS)
    p.add_argument("--pysyncobj-dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        levels = [int(x) for x in a.levels.split(",") if x.strip()]
    except ValueError:
        p.error("--levels must be a comma list of integers, e.g. 1,16,256")
    if not levels or min(levels) < 1 or a.duration <= 0 or a.max_ops < 1 or a.value_size < 1:
        p.error("--levels, --duration, --max-ops and --value-size must be positive")
    if a.pysyncobj_tick_ms <= 0:
        p.error("--pysyncobj-tick-ms must be positive")
    if a.pysyncobj_node is not None:
        ports = [int(x) for x in a.pysyncobj_ports.split(",")]
        pysyncobj_node(a.pysyncobj_node, ports, a.pysyncobj_dir, levels, a.duration, a.max_ops, a.value_size,
                       a.pysyncobj_tick_ms)
        return 0

    uk, plain = bench_ukehi(levels, a.duration, a.max_ops, a.value_size, a.client_procs,
                            insecure_too=not a.skip_insecure)
    pso = ({"skipped": True} if a.skip_pysyncobj
           else bench_pysyncobj(levels, a.duration, a.max_ops, a.value_size, a.pysyncobj_tick_ms))
    if "writes" in pso:
        pso["tick_ms"] = a.pysyncobj_tick_ms

    print(f"3 nodes on loopback, {a.value_size}-byte values, {a.duration:g} s per level, cores={os.cpu_count()}")
    print(f"{'system':<10} {'in flight':>9} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for n in levels:
        w = uk["writes"][str(n)]
        print(f"{'ukehi':<10} {n:>9} {w['ops_per_s']:>10.1f} {w['p50_ms']:>8.2f} {w['p99_ms']:>8.2f} {w['failed']:>7}")
    pso_writes = pso.get("writes", {})
    for n in levels:
        w = pso_writes.get(str(n))
        if w:
            print(f"{'pysyncobj':<10} {n:>9} {w['ops_per_s']:>10.1f} {w['p50_ms']:>8.2f} {w['p99_ms']:>8.2f} {w['failed']:>7}")
    if "error" in pso:
        print(f"pysyncobj: {pso['error']}")
    r = uk["reads"]
    print(f"ukehi linearizable reads/s at {max(levels)} in flight: {r['ops_per_s']:.1f} "
          f"(p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms)")
    tls_cost: dict[str, Any] = {}
    if "writes" in plain:
        print("cost of mutual TLS (same run: a plain-TCP cluster with --insecure, levels interleaved):")
        print(f"{'in flight':>9} {'TLS w/s':>9} {'plain w/s':>10} {'ratio':>6} {'TLS p50':>8} {'plain p50':>10}")
        for n in [*levels, "reads"]:
            t = uk["reads"] if n == "reads" else uk["writes"][str(n)]
            q = plain["reads"] if n == "reads" else plain["writes"][str(n)]
            ratio = round(t["ops_per_s"] / q["ops_per_s"], 3) if q["ops_per_s"] else None
            tls_cost[str(n)] = {"tls_ops_per_s": t["ops_per_s"], "plain_ops_per_s": q["ops_per_s"],
                                "ratio": ratio, "tls_p50_ms": t["p50_ms"], "plain_p50_ms": q["p50_ms"]}
            label = f"{n}" if n != "reads" else f"reads@{max(levels)}"
            print(f"{label:>9} {t['ops_per_s']:>9.1f} {q['ops_per_s']:>10.1f} {ratio if ratio is not None else '-':>6} "
                  f"{t['p50_ms']:>7.2f}ms {q['p50_ms']:>8.2f}ms")
    ratios = {}
    for n in levels:
        w = pso_writes.get(str(n))
        if w and w["ops_per_s"] > 0:
            ratios[str(n)] = round(uk["writes"][str(n)]["ops_per_s"] / w["ops_per_s"], 2)
    if ratios:
        print("ukehi / pysyncobj writes/s: " + ", ".join(f"{k} in flight: {v}x" for k, v in ratios.items()))
        top = str(max(levels))
        if top in ratios:
            verdict = "met" if ratios[top] >= 2.0 else "NOT met"
            print(f"target (>= 2x at {top} in flight, ukehi fsyncs, pysyncobj does not): {verdict}")
    print(json.dumps({"ukehi": uk, "ukehi_insecure": plain, "tls_cost": tls_cost, "pysyncobj": pso,
                      "ratio": ratios, "value_size": a.value_size,
                      "duration_s": a.duration, "levels": levels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
