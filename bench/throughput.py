"""Throughput and latency of a 3-node Ukehi cluster on loopback, next to PySyncObj.

    .venv/bin/python bench/throughput.py                 # both systems, 1/16/256 in flight
    .venv/bin/python bench/throughput.py --duration 3 --skip-pysyncobj

Ukehi: three `ukehi node` processes with fsync on (one fsync per Ready batch), driven by
asyncio clients (`ukehi.client`) in `--client-procs` processes over TCP; committed writes/s
and p50/p99 latency of `put` with 100-byte values at each in-flight level, then
linearizable (ReadIndex) reads/s.

etcd (Debian's `etcd-server`, 3.4 here; `apt-get install etcd-server`): when `etcd` and
grpcio (`pip install -e .[bench]`) are installed, three members on loopback with etcd's
default fsync (no unsafe flags), heartbeat 100 ms, started and killed by the bench, driven at
their leader over gRPC by the same closed loop in the same client processes (Put; linearizable
Range for reads), interleaved with the Ukehi clusters at every level. Without them the column
is skipped with the reason (`--skip-etcd` leaves it out). Two etcd clusters run, as two Ukehi
clusters do: one with mutual TLS on its client and peer ports (a CA made for the run,
`--client-cert-auth`, `--peer-client-cert-auth`; `--skip-etcd-tls` leaves it out) and one on
plain TCP; the TLS Ukehi cluster is compared with TLS etcd, the plain one with plain etcd.

PySyncObj (PyPI `pysyncobj`, `pip install -e .[bench]`): three processes with its file
journal (`journalFile`, an mmap that it never flushes, so no fsync), a replicated `set`
with the same value size, driven *inside its leader's* process through callbacks with the
same number of calls in flight (PySyncObj has no client protocol; this spares it the
client network hop Ukehi pays), once with its batching on (`appendEntriesUseBatch`, its
default) and once with it off. PySyncObj has no linearizable read, so reads are Ukehi-only.

The cost of TLS: the Ukehi figures are with mutual TLS (the node's default: a CA made for
the run, node certificates, a client certificate); a second cluster started with --insecure
(plain TCP) runs beside it, and every level alternates between the clusters (TLS, plain,
plain, TLS, half the duration each) so that load from elsewhere falls on all alike. The
table lists writes/s and p50 of both and their ratio (`--skip-insecure` leaves it out).

Before/after of a change in one run: `--baseline DIR` runs the `ukehi` package of another
source tree (`mkdir DIR && git archive COMMIT ukehi | tar -x -C DIR`) as one more TLS
cluster in the same alternation. `--loop-ab` adds a plain-TCP cluster on uvloop (the node
uses uvloop only without TLS; `pip install -e '.[fast]'`). `cpu ms/op` is the CPU time of
the three node processes (user + system, from /proc) per completed operation.

Sharded cell (issue 15): `--sharded` adds writes/s of sharded clusters, 1, 4 and 16 shards
on 3 and 5 nodes (replication factor 3, fsync on, plain TCP, `--sharded-inflight` puts in
flight over distinct keys from one client, `--duration` seconds each), the layouts in turn; it
runs bench/sharded.py's `one()` for each. `--only-sharded` runs that cell alone.

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

    def start(self, args: list[str], log_path: str, src: str = REPO,
              env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(log_path, "wb")
        # SRC's own `ukehi` package wins over the installed one (cwd and PYTHONPATH come
        # before the editable install's finder), so a baseline tree runs its own code.
        path = os.pathsep.join(x for x in (src, os.environ.get("PYTHONPATH", "")) if x)
        env = {**os.environ, "PYTHONPATH": path, **(env_extra or {})}
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=src, env=env,
                             start_new_session=True)
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


def start_ukehi(procs: Processes, base: str, tls: bool = True, src: str = REPO,
                env_extra: dict[str, str] | None = None) -> tuple[list[str], str | None]:
    """Three nodes running the `ukehi` package under SRC; returns their addresses and the
    client TLS directory (None: --insecure)."""
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
            os.path.join(base, f"{nid}.log"), src, env_extra,
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


# ====================================================================== etcd
# etcd (Debian's etcd-server, `apt-get install etcd-server`) driven over its gRPC API by
# grpcio (`pip install -e '.[bench]'`). The three messages used are encoded by hand (a few
# protobuf fields), so no generated etcd stubs or protobuf runtime are needed.
ETCD_PUT = "/etcdserverpb.KV/Put"
ETCD_RANGE = "/etcdserverpb.KV/Range"
ETCD_STATUS = "/etcdserverpb.Maintenance/Status"


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _pb_fields(buf: bytes) -> dict[int, Any]:
    """The top-level fields of a protobuf message (first occurrence; varints and bytes)."""
    out: dict[int, Any] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(buf):
        tag = varint()
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value: Any = varint()
        elif wire_type == 2:
            n = varint()
            value = bytes(buf[i:i + n])
            i += n
        elif wire_type == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire_type == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire_type} not handled")
        out.setdefault(field, value)
    return out


def etcd_missing() -> str | None:
    """Why the etcd column cannot run here, or None."""
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed: .venv/bin/pip install -e '.[bench]'"
    return None


def start_etcd(procs: Processes, base: str, tls: bool = False) -> tuple[list[str], str | None]:
    """Three etcd members on loopback (fsync on: etcd's default, no unsafe flag); returns
    their client endpoints and, with TLS, the directory of the client's certificate.

    TLS: mutual TLS on both the client and the peer ports, as the Ukehi node's default is
    (a CA made for the run, a certificate per member for 127.0.0.1, one for the client), so
    the TLS columns compare like with like."""
    os.makedirs(base, exist_ok=True)
    names = [f"e{i + 1}" for i in range(3)]
    client = [free_port() for _ in names]
    peer = [free_port() for _ in names]
    scheme = "https" if tls else "http"
    cluster = ",".join(f"{n}={scheme}://127.0.0.1:{p}" for n, p in zip(names, peer))
    token = f"bench-{os.getpid()}-{client[0]}"  # one per cluster: members check it when they meet
    certs_dir: str | None = None
    if tls:
        from ukehi import certs

        certs_dir = os.path.join(base, "certs")
        certs.init_ca(certs_dir)
        certs.issue(certs_dir, "bench", "client", file_stem="client")
        for n in names:
            certs.issue(certs_dir, n, "node", sans=["127.0.0.1"], file_stem=n)
    for n, c, p in zip(names, client, peer):
        security: list[str] = []
        if certs_dir is not None:
            cert, key, ca = (os.path.join(certs_dir, f) for f in (f"{n}.pem", f"{n}.key", "ca.pem"))
            security = ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
                        "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
                        "--peer-client-cert-auth"]
        procs.start(
            ["etcd", "--name", n, "--data-dir", os.path.join(base, n),
             "--listen-client-urls", f"{scheme}://127.0.0.1:{c}", "--advertise-client-urls", f"{scheme}://127.0.0.1:{c}",
             "--listen-peer-urls", f"{scheme}://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"{scheme}://127.0.0.1:{p}",
             "--initial-cluster", cluster, "--initial-cluster-state", "new",
             "--initial-cluster-token", token,
             # the same timers as the Ukehi clusters here (heartbeat 100 ms, election 300+ ms)
             "--heartbeat-interval", "100", "--election-timeout", "600", "--log-level", "warn", *security],
            os.path.join(base, f"{n}.log"),
        )
    return [f"127.0.0.1:{c}" for c in client], certs_dir


def etcd_channel(endpoint: str, certs_dir: str | None) -> Any:
    """A grpc.aio channel to one etcd member: plain, or with the bench's client certificate."""
    import grpc

    if certs_dir is None:
        return grpc.aio.insecure_channel(endpoint)
    with open(os.path.join(certs_dir, "ca.pem"), "rb") as f:
        ca = f.read()
    with open(os.path.join(certs_dir, "client.key"), "rb") as f:
        key = f.read()
    with open(os.path.join(certs_dir, "client.pem"), "rb") as f:
        cert = f.read()
    return grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(ca, key, cert))


