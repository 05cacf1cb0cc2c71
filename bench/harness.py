"""How fast can the harness record? kv workload, 50 clients, a 5-node local cluster.

Drives the same pieces `ukehi-jepsen run` uses (LocalCluster, UkehiDB, the kv
workload, the Interpreter writing history.jsonl) with no rate limit and no
faults, and reports, for the main phase only:

- ops/s recorded (completions written to the history per second of wall time),
- the harness's own CPU share: its CPU seconds over wall seconds (1.0 = one
  full core), next to the nodes' CPU share, read from /proc for their pids,
  so you can tell whether the harness or the cluster is the bottleneck.

    .venv/bin/python bench/harness.py [--seconds 15] [--clients 50] [--nodes 5]

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkers.history import HistoryWriter, load_jsonl  # noqa: E402
from harness.backends.local import LocalCluster  # noqa: E402
from harness.db import UkehiDB  # noqa: E402
from harness.interpreter import Clock, Counters, Interpreter  # noqa: E402
from workloads import kv  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(db: UkehiDB, history_path: Path, seconds: float, clients: int) -> dict:
    await db.wait_for_leader()
    workload = kv.make(db.addresses(), clients, {"keys": 200})
    pids = [h.pid for h in db.nodes.values() if h.pid]
    node_cpu0 = sum(proc_cpu_seconds(p) for p in pids)
    self_cpu0 = self_cpu_seconds()
    counters = Counters()
    with HistoryWriter(str(history_path)) as history:
        interp = Interpreter(history, Clock(), random.Random(1), clients, counters)
        started = time.monotonic()
        await interp.run_clients(workload.generator, workload.open_client,
                                 deadline=started + seconds, rate=None)
        wall = time.monotonic() - started
    harness_cpu = self_cpu_seconds() - self_cpu0
    node_cpu = sum(proc_cpu_seconds(p) for p in pids) - node_cpu0
    done = counters.ok + counters.fail + counters.info
    return {"seconds": round(wall, 2), "clients": clients, "nodes": len(db.nodes),
            "ops_recorded": done, "ops_per_s": round(done / wall, 1),
            "ok": counters.ok, "fail": counters.fail, "info": counters.info,
            "harness_cpu_share": round(harness_cpu / wall, 3),
            "nodes_cpu_share": round(node_cpu / wall, 3),
            "harness_cpu_per_op_us": round(harness_cpu / max(1, done) * 1e6, 1),
            "cores": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=5)
    args = parser.parse_args()
    if not (0 < args.seconds <= 300 and 0 < args.clients <= 500 and 1 <= args.nodes <= 9):
        parser.error("--seconds in (0, 300], --clients in 1..500, --nodes in 1..9")
    names = [f"n{i}" for i in range(1, args.nodes + 1)]
    with tempfile.TemporaryDirectory(prefix="ukj-bench-") as tmp:
        with LocalCluster(names, results_dir=tmp) as cluster:
            db = UkehiDB(cluster)
            db.start_all()
            try:
                figures = asyncio.run(measure(db, Path(tmp) / "history.jsonl", args.seconds, args.clients))
            finally:
                db.stop_all()
            figures["backend_mode"] = cluster.mode
        ops = load_jsonl(str(Path(tmp) / "history.jsonl"))
        assert sum(1 for op in ops if op.type != "invoke") == figures["ops_recorded"]
    print(f"harness recording rate: kv workload, {figures['clients']} clients, "
          f"{figures['nodes']}-node local cluster ({figures['backend_mode']}), "
          f"{figures['seconds']} s, {figures['cores']} cores")
    print(f"{'ops recorded':<28}{figures['ops_recorded']:>12}")
    print(f"{'ops/s':<28}{figures['ops_per_s']:>12}")
    print(f"{'ok / fail / info':<28}{figures['ok']:>6} / {figures['fail']} / {figures['info']}")
    print(f"{'harness CPU share (cores)':<28}{figures['harness_cpu_share']:>12}")
    print(f"{'nodes CPU share (cores)':<28}{figures['nodes_cpu_share']:>12}")
    print(f"{'harness CPU per op (us)':<28}{figures['harness_cpu_per_op_us']:>12}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
