"""leader-churn fires reads (and a write) at each new leader the moment it is seen, recorded
as client ops of the nemesis's own processes (nemeses/leader_reads.py)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys

from checkers.history import load_jsonl
from nemeses import schedules
from nemeses.leader_reads import FIRST_PROCESS, WRITE_VALUE_BASE, ClientOps

from test_schedules import Cluster

CLI = [sys.executable, "-m", "harness.cli"]


class Recorder:
    """Stands in for ClientOps: notes every burst and the leader the cluster had then."""

    def __init__(self, cluster):
        self.cluster, self.bursts = cluster, []

    async def burst(self, address, node, reads, writes, timeout):
        self.bursts.append({"address": address, "node": node, "leader_then": self.cluster.leader,
                            "reads": reads, "writes": writes})
        return {"node": node, "ops": [], "ok": 0}


def test_each_new_leader_gets_a_burst_before_the_next_round():
    c = Cluster(3)
    c.endpoint = lambda name: f"{c.nodes[name].address}:7000"
    c.client_ops = Recorder(c)
    pkg = schedules.leader_churn_package(c, duration_s=1.0, kill_fraction=0.5, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(1))))
    rounds = [r for r in value["rounds"] if r["new_leader"]]
    assert len(rounds) >= 3 and len(c.client_ops.bursts) == len(rounds)
    for r, b in zip(rounds, c.client_ops.bursts):
        # at the node just elected, directly, while it still led
        assert b["node"] == b["leader_then"] == r["new_leader"] != r["leader"]
        assert b["address"] == f"{c.nodes[r['new_leader']].address}:7000"
        assert (b["reads"], b["writes"]) == (4, 1)
        assert r["at_new_leader"]["node"] == r["new_leader"]
    # without a recorder (the simulator's context, unit stand-ins) the schedule still runs
    del c.client_ops
    value = asyncio.run(pkg.invoke({"f": schedules.CHURN, "value": {"seed": 2}}))
    assert value["changes"] >= 1 and not any("at_new_leader" in r for r in value["rounds"])


class History:
    def __init__(self):
        self.lines = []

    def append(self, time, process, type, f, **fields):
        self.lines.append((process, type, f, fields.get("key")))


def test_only_the_workers_mutations_name_the_keys_and_unknown_workloads_skip():
    inner = History()
    ops = ClientOps(inner, None, "register", recent=3)
    h = ops.observing(inner)
    for process, f, key in [(0, "write", 1), (1, "read", 9), (2, "cas", 2), (FIRST_PROCESS, "write", 7),
                            ("nemesis", "write", 8), (3, "delete", 3), (4, "write", 1), (5, "write", 4)]:
        h.append(0, process, "invoke", f, key=key)
        h.append(1, process, "ok", f, key=key)
    assert len(inner.lines) == 16  # everything still reaches the history
    assert ops.written_keys() == [4, 1, 3]  # newest first, reads and the nemesis's own not counted
    assert asyncio.run(ClientOps(inner, None, "fencing").burst("a:1", "n1"))["skipped"].startswith("no client ops for the fencing")
    assert asyncio.run(ClientOps(inner, None, "register").burst("a:1", "n1"))["skipped"] == \
        "the workload has written no key yet"


def test_a_churn_run_reads_at_each_new_leader_and_the_correct_build_passes(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "leader-churn", "--time-limit", "15",
                                 "--nemesis-interval", "2", "--seed", "1", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = (results / "latest").resolve()
    history = list(load_jsonl(str(run / "history.jsonl")))
    by_process = {}
    for op in history:
        if op.is_client and isinstance(op.process, int) and op.process >= FIRST_PROCESS:
            by_process.setdefault(op.process, []).append(op)
    churns = [op for op in history if not op.is_client and op.f == schedules.CHURN]
    seen = 0
    for invoke, done in zip(churns[::2], churns[1::2]):
        for r in done.value["rounds"]:
            burst = r.get("at_new_leader")
            if not r.get("new_leader") or not burst or "skipped" in burst:
                continue
            assert burst["node"] == r["new_leader"] and len(burst["ops"]) == 5
            for o in burst["ops"]:
                inv, comp = by_process[o["process"]]  # one invoke and one completion per process
                assert inv.type == "invoke" and inv.extra.get("node") == r["new_leader"]
                assert comp.type == o["type"] and comp.type in ("ok", "fail", "info")
                # fired while the churn op ran, right after the election it answers
                assert invoke.time < inv.time < comp.time <= done.time
                assert isinstance(inv.key, int)  # the workload's register keys
                if inv.f == "write":
                    assert inv.value > WRITE_VALUE_BASE
                seen += 1
    assert seen >= 10, seen
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True, verdict["checkers"]["linearizable"]


def test_txn_workloads_note_the_keys_their_writes_touch_and_read_them_in_one_transaction():
    from nemeses.leader_reads import WORKLOADS

    inner = History()
    ops = ClientOps(inner, None, "list-append", recent=4)
    h = ops.observing(inner)
    h.append(0, 0, "invoke", "txn", key=None, value=[["r", 5, None], ["append", 1, 10], ["append", 2, 11]])
    h.append(0, 1, "invoke", "txn", key=None, value=[["r", 6, None]])  # read-only: no key noted
    h.append(0, FIRST_PROCESS, "invoke", "txn", key=None, value=[["append", 9, 12]])  # the nemesis's own
    h.append(0, 2, "invoke", "txn", key=None, value=[["append", 3, 13], ["append", 1, 14]])
    assert ops.written_keys() == [1, 3, 2]
    kind = WORKLOADS["list-append"]
    assert kind.reads([1, 3, 1]) == [{"f": "txn", "value": [["r", 1, None], ["r", 3, None]]}]
    assert kind.write(3, WRITE_VALUE_BASE + 1) == {"f": "txn", "value": [["append", 3, WRITE_VALUE_BASE + 1]]}
    assert WORKLOADS["rw-register"].mutated("txn", None, [["w", 4, 1], ["r", 5, None]]) == [4]
    assert WORKLOADS["register"].reads([1, 2]) == [{"f": "read", "key": 1}, {"f": "read", "key": 2}]
