"""The fencing workload on a sharded cluster (issue 15: "fencing tokens stay per group, and a
fenced write checks both"), on real processes.

The workload names each key's lock with the key as its hash tag (``lock/{fenced/K}``), so a
lock and its key are in one shard's Raft group: the group that mints a token judges the fenced
writes made with it, and a node that no longer owns the shard refuses them (``wrong_shard``)
like every request. The harness tells the workload the shard count (workload option
``shards``), which makes the fencing checker judge token uniqueness and order per lock: two
shards' groups hand out equal tokens (``term << 32 | seq`` of each group's own log).

- the correct build under ``rebalance,partition,kill`` is valid with every checker, the
  fencing, lock-exclusion and shard-ownership checkers among them, and stale writes were
  refused (the workload's deposed holders were fenced off);
- the planted ``no-fencing-check`` (the state machine skips the key's fence) is caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from checkers.history import load_jsonl
from ukehi.shardmap import shard_of
from workloads.fencing import key_name, lock_name

CLI = [sys.executable, "-m", "harness.cli"]
ROOT = os.geteuid() == 0
SHARDS = 16


def run_fencing(results, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + ["run", "--workload", "fencing", "--nodes", "5", "--shards", str(SHARDS), "--replication-factor", "3",
               "--time-limit", "15", *args, "--results-dir", str(results)],
        capture_output=True, text=True, timeout=400)


def test_a_lock_and_its_key_share_a_shard_at_every_shard_count():
    for shards in (2, 8, SHARDS, 64):
        assert all(shard_of(lock_name(k), shards) == shard_of(key_name(k), shards) for k in range(20))
    # and the three default keys do not all share one shard: tokens of several groups meet
    assert len({shard_of(key_name(k), SHARDS) for k in range(3)}) > 1


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_sharded_fencing_under_rebalance_partitions_and_kills_is_valid(tmp_path):
    results = tmp_path / "results"
    done = run_fencing(results, "--nemesis", "rebalance,partition,kill", "--nemesis-interval", "2", "--seed", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = (results / "latest").resolve()
    test = json.loads((run / "test.json").read_text())
    assert test["workload_options"] == {"shards": SHARDS}
    verdict = json.loads((run / "results.json").read_text())
    checkers = verdict["checkers"]
    assert verdict["valid"] is True, {k: v.get("valid") for k, v in checkers.items()}
    for name in ("fencing", "lock-exclusion", "linearizable", "shard-ownership", "durability", "unaffected-shards"):
        assert checkers[name]["valid"] is True, (name, checkers[name])
    history = load_jsonl(str(run / "history.jsonl"))
    done_ops = [op for op in history if op.is_client and op.type != "invoke"]
    refused = [op for op in done_ops if op.f == "fenced-put" and op.type == "fail"]
    acquired = [op for op in done_ops if op.f == "acquire" and op.type == "ok"]
    assert refused and acquired, (len(refused), len(acquired))
    # Tokens of several groups: equal tokens may repeat across locks, never within one.
    per_lock: dict = {}
    for op in acquired:
        assert op.value not in per_lock.setdefault(op.key, set()), op
        per_lock[op.key].add(op.value)


@pytest.mark.slow
def test_sharded_fencing_catches_a_node_that_skips_the_fence(tmp_path):
    results = tmp_path / "results"
    done = run_fencing(results, "--nemesis", "pause", "--nemesis-interval", "2", "--seed", "1",
                       "--node-option", "unsafe_bug=no-fencing-check", "--workload-option", "stall_probability=0.3")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    verdict = json.loads(((results / "latest").resolve() / "results.json").read_text())
    assert verdict["checkers"]["fencing"]["valid"] is False, verdict["checkers"]["fencing"]
