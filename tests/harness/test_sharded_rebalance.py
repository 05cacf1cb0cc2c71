"""The `rebalance` nemesis (issue 15): shard replicas move between nodes during a sharded run
(with partitions), each move recorded with its shard, source, target and the map epoch before
and after, shaded on the plots; the run stays valid per key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from checkers.history import load_jsonl
from harness.registry import NEMESES, SHADING
from harness.report.faults import fault_events
from harness.spec import SpecError
from ukehi.shardmap import ShardMap

from test_sharded_run import spec_of as sharded_spec

CLI = [sys.executable, "-m", "harness.cli"]
ROOT = os.geteuid() == 0
NODES = [f"n{i}" for i in range(1, 6)]


def spec_of(**overrides):
    return sharded_spec(**{"nemesis": "rebalance,partition", "shards": 8, **overrides})


def test_rebalance_is_a_sharded_nemesis_only():
    assert "rebalance" in NEMESES and SHADING["rebalance"].instant == ("move-replica", "add-node", "remove-node")
    assert spec_of().nemeses == ("rebalance", "partition")
    with pytest.raises(SpecError, match="--nemesis rebalance moves shard replicas: give --shards"):
        spec_of(shards=None, replication_factor=None)


def run_cli(results, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + ["run", "--workload", "register", "--nodes", "5", "--shards", "8", "--replication-factor", "3",
               *args, "--results-dir", str(results)], capture_output=True, text=True, timeout=400)


def check_moves(run) -> tuple[list, list, dict]:
    """The run's move ops, the ones that finished, and the final settle op, after checking that
    every record is consistent: a finished move took the shard from the members it had (as the
    earlier moves left them) to those members less the source plus the target, two epochs on;
    a refused one changed nothing; the settled map is what the moves add up to."""
    history = load_jsonl(str(run / "history.jsonl"))
    ops = [(op.f, op.value) for op in history if not op.is_client and op.type != "invoke"
           and op.f in ("move-replica", "add-node", "remove-node")]
    moves = [value for f, value in ops if f == "move-replica"]
    # The last node starts as a spare (harness/sharding.py rebalance_founders): four founders.
    placement = {s: sorted(m) for s, m in enumerate(ShardMap.initial(NODES[:4], 8, 3).members)}
    known = True  # no op of unknown outcome so far: the placement is exactly known
    finished = []
    for f, value in ops:
        if "skipped" in value:
            continue
        if f != "move-replica":
            # An add or remove: the map its rebalance ended at (test_sharded_nodes.py checks it).
            if value.get("rebalanced") and "members_after" in value:
                placement = {int(s): sorted(m) for s, m in value["members_after"].items()}
            elif value.get("outcome") != "fail":
                known = False
            continue
        shard = value["shard"]
        if known:
            assert value["members_before"] == placement[shard], (value, placement[shard])
        if value["outcome"] == "ok":
            finished.append(value)
            assert value["epoch_after"] >= value["epoch_before"] + 2, value
            assert value["members_after"] == sorted(set(value["members_before"]) - {value["from"]} | {value["to"]})
            placement[shard] = value["members_after"]
        elif value["outcome"] == "unknown":
            known = False
    settle = [op.value for op in history if not op.is_client and op.f == "settle-shards" and op.type != "invoke"]
    assert settle and settle[-1]["settled"] is True and settle[-1]["moves"] == [], settle
    if known:
        assert {int(s): sorted(m) for s, m in settle[-1]["members"].items()} == placement, (settle, placement)
    assert settle[-1]["epoch"] >= 1 + 2 * len(finished), settle[-1]
    # Each move, add and remove is shaded on the plots (an instant of the rebalance family).
    _windows, instants = fault_events(history, [SHADING["rebalance"]])
    assert sum(1 for i in instants if i.name == "rebalance") == len(ops), instants
    assert (run / "rate.png").exists() and (run / "latency.png").exists()
    return moves, finished, settle[-1]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_replica_moves_under_partitions_keep_a_sharded_run_valid(tmp_path):
    """A move cut by a partition (its learner cannot catch up, or the metadata group has no
    quorum) fails and is undone, or finishes: either way the run stays valid and the map
    adds up."""
    results = tmp_path / "results"
    done = run_cli(results, "--nemesis", "rebalance,partition", "--nemesis-interval", "2", "--time-limit", "20",
                   "--seed", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = (results / "latest").resolve()
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True and verdict["checkers"]["linearizable"]["valid"] is True
    moves, finished, settle = check_moves(run)
    assert moves, "no move was tried"
    history = load_jsonl(str(run / "history.jsonl"))
    assert "start-partition" in {op.f for op in history if not op.is_client}
    print(f"rebalance,partition: {len(moves)} moves ({len(finished)} ok), final epoch {settle['epoch']}, "
          f"{sum(1 for op in history if op.is_client and op.type == 'ok')} client ops ok")


@pytest.mark.slow
def test_replica_moves_alone_finish_and_keep_a_sharded_run_valid(tmp_path):
    results = tmp_path / "results"
    done = run_cli(results, "--nemesis", "rebalance", "--nemesis-interval", "1", "--time-limit", "10", "--seed", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = (results / "latest").resolve()
    assert json.loads((run / "results.json").read_text())["valid"] is True
    moves, finished, settle = check_moves(run)
    history = load_jsonl(str(run / "history.jsonl"))
    changed = [op.value for op in history if not op.is_client and op.type != "invoke"
               and op.f in ("add-node", "remove-node") and op.value.get("outcome") == "ok"]
    # Only the nemesis's own mid-move restarts stand in their way (node changes take seconds
    # each, so a 10 s run has fewer moves; tests/harness/test_sharded_nodes.py judges those).
    assert len(finished) + len(changed) >= 2, (moves, changed)
    killed = [m["disrupted"] for m in moves if "killed" in m.get("disrupted", {})]
    print(f"rebalance: {len(moves)} moves ({len(finished)} ok), {len(changed)} node changes ok, {len(killed)} with a node killed mid-move "
          f"({', '.join(k['role'] + '@' + str(k['step_seen']) for k in killed) or 'none'}), "
          f"final epoch {settle['epoch']}")


def test_the_shards_in_use_are_those_whose_group_committed_between_two_looks():
    """The rebalance nemesis moves a shard the workload is using when it can: one whose
    commit index (the highest any node reports) grew between two looks at the statuses."""
    from nemeses.rebalance import busy_shards, shard_commits

    def status(**commits):
        return {"sharded": True, "shards": {s[1:]: {"commit_index": c, "role": "follower"} for s, c in commits.items()}}

    first = shard_commits({"n1": status(s0=10, s1=5), "n2": status(s0=12, s2=7), "n3": None})
    assert first == {0: 12, 1: 5, 2: 7}
    second = shard_commits({"n1": status(s0=12, s1=9), "n2": status(s0=11, s2=7, s3=4), "n3": status(s2=6)})
    # Shard 0 only caught up on n1 (12 was already committed), shard 2 did not move, shard 3
    # was not seen the first time (nothing to compare with): only shard 1 is in use.
    assert busy_shards(first, second) == [1]
    assert busy_shards(second, second) == []


def test_a_move_takes_only_a_shard_whose_group_has_a_majority_running():
    """With most of a shard's members killed its group cannot change membership: the move would
    only wait out its timeout and block the schedule (the restart of those nodes with it)."""
    from nemeses.rebalance import move_choices

    members = {0: ["n1", "n2", "n3"], 1: ["n3", "n4", "n5"], 2: ["n1", "n4", "n5"]}
    # n1 and n2 down: shard 0 has one of three running; shard 2 keeps two of three (its dead
    # member n1 may be the one moved away); shard 1 has a move in flight.
    choices = move_choices(members, {1}, ["n3", "n4", "n5"])
    assert choices == [(2, "n3")]
    assert move_choices(members, set(), ["n4"]) == []
    assert (0, "n4") in move_choices(members, set(), ["n1", "n2", "n3", "n4", "n5"])