async def etcd_leader(endpoints: list[str], timeout: float = 30.0, certs_dir: str | None = None) -> str:
    """The client endpoint of the current etcd leader (asked through Maintenance/Status)."""
    import grpc

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for ep in endpoints:
            try:
                async with etcd_channel(ep, certs_dir) as ch:
                    raw = await ch.unary_unary(ETCD_STATUS)(b"", timeout=2.0)
            except grpc.RpcError as e:
                last = f"{ep}: {e.code()}"
                continue
            st = _pb_fields(raw)
            header = _pb_fields(st.get(1, b""))
            if st.get(4) and st.get(4) == header.get(2):  # leader == this member's id
                return ep
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the etcd cluster elected no leader within {timeout:g} s ({last}); see the etcd logs")


async def etcd_wait_ready(endpoints: list[str], certs_dir: str | None = None, timeout: float = 30.0) -> None:
    import grpc

    leader = await etcd_leader(endpoints, timeout, certs_dir)
    deadline = time.monotonic() + timeout
    async with etcd_channel(leader, certs_dir) as ch:
        put = ch.unary_unary(ETCD_PUT)
        while time.monotonic() < deadline:
            try:
                await put(_pb_bytes(1, b"bench-warmup") + _pb_bytes(2, b"x"), timeout=2.0)
                return
            except grpc.RpcError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the etcd cluster did not accept a write within 30 s; see the etcd logs")


