"""The `rebalance` nemesis adds and removes nodes of a running sharded cluster (issue 15): a
sharded run with it starts its last node as a spare (`ukehi node --join` with the founders'
--peers), `add-node` ops add a node the map lacks, `remove-node` ops remove one outside the
metadata group, each op recording its outcome, the epochs and the shards the partitioner's plan
moved; the run stays valid and the ops are shaded like the replica moves."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from checkers.history import load_jsonl
from harness.backends.local import LocalCluster
from harness.db import UkehiDB
from harness.registry import SHADING
from harness.report.faults import fault_events
from harness.sharding import rebalance_founders
from nemeses.rebalance import (ADD, MOVE, OP_WEIGHTS, REMOVE, add_choices, changed_shards, choose_kind,
                               feasible_kinds, metadata_members, move_choices, remove_choices)
from ukehi.shardmap import ShardMap, meta_members, placement

CLI = [sys.executable, "-m", "harness.cli"]
FIVE = [f"n{i}" for i in range(1, 6)]
SHARDED = {"shards": 16, "replication_factor": 3}


def test_a_sharded_rebalance_run_keeps_its_last_node_as_a_spare():
    assert rebalance_founders(FIVE, SHARDED, ["rebalance", "partition"]) == FIVE[:4]
    # Not sharded, or no rebalance nemesis: every node founds (None), as before.
    assert rebalance_founders(FIVE, {}, ["rebalance"]) is None
    assert rebalance_founders(FIVE, SHARDED, ["partition", "kill"]) is None
    # A spare only while R founders are left: three nodes with R = 3 have none to spare.
    assert rebalance_founders(FIVE[:3], SHARDED, ["rebalance"]) is None
    assert rebalance_founders(FIVE[:4], SHARDED, ["rebalance"]) == FIVE[:3]
    assert rebalance_founders(FIVE[:3], {"shards": 4, "replication_factor": 2}, ["rebalance"]) == FIVE[:2]
    # The rebalance family shades its node changes like its moves.
    assert set(SHADING["rebalance"].instant) == {MOVE, ADD, REMOVE}


def test_a_sharded_spare_joins_with_the_founders_as_its_peers(tmp_path):
    """A sharded joiner's --peers name the cluster (the founders, itself allowed): one that
    listed the other spares would compute another cluster's map and be refused."""
    with LocalCluster(FIVE, results_dir=tmp_path, isolation="loopback") as cluster:
        db = UkehiDB(cluster, node_options=SHARDED, founders=FIVE[:4], insecure=True)

        def peers(name: str) -> list[str]:
            argv = db.argv(name)
            return sorted(p.split("=")[0] for p in argv[argv.index("--peers") + 1].split(","))

        assert "--join" in db.argv("n5") and peers("n5") == FIVE
        assert "--join" not in db.argv("n1") and peers("n1") == FIVE[:4]
        db.joiners.add("n4")  # a founder removed and wiped (it rejoins with --join): still the founders
        assert peers("n4") == FIVE[:4]
        unsharded = UkehiDB(cluster, founders=FIVE[:3], insecure=True)
        argv = unsharded.argv("n5")  # an unsharded joiner still lists every node
        assert sorted(p.split("=")[0] for p in argv[argv.index("--peers") + 1].split(",")) == FIVE


def map_dict(nodes, founders=None, leaving=(), members=None) -> dict:
    smap = ShardMap.initial(founders or nodes, 8, 3)
    return {"epoch": 5, "replication_factor": 3, "nodes": list(nodes), "founders": list(founders or nodes),
            "leaving": list(leaving), "members": [list(m) for m in (members or smap.members)]}


def test_node_ops_choose_only_changes_the_cluster_can_make():
    founders = FIVE[:4]
    meta = set(meta_members(founders, 3))
    outside = sorted(set(founders) - meta)
    assert len(outside) == 1
    smap = map_dict(founders)
    # Add: a running node the map lacks (the spare); not a node down, not one of the map's.
    assert add_choices(smap, FIVE) == ["n5"]
    assert add_choices(smap, FIVE[:4]) == []
    # Remove: any node, metadata members too (their metadata replica moves first), never
    # below R nodes.
    assert remove_choices(smap) == founders
    assert remove_choices(map_dict([*founders, "n5"], founders)) == FIVE
    assert remove_choices(map_dict(founders, leaving=outside)) == []  # 3 would stay less one
    gone = [n for n in founders if n not in outside]
    assert remove_choices(map_dict(gone, founders)) == []  # R nodes left: none may go
    # A node still leaving is neither added (its removal is not done) nor removed again.
    leaving = map_dict([*founders, "n5"], founders, leaving=["n5"])
    assert add_choices(leaving, FIVE) == [] and remove_choices(leaving) == founders
    # The metadata members the admin calls go to first: the map's own once one has moved.
    assert metadata_members(smap) == list(meta_members(founders, 3))
    assert metadata_members({**smap, "meta": ["n4", "n2", "n3"]}) == ["n4", "n2", "n3"]
    # Moves go only to the map's nodes less the leaving ones: not to a spare not yet added.
    members = {0: ["n1", "n2", "n3"]}
    assert move_choices(members, set(), FIVE, founders) == [(0, "n4")]
    assert move_choices(members, set(), FIVE, ["n1", "n2", "n3"]) == []
    assert move_choices(members, set(), FIVE) == [(0, "n4"), (0, "n5")]
    # Which shards moved: those whose member set changed (the order within a set is no change).
    assert changed_shards({0: ["n1", "n2", "n3"], 1: ["n2", "n3", "n4"]},
                          {0: ["n3", "n2", "n1"], 1: ["n2", "n3", "n5"]}) == [1]
    assert changed_shards({}, {0: ["n1"]}) == []


