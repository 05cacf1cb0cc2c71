"""`ukehi-jepsen run --shards S --replication-factor R` (issue 15): a sharded cluster of real node
processes under faults, judged per key as an unsharded one; and the settings it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkers.history import load_jsonl
from checkers.whitebox import SHARDED_NAMES as SHARDED_WHITEBOX
from harness.commands.run import build_spec
from harness.sharding import every_shard_led
from harness.spec import SpecError
from ukehi.shardmap import ShardMap, group_of, meta_members

CLI = [sys.executable, "-m", "harness.cli"]
ROOT = os.geteuid() == 0
NODES = [f"n{i}" for i in range(1, 6)]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def spec_of(**overrides):
    settings = dict(workload="register", nemesis="partition,kill", nemesis_interval=None, nodes=None,
                    node_count=5, concurrency="2n", rate=50.0, time_limit=10.0, seed=0, backend="local",
                    read_mode="readindex", corruption_policy="truncate-to-last-good", results_dir="/tmp",
                    leave_running=False, name=None, node_option=[], shards=16, replication_factor=3)
    settings.update(overrides)
    return build_spec(**settings)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_five_nodes_sixteen_shards_under_partitions_and_kills_is_valid(tmp_path):
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nodes", "5", "--shards", "16",
                   "--replication-factor", "3", "--nemesis", "partition,kill", "--nemesis-interval", "3",
                   "--time-limit", "20", "--results-dir", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    run = (results / "latest").resolve()
    spec = json.loads((run / "test.json").read_text())
    assert spec["node_options"]["shards"] == 16 and spec["node_options"]["replication_factor"] == 3
    verdict = json.loads((run / "results.json").read_text())
    # The client history, and the white-box checkers per Raft group (metadata + 16 shards).
    assert set(verdict["checkers"]) == {"linearizable", "stats", "availability", *SHARDED_WHITEBOX}
    assert verdict["valid"] is True and verdict["checkers"]["linearizable"]["valid"] is True
    assert len(verdict["checkers"]["log-matching"]["groups"]) == 17
    assert verdict["checkers"]["replica-agreement"]["compared"] >= 17
    history = load_jsonl(str(run / "history.jsonl"))
    faults = {op.f for op in history if not op.is_client}
    assert {"start-partition", "kill"} & faults, f"no fault was injected: {faults}"
    # The keys the clients wrote were spread over the shards (each key in its own shard's group).
    smap = ShardMap.initial(NODES, 16, 3)
    shards = {smap.shard_for(f"register/{op.key}") for op in history
              if op.is_client and op.type == "ok" and op.f == "write"}
    assert len(shards) >= 4, shards
    # Every node kept one data directory per group it hosts, as the map places them (group 0:
    # the metadata group, on its members only), and the metadata group committed the map.
    meta = meta_members(NODES, 3)
    for node in NODES:
        groups = sorted(p.name for p in (run / "nodes" / node / "data").iterdir() if p.name.startswith("group-"))
        expected = [f"group-{group_of(s)}" for s in smap.shards_of(node)] + (["group-0"] if node in meta else [])
        assert groups == sorted(expected), node
        log = (run / "nodes" / node / "node.log").read_text()
        assert "shards=16" in log and "event=group-starting" in log
        assert ("event=shard-map-committed" in log) == (node in meta), node


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_stale_reads_in_a_sharded_cluster_are_caught(tmp_path):
    """The planted stale-read bug (every group answers reads from local state) is found in a
    sharded cluster as in an unsharded one: the per-key checker sees across groups."""
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nodes", "5", "--shards", "8", "--nemesis", "partition",
                   "--nemesis-interval", "2", "--time-limit", "25", "--rate", "100",
                   "--node-option", "unsafe_bug=stale-read", "--results-dir", str(results))
    assert done.returncode == 1, done.stdout + done.stderr
    verdict = json.loads(((results / "latest").resolve() / "results.json").read_text())
    assert verdict["checkers"]["linearizable"]["valid"] is False


def test_shard_settings_go_to_every_node_and_unsupported_ones_are_refused():
    spec = spec_of()
    assert spec.node_options == {"shards": 16, "replication_factor": 3}
    assert spec.nemeses == ("partition", "kill")
    # No --nemesis on a sharded run: the faults it supports, not the default mix.
    assert spec_of(nemesis=None).nemeses == ("partition", "kill")
    assert spec_of(shards=None, replication_factor=None).node_options == {}
    assert spec_of(replication_factor=None, node_count=2).node_options["replication_factor"] == 2
    for overrides, message in [
        ({"replication_factor": 6}, "--replication-factor 6: give 1 to the node count"),
        ({"shards": None}, "only applies to a sharded cluster"),
        ({"shards": 0}, "--shards 0"),
        ({"nemesis": "partition,membership"}, "--nemesis membership with --shards"),
        ({"nemesis": "disk"}, "--nemesis disk with --shards"),
    ]:
        with pytest.raises(SpecError, match=message):
            spec_of(**overrides)
    assert spec_of(nemesis="partition-majority,kill-one,pause,clock").nemeses[0] == "partition-majority"
    # The transactional workloads run sharded: the harness tells them the shard count.
    assert spec_of(workload="list-append", shards=8).workload_options == {"shards": 8}
    assert spec_of(workload="register").workload_options == {}
    # Fencing runs sharded too (its lock names carry the key as a hash tag), told the shard
    # count so its checker judges tokens per lock (tokens are per Raft group).
    assert spec_of(workload="fencing").node_options == {"shards": 16, "replication_factor": 3}
    assert spec_of(workload="fencing").workload_options == {"shards": 16}
    assert spec_of(workload="fencing", shards=None, replication_factor=None).workload_options == {}


def test_run_refuses_a_replication_factor_above_the_node_count_with_254(tmp_path):
    done = run_cli("run", "--nodes", "3", "--shards", "4", "--replication-factor", "4",
                   "--results-dir", str(tmp_path), timeout=60)
    assert done.returncode == 254
    assert "--replication-factor 4: give 1 to the node count (3)" in done.stderr


def test_up_means_a_leader_in_every_shard():
    def node(shards: dict[str, str], count: int = 3) -> dict:
        return {"shard_count": count, "shards": {s: {"role": r} for s, r in shards.items()}}

    assert every_shard_led({"n1": node({"0": "leader", "1": "follower"}), "n2": node({"1": "leader", "2": "leader"})})
    assert not every_shard_led({"n1": node({"0": "leader"}), "n2": node({"1": "leader", "2": "follower"})})
    assert not every_shard_led({"n1": None, "n2": {"role": "leader"}})  # unsharded statuses: no shards
    assert not every_shard_led({})


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_a_node_that_serves_shards_it_does_not_host_is_caught(tmp_path):
    """The planted no-shard-check bug (a non-owner serves the key from one of its own groups
    instead of answering wrong_shard) is found with no fault at all: the register workload's
    clients, pinned to different nodes, see one key in two groups."""
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nodes", "5", "--shards", "8", "--nemesis", "none",
                   "--time-limit", "15", "--node-option", "unsafe_bug=no-shard-check", "--results-dir", str(results))
    assert done.returncode == 1, done.stdout + done.stderr
    verdict = json.loads(((results / "latest").resolve() / "results.json").read_text())
    assert verdict["checkers"]["linearizable"]["valid"] is False