async def _etcd_load(endpoints: list[str], op: str, inflight: int, duration: float, max_ops: int,
                     value: str, key_prefix: str, tls_dir: str | None = None) -> tuple[list[float], int, int, float]:
    """The same closed loop as _ukehi_load, at etcd's leader: Put, or a linearizable Range
    (etcd's default; serializable=false) of one key."""
    import grpc

    lat: list[float] = []
    ok = failed = 0
    issued = 0
    value_b = value.encode()
    leader = await etcd_leader(endpoints, certs_dir=tls_dir)
    async with etcd_channel(leader, tls_dir) as ch:
        put = ch.unary_unary(ETCD_PUT)
        rng = ch.unary_unary(ETCD_RANGE)
        await put(_pb_bytes(1, f"{key_prefix}-probe".encode()) + _pb_bytes(2, value_b), timeout=10.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop_at = start + duration

        async def worker(w: int) -> None:
            nonlocal ok, failed, issued
            i = 0
            while issued < max_ops and loop.time() < stop_at:
                issued += 1
                key = _pb_bytes(1, f"{key_prefix}-{w}-{i % 1000}".encode())
                i += 1
                t0 = time.perf_counter()
                try:
                    await (put(key + _pb_bytes(2, value_b), timeout=10.0) if op == "put" else rng(key, timeout=10.0))
                except grpc.RpcError:
                    failed += 1
                else:
                    ok += 1
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(w) for w in range(inflight)))
        elapsed = loop.time() - start
    return lat, ok, failed, elapsed


def _client_proc(kind: str, args: tuple, out: Any) -> None:
    load = _etcd_load if kind == "etcd" else _ukehi_load
    lat, ok, failed, elapsed = asyncio.run(load(*args))
    out.put((lat, ok, failed, elapsed))