def test_op_kinds_follow_their_weights_among_the_feasible_ones():
    rng = random.Random(7)
    drawn = Counter(choose_kind(rng) for _ in range(4000))
    for kind, weight in OP_WEIGHTS:
        assert abs(drawn[kind] / 4000 - weight) < 0.03, drawn
    assert set(drawn) == {MOVE, ADD, REMOVE}
    # Only what the cluster's shape allows, in the same proportions among those.
    only = Counter(choose_kind(rng, {MOVE, REMOVE}) for _ in range(3000))
    assert set(only) == {MOVE, REMOVE} and abs(only[MOVE] / 3000 - 2 / 3) < 0.03, only
    assert {choose_kind(rng, {ADD}) for _ in range(50)} == {ADD}


def test_the_shape_of_the_map_says_which_kinds_can_follow():
    founders = FIVE[:4]
    outside = sorted(set(founders) - set(meta_members(founders, 3)))
    # At the start: the spare can be added, the founder outside the metadata group removed,
    # and every shard has a node outside it to move to.
    assert feasible_kinds(map_dict(founders), FIVE) == {MOVE, ADD, REMOVE}
    assert feasible_kinds(map_dict(founders), founders) == {MOVE, REMOVE}  # the spare is down
    # R nodes left: every shard is on all three; only an add (of the spare or the removed one).
    three = [n for n in founders if n not in outside]
    assert feasible_kinds(map_dict(three, founders), FIVE) == {ADD}
    # Every node in the map: no add.
    assert ADD not in feasible_kinds(map_dict(FIVE, founders), FIVE)


def run_cli(results, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + ["run", "--workload", "register", "--nodes", "5", "--shards", "16", "--replication-factor", "3",
               *args, "--results-dir", str(results)], capture_output=True, text=True, timeout=400)


def node_ops(history, f: str) -> list[dict]:
    return [op.value for op in history if not op.is_client and op.f == f and op.type != "invoke"]


@pytest.mark.slow
def test_nodes_added_and_removed_mid_run_keep_a_sharded_run_valid(tmp_path):
    """On real processes: the spare and a removed founder are added, founders removed (a
    metadata member among them when the draw picks one); every rebalance ends at the partitioner's placement of the nodes
    that stay, and every checker passes."""
    results = tmp_path / "results"
    done = run_cli(results, "--nemesis", "rebalance", "--nemesis-interval", "2", "--time-limit", "20", "--seed", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = (results / "latest").resolve()
    test = json.loads((run / "test.json").read_text())
    assert test["node_options"] == SHARDED
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True, {k: v.get("valid") for k, v in verdict["checkers"].items()}
    assert all(c["valid"] is True for c in verdict["checkers"].values()), verdict["checkers"].keys()
    history = load_jsonl(str(run / "history.jsonl"))
    adds, removes = node_ops(history, ADD), node_ops(history, REMOVE)
    ok_adds = [v for v in adds if v.get("outcome") == "ok"]
    ok_removes = [v for v in removes if v.get("outcome") == "ok"]
    assert ok_adds and ok_removes, (adds, removes)
    for v in ok_adds + ok_removes:
        assert v["epoch_changed"] > v["epoch_before"], v
        assert v["rebalanced"] is True, v
        assert v["epoch_after"] >= v["epoch_changed"], v
        staying = set(v["nodes_after"]) - set(v["leaving_after"])
        # The rebalance ended where the partitioner places the nodes that stay, moving the
        # shards its plan named.
        target = placement(sorted(staying), 16, 3)
        assert {int(s): set(m) for s, m in v["members_after"].items()} == {s: set(m) for s, m in enumerate(target)}, v
        assert set(v["planned_shards"]) <= set(v["moved_shards"]), v
        assert v["planned_shards"], v  # a node set change of 16 shards at R = 3 moves some
        # Leadership handed to the replicas the rebalance brought in: only shards that moved.
        assert set(v.get("leaders_to_moved_in", {})) <= {str(s) for s in v["moved_shards"]}, v
    for v in ok_adds:
        assert v["node"] in v["nodes_after"] and v["node"] not in v["nodes_before"], v
        assert all(v["node"] in v["members_after"][str(s)] for s in v["planned_shards"]), v
        assert all(t["node"] == v["node"] for t in v.get("leaders_to_moved_in", {}).values()), v
    for v in ok_removes:
        assert v["node"] not in v["nodes_after"], v
        assert all(v["node"] not in m for m in v["members_after"].values()), v
        # Out of the map, any node (a founder too) comes back as a fresh spare (--join).
        assert "restarted_fresh_pid" in v and "kept" not in v, v
    settle = node_ops(history, "settle-shards")
    assert settle and settle[-1]["settled"] is True and not settle[-1]["moves"], settle
    # Every rebalance op is shaded on the plots (an instant of the rebalance family).
    ops = [v for f in (MOVE, ADD, REMOVE) for v in node_ops(history, f)]
    _windows, instants = fault_events(history, [SHADING["rebalance"]])
    assert sum(1 for i in instants if i.name == "rebalance") == len(ops), instants
    led = [t for v in ok_adds + ok_removes for t in v.get("leaders_to_moved_in", {}).values()]
    print(f"rebalance with nodes: {len(adds)} adds ({len(ok_adds)} ok), {len(removes)} removes "
          f"({len(ok_removes)} ok), {len(node_ops(history, MOVE))} moves, {len(led)} leads handed to moved-in "
          f"replicas ({sum(1 for t in led if t.get('outcome') == 'ok')} ok), final epoch {settle[-1]['epoch']}")