def ukehi_level(addresses: list[str], op: str, inflight: int, duration: float, max_ops: int,
                value: str, client_procs: int, tls_dir: str | None = None, kind: str = "ukehi") -> dict[str, Any]:
    """Run one level, split over `client_procs` processes (one asyncio client each; KIND
    "etcd": a grpc.aio channel to etcd's leader each)."""
    procs_n = max(1, min(client_procs, inflight))
    per = [inflight // procs_n + (1 if i < inflight % procs_n else 0) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    workers = [
        ctx.Process(target=_client_proc,
                    args=(kind, (addresses, op, n, duration, max_ops // procs_n, value, f"{op}{inflight}p{i}", tls_dir),
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
        "cpu_ms_per_op": (round(sum(p["cpu_ms_per_op"] for p in parts) / n, 3)
                          if all(p.get("cpu_ms_per_op") is not None for p in parts) else None),
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by processes PIDS (Linux /proc; 0 elsewhere)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def bench_ukehi(levels: list[int], duration: float, max_ops: int, value_size: int,
                client_procs: int, insecure_too: bool = True,
                baseline: str | None = None, loop_ab: bool = False, etcd: bool = False,
                etcd_tls: bool = True) -> dict[str, dict[str, Any]]:
    """Figures of the TLS cluster ("tls"), and from the same run of a plain-TCP cluster
    ("plain", with INSECURE_TOO) and of a TLS cluster running the code under BASELINE
    ("baseline", another source tree: the before of a change) and, with ETCD, of a 3-member
    etcd cluster ("etcd", plain TCP, fsync on) and, with ETCD_TLS too, of one with mutual TLS
    on its client and peer ports ("etcd-tls").

    All clusters are up at once and each level alternates between them (e.g. TLS, plain,
    plain, TLS; half the duration each), so load from elsewhere on a shared machine falls on
    all alike; a level's figures are the mean of its halves. ``cpu_ms_per_op``: CPU time of
    the three node processes per completed operation.
    """
    procs = Processes()
    base = tempfile.mkdtemp(prefix="ukehi-bench-")
    try:
        clusters: dict[str, tuple[list[str], str | None]] = {}
        pids: dict[str, list[int]] = {}

        def start(name: str, tls: bool, src: str = REPO, env_extra: dict[str, str] | None = None) -> None:
            before = len(procs.procs)
            clusters[name] = start_ukehi(procs, os.path.join(base, name), tls, src, env_extra)
            pids[name] = [p.pid for p in procs.procs[before:]]

        start("tls", True)
        if insecure_too or loop_ab:
            start("plain", False, REPO, {"UKEHI_EVENT_LOOP": "asyncio"})
        if loop_ab:
            start("plain-uvloop", False, REPO, {"UKEHI_EVENT_LOOP": "uvloop"})
        if baseline is not None:
            start("baseline", True, os.path.abspath(baseline))
        for name, with_tls in (("etcd", False), ("etcd-tls", True)):
            if etcd and (etcd_tls or not with_tls):
                before = len(procs.procs)
                clusters[name] = start_etcd(procs, os.path.join(base, name), with_tls)
                pids[name] = [p.pid for p in procs.procs[before:]]
        for name, (addresses, tls_dir) in clusters.items():
            asyncio.run(etcd_wait_ready(addresses, tls_dir) if name.startswith("etcd")
                        else wait_ready(addresses, tls_dir))
        value = "v" * value_size
        names = list(clusters)
        order = names + names[::-1]
        parts: dict[str, dict[str, list[dict[str, Any]]]] = {k: {} for k in clusters}

        def level(key: str, op: str, n: int) -> None:
            for which in order:
                addresses, tls_dir = clusters[which]
                cpu0 = cpu_seconds(pids[which])
                got = ukehi_level(addresses, op, n, duration / 2, max(1, max_ops // 2), value, client_procs, tls_dir,
                                  kind="etcd" if which.startswith("etcd") else "ukehi")
                cpu = cpu_seconds(pids[which]) - cpu0
                got["cpu_ms_per_op"] = round(cpu * 1000 / got["ok"], 3) if got["ok"] else None
                parts[which].setdefault(key, []).append(got)

        for n in levels:
            level(str(n), "put", n)
        level("reads", "get", max(levels))
        out = {}
        for which, got in parts.items():
            out[which] = {"writes": {str(n): _combine(got[str(n)]) for n in levels},
                          "reads": _combine(got["reads"]), "fsync": True,
                          "tls": not which.startswith("plain") and which != "etcd"}
        return out
    finally:
        procs.kill_all()
        shutil.rmtree(base, ignore_errors=True)


# ====================================================================== PySyncObj
def pysyncobj_node(index: int, ports: list[int], journal_dir: str, levels: list[int], duration: float,
                   max_ops: int, value_size: int, tick_ms: float, batch: bool = True) -> None:
    """One PySyncObj process; the one that is the leader runs the load and prints the results
    (driving a follower would forward every call to the leader: an extra hop per write)."""
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
                       autoTickPeriod=tick_ms / 1000.0, appendEntriesUseBatch=batch)
    kv = KV(addrs[index], [a for i, a in enumerate(addrs) if i != index], conf)
    deadline = time.monotonic() + 30
    while not (kv.isReady() and kv._getLeader() is not None):
        if time.monotonic() > deadline:
            if index == 0:
                print("PSO_RESULT " + json.dumps({"error": "no leader within 30 s"}), flush=True)
            return
        time.sleep(0.05)
    if not kv._isLeader():
        while True:
            time.sleep(1)
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
    print("PSO_RESULT " + json.dumps({"writes": results, "fsync": False, "batching": batch,
                                      "driven_at": f"node {index} (the leader)"}), flush=True)
    kv.destroy()


def bench_pysyncobj(levels: list[int], duration: float, max_ops: int, value_size: int,
                    tick_ms: float, batch: bool = True) -> dict[str, Any]:
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
                 "--pysyncobj-tick-ms", str(tick_ms), *([] if batch else ["--pysyncobj-no-batch"])],
                os.path.join(base, f"node{i}.log"),
            )
        deadline = time.monotonic() + 60 + len(levels) * (duration + 15)
        logs = [os.path.join(base, f"node{i}.log") for i in range(3)]
        while time.monotonic() < deadline:
            for log in logs:
                with open(log, "rb") as f:
                    for line in f.read().decode("utf-8", "replace").splitlines():
                        if line.startswith("PSO_RESULT "):
                            return json.loads(line[len("PSO_RESULT "):])
            for i, proc in enumerate(procs.procs):
                if proc.poll() is not None:
                    with open(logs[i], "rb") as f:
                        tail = f.read().decode("utf-8", "replace")[-2000:]
                    return {"error": f"pysyncobj node {i} exited with {proc.returncode}: {tail}"}
            time.sleep(0.2)
        return {"error": "pysyncobj did not finish in time"}
    finally:
        procs.kill_all()
        shutil.rmtree(base, ignore_errors=True)


# ====================================================================== main
def bench_sharded(layouts: list[tuple[int, ...]], duration: float, max_ops: int, value_size: int,
                  inflight: int) -> dict[str, Any]:
    """The sharded cell: writes/s per (nodes, shards) layout, from bench/sharded.py's `one()`
    (its clusters: replication factor 3, fsync on, plain TCP, one client), printed as a table."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sharded  # bench/sharded.py

    print(f"sharded cell: replication factor 3 (or the node count), fsync on, plain TCP, {inflight} puts in flight "
          f"over distinct keys, {duration:g} s per layout, load average {os.getloadavg()[0]:.1f}")
    print(f"{'nodes':>5} {'shards':>6} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/w':>9} {'failed':>7}")
    out: dict[str, Any] = {}
    for nodes, shards in layouts:
        r = sharded.one(nodes, shards, inflight, duration, max_ops, value_size)
        out[f"{nodes}x{shards}"] = {"nodes": nodes, "shards": shards, **r}
        print(f"{nodes:>5} {shards:>6} {r['writes_per_s']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['cpu_ms_per_write']:>9} {r['failed']:>7}", flush=True)
    return {"inflight": inflight, "layouts": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="1,16,256", help="requests in flight, comma list")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per level (default 5)")
    p.add_argument("--max-ops", type=int, default=200_000, help="operations per level at most")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--client-procs", type=int, default=2, help="Ukehi client processes (default 2)")
    p.add_argument("--skip-pysyncobj", action="store_true")
    p.add_argument("--skip-etcd", action="store_true",
                   help="leave out the etcd cluster (run when `etcd` and grpcio are installed)")
    p.add_argument("--skip-etcd-tls", action="store_true",
                   help="leave out the etcd cluster with mutual TLS (the TLS Ukehi cluster is then compared "
                        "with plain-TCP etcd)")
    p.add_argument("--skip-insecure", action="store_true",
                   help="leave out the plain-TCP cluster that shows the cost of TLS")
    p.add_argument("--pysyncobj-tick-ms", type=float, default=50.0,
                   help="PySyncObj autoTickPeriod in ms (default 50, its own default)")
    p.add_argument("--baseline", metavar="DIR",
                   help="a second source tree whose `ukehi` package runs as one more TLS cluster, "
                        "interleaved with this one: before/after of a change in one run "
                        "(e.g. mkdir DIR && git archive COMMIT ukehi | tar -x -C DIR)")
    p.add_argument("--loop-ab", action="store_true",
                   help="also run a plain-TCP cluster on uvloop (UKEHI_EVENT_LOOP=uvloop) beside the plain "
                        "stdlib one, interleaved, to show what uvloop adds (needs pip install -e '.[fast]')")
    p.add_argument("--sharded", action="store_true",
                   help="add the sharded cell: writes/s of 1, 4 and 16 shards on 3 and 5 nodes (bench/sharded.py)")
    p.add_argument("--only-sharded", action="store_true", help="run the sharded cell alone")
    p.add_argument("--sharded-layouts", default="3x1,3x4,3x16,5x1,5x4,5x16", metavar="NxS,...",
                   help="the sharded cell's layouts: nodes x shards (default 3x1,3x4,3x16,5x1,5x4,5x16)")
    p.add_argument("--sharded-inflight", type=int, default=64, help="the sharded cell's puts in flight (default 64)")
    p.add_argument("--pysyncobj-node", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pysyncobj-no-batch", action="store_true", help=argparse.SUPPRESS)
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
                       a.pysyncobj_tick_ms, batch=not a.pysyncobj_no_batch)
        return 0
    if a.loop_ab:
        probe = subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                   x for x in (REPO, os.environ.get("PYTHONPATH", "")) if x)})
        if probe.returncode != 0:
            p.error("--loop-ab needs uvloop: .venv/bin/pip install -e '.[fast]'")
    if a.baseline is not None and not os.path.isfile(os.path.join(a.baseline, "ukehi", "node", "__init__.py")) \
            and not os.path.isfile(os.path.join(a.baseline, "ukehi", "node.py")):
        p.error(f"--baseline {a.baseline}: no ukehi package there; make one with "
                "`mkdir DIR && git archive COMMIT ukehi | tar -x -C DIR`")

    try:
        layouts = [tuple(int(x) for x in part.lower().split("x")) for part in a.sharded_layouts.split(",") if part]
        if not layouts or any(len(t) != 2 or t[0] < 1 or t[1] < 1 for t in layouts):
            raise ValueError
    except ValueError:
        p.error("--sharded-layouts must be a comma list of NODESxSHARDS, e.g. 3x1,3x16,5x16")
    if a.only_sharded:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        cell = bench_sharded(layouts, a.duration, a.max_ops, a.value_size, a.sharded_inflight)
        print(json.dumps({"sharded": cell, "load_average": round(os.getloadavg()[0], 1),
                          "value_size": a.value_size, "duration_s": a.duration}))
        return 0
    etcd_skip = "--skip-etcd" if a.skip_etcd else etcd_missing()
    # SIGTERM (e.g. timeout(1)) ends the bench through its finally blocks, which kill every
    # process it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = bench_ukehi(levels, a.duration, a.max_ops, a.value_size, a.client_procs,
                       insecure_too=not a.skip_insecure, baseline=a.baseline, loop_ab=a.loop_ab,
                       etcd=etcd_skip is None, etcd_tls=not a.skip_etcd_tls)
    uk, plain = runs["tls"], runs.get("plain", {"skipped": True})
    etcd_run = runs.get("etcd")
    etcd_tls_run = runs.get("etcd-tls")
    base_run = runs.get("baseline")
    uv_run = runs.get("plain-uvloop")
    pso: dict[str, Any] = {}
    if a.skip_pysyncobj:
        pso = {"skipped": True}
    else:
        for batch in (True, False):
            got = bench_pysyncobj(levels, a.duration, a.max_ops, a.value_size, a.pysyncobj_tick_ms, batch)
            if "writes" in got:
                got["tick_ms"] = a.pysyncobj_tick_ms
            pso["batch_on" if batch else "batch_off"] = got

    print(f"3 nodes on loopback, {a.value_size}-byte values, {a.duration:g} s per level, cores={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}; ukehi and etcd with fsync, each with mutual TLS and on plain TCP, "
          "etcd driven at its leader, pysyncobj without fsync, driven at its leader")
    print(f"{'system':<20} {'in flight':>9} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/op':>9} {'failed':>7}")

    def row(name: str, n: int, w: dict[str, Any]) -> None:
        cpu = w.get("cpu_ms_per_op")
        print(f"{name:<20} {n:>9} {w['ops_per_s']:>10.1f} {w['p50_ms']:>8.2f} {w['p99_ms']:>8.2f} "
              f"{cpu if cpu is not None else '-':>9} {w['failed']:>7}")

    systems: list[tuple[str, dict[str, Any]]] = [("ukehi", uk)]
    if "writes" in plain:
        systems.append(("ukehi plain TCP", plain))
    if uv_run is not None:
        systems.append(("ukehi plain uvloop", uv_run))
    if base_run is not None:
        systems.append(("ukehi (baseline)", base_run))
    if etcd_tls_run is not None:
        systems.append(("etcd TLS", etcd_tls_run))
    if etcd_run is not None:
        systems.append(("etcd plain TCP", etcd_run))
    for key, label in (("batch_on", "pysyncobj batch on"), ("batch_off", "pysyncobj batch off")):
        if "writes" in pso.get(key, {}):
            systems.append((label, pso[key]))
    for name, figures in systems:
        for n in levels:
            w = figures["writes"].get(str(n))
            if w:
                row(name, n, w)
    for key in ("batch_on", "batch_off"):
        if "error" in pso.get(key, {}):
            print(f"pysyncobj ({key}): {pso[key]['error']}")
    if etcd_skip is not None:
        print(f"etcd: skipped ({etcd_skip})")
    r = uk["reads"]
    print(f"ukehi linearizable reads/s at {max(levels)} in flight: {r['ops_per_s']:.1f} "
          f"(p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms)")
    vs_etcd: dict[str, Any] = {}
    if etcd_run is not None:
        er = etcd_run["reads"]
        print(f"etcd linearizable reads/s at {max(levels)} in flight: {er['ops_per_s']:.1f} "
              f"(p50 {er['p50_ms']:.2f} ms, p99 {er['p99_ms']:.2f} ms)")
        # Goal (issue 17): Ukehi >= 1.0x etcd writes/s at every level, p50 at 1 in flight <= etcd's.
        # Like is compared with like: the TLS cluster with etcd on mutual TLS (when it ran),
        # the plain-TCP cluster with etcd on plain TCP.
        pairs = [("tls", uk, etcd_tls_run or etcd_run)] + ([("plain", plain, etcd_run)] if "writes" in plain else [])
        print("ukehi / etcd, same run, levels interleaved ('tls': both with mutual TLS"
              + ("" if etcd_tls_run else ", but etcd on plain TCP here (--skip-etcd-tls)")
              + "; 'plain': both on plain TCP, Ukehi --insecure):")
        for n in [*levels, "reads"]:
            e = etcd_run["reads"] if n == "reads" else etcd_run["writes"][str(n)]
            cell: dict[str, Any] = {"etcd_ops_per_s": e["ops_per_s"], "etcd_p50_ms": e["p50_ms"],
                                    "etcd_cpu_ms_per_op": e.get("cpu_ms_per_op")}
            if etcd_tls_run is not None:
                et = etcd_tls_run["reads"] if n == "reads" else etcd_tls_run["writes"][str(n)]
                cell.update({"etcd_tls_ops_per_s": et["ops_per_s"], "etcd_tls_p50_ms": et["p50_ms"],
                             "etcd_tls_cpu_ms_per_op": et.get("cpu_ms_per_op")})
            text = []
            for name, run, other in pairs:
                t = run["reads"] if n == "reads" else run["writes"][str(n)]
                o = other["reads"] if n == "reads" else other["writes"][str(n)]
                ratio = round(t["ops_per_s"] / o["ops_per_s"], 3) if o["ops_per_s"] else None
                cell[f"{name}_ratio"] = ratio
                cell[f"{name}_p50_ms"] = t["p50_ms"]
                cell[f"{name}_cpu_ms_per_op"] = t.get("cpu_ms_per_op")
                text.append(f"{name} {ratio}x (p50 {t['p50_ms']:.2f} vs {o['p50_ms']:.2f} ms, cpu/op "
                            f"{t.get('cpu_ms_per_op')} vs {o.get('cpu_ms_per_op')} ms)")
            vs_etcd[str(n)] = cell
            label = f"{n}" if n != "reads" else f"reads@{max(levels)}"
            print(f"  {label:>9}: " + "; ".join(text))
    change: dict[str, Any] = {}
    if base_run is not None:
        print(f"this tree / baseline ({a.baseline}), same run, levels interleaved:")
        for n in [*levels, "reads"]:
            t = uk["reads"] if n == "reads" else uk["writes"][str(n)]
            b = base_run["reads"] if n == "reads" else base_run["writes"][str(n)]
            ratio = round(t["ops_per_s"] / b["ops_per_s"], 3) if b["ops_per_s"] else None
            change[str(n)] = {"ops_per_s": t["ops_per_s"], "baseline_ops_per_s": b["ops_per_s"], "ratio": ratio,
                              "p50_ms": t["p50_ms"], "baseline_p50_ms": b["p50_ms"],
                              "cpu_ms_per_op": t.get("cpu_ms_per_op"),
                              "baseline_cpu_ms_per_op": b.get("cpu_ms_per_op")}
            label = f"{n}" if n != "reads" else f"reads@{max(levels)}"
            print(f"  {label:>9}: {t['ops_per_s']:.1f} vs {b['ops_per_s']:.1f} w/s ({ratio}x), "
                  f"p50 {t['p50_ms']:.2f} vs {b['p50_ms']:.2f} ms, cpu/op {t.get('cpu_ms_per_op')} vs "
                  f"{b.get('cpu_ms_per_op')} ms")
    loop_gain: dict[str, Any] = {}
    if uv_run is not None:
        print("event loop: uvloop / stdlib asyncio (both plain TCP: the node uses uvloop only without TLS), "
              "same run, levels interleaved:")
        for n in [*levels, "reads"]:
            t = uv_run["reads"] if n == "reads" else uv_run["writes"][str(n)]
            b = plain["reads"] if n == "reads" else plain["writes"][str(n)]
            ratio = round(t["ops_per_s"] / b["ops_per_s"], 3) if b["ops_per_s"] else None
            loop_gain[str(n)] = {"uvloop_ops_per_s": t["ops_per_s"], "stdlib_ops_per_s": b["ops_per_s"],
                                 "ratio": ratio, "uvloop_cpu_ms_per_op": t.get("cpu_ms_per_op"),
                                 "stdlib_cpu_ms_per_op": b.get("cpu_ms_per_op")}
            label = f"{n}" if n != "reads" else f"reads@{max(levels)}"
            print(f"  {label:>9}: {t['ops_per_s']:.1f} vs {b['ops_per_s']:.1f} w/s ({ratio}x), cpu/op "
                  f"{t.get('cpu_ms_per_op')} vs {b.get('cpu_ms_per_op')} ms")
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
    # Goal (issue 17): Ukehi with fsync >= PySyncObj without fsync, at the same in-flight level
    # (PySyncObj's better configuration of the two at each level).
    ratios: dict[str, float] = {}
    for n in levels:
        best = max((pso.get(k, {}).get("writes", {}).get(str(n), {}).get("ops_per_s", 0.0)
                    for k in ("batch_on", "batch_off")), default=0.0)
        if best > 0:
            ratios[str(n)] = round(uk["writes"][str(n)]["ops_per_s"] / best, 2)
    if ratios:
        print("ukehi / best pysyncobj writes/s: " + ", ".join(f"{k} in flight: {v}x" for k, v in ratios.items()))
    sharded_cell = (bench_sharded(layouts, a.duration, a.max_ops, a.value_size, a.sharded_inflight)
                    if a.sharded else {"skipped": True})
    print(json.dumps({"ukehi": uk, "sharded": sharded_cell, "etcd": etcd_run or {"skipped": etcd_skip},
                      "etcd_tls": etcd_tls_run or {"skipped": etcd_skip or "--skip-etcd-tls"}, "vs_etcd": vs_etcd,
                      "load_average": round(os.getloadavg()[0], 1), "ukehi_plain_uvloop": uv_run or {"skipped": True}, "loop_gain": loop_gain,
                      "ukehi_insecure": plain, "ukehi_baseline": base_run or {"skipped": True},
                      "change": change, "tls_cost": tls_cost, "pysyncobj": pso if not a.skip_pysyncobj
                      else {"skipped": True}, "ratio": ratios, "value_size": a.value_size,
                      "duration_s": a.duration, "levels": levels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
