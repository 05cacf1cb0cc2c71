"""The snapshot-lag schedule (nemeses/snapshot_lag.py): a follower falls behind a compaction,
so the leader must send it a snapshot, and the follower installs and restores it.

The end-to-end run checks the nodes' own logs: the follower the op cut off logged
``snapshot-installed`` at or above the leader's compaction point, and the correct build
stays valid under every checker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from checkers.history import load_jsonl
from harness.registry import NEEDS_NETWORK_FAULTS, NEMESES, NEMESIS_NODE_OPTIONS, SHADING, parse_nemeses
from harness.run import with_schedule_options
from harness.spec import TestSpec
from nemeses import snapshot_lag
from ukehi.nodelog import parse_line

CLI = [sys.executable, "-m", "harness.cli"]


def test_registered_with_its_node_options():
    assert parse_nemeses("snapshot-lag") == ("snapshot-lag",)
    assert NEMESES["snapshot-lag"] is snapshot_lag.snapshot_lag_package
    assert SHADING["snapshot-lag"].start == (snapshot_lag.LAG,) and SHADING["snapshot-lag"].stop == (snapshot_lag.STOP_LAG,)
    assert NEMESIS_NODE_OPTIONS["snapshot-lag"] == {"snapshot_threshold": 50, "snapshot_chunk_size": 48,
                                                    "wal_segment_size": 4096}
    assert "snapshot-lag" not in NEEDS_NETWORK_FAULTS  # a kill: works on loopback too


def test_the_schedule_sets_a_low_threshold_unless_the_user_gave_one():
    base = TestSpec(name="t", workload="register", nodes=("n1", "n2", "n3"), nemeses=("snapshot-lag",))
    assert with_schedule_options(base).node_options == {"snapshot_threshold": 50, "snapshot_chunk_size": 48,
                                                        "wal_segment_size": 4096}
    mine = TestSpec(name="t", workload="register", nodes=("n1", "n2", "n3"), nemeses=("snapshot-lag",),
                    node_options={"snapshot_threshold": 200, "heartbeat": 50})
    assert with_schedule_options(mine).node_options == {"snapshot_threshold": 200, "heartbeat": 50,
                                                        "snapshot_chunk_size": 48, "wal_segment_size": 4096}
    other = TestSpec(name="t", workload="register", nodes=("n1", "n2", "n3"), nemeses=("kill",))
    assert with_schedule_options(other) is other


def installs(log: Path) -> list[int]:
    """Indexes of the snapshots a node installed from its leader (node.log)."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "event=snapshot-installed" in line:
            out.append(int(line.split(" index=")[1].split()[0]))
    return out


def sends(run: Path) -> list[dict[str, str]]:
    """Every ``snapshot-sent`` line of every node (the leader logs one per snapshot it starts
    sending, with ``chunks``: how many InstallSnapshot messages it takes)."""
    out = []
    for log in run.glob("nodes/*/node.log"):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if "event=snapshot-sent" in line:
                out.append(parse_line(line))
    return out


def test_a_lagging_follower_installs_the_leaders_snapshot(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "snapshot-lag", "--time-limit", "20",
                                 "--nemesis-interval", "2", "--seed", "4", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = (results / "latest").resolve()
    spec = json.loads((run / "test.json").read_text())
    assert spec["node_options"]["snapshot_threshold"] == 50  # set for the schedule, recorded
    assert spec["node_options"]["snapshot_chunk_size"] == 48
    # small WAL segments: every compaction removes whole segments, and wal-retention judges them
    retention = json.loads((run / "results.json").read_text())["checkers"]["wal-retention"]
    assert retention["valid"] is True and retention["compactions"] > 0, retention
    ops = [op for op in load_jsonl(str(run / "history.jsonl"))
           if not op.is_client and op.f == snapshot_lag.LAG and op.type != "invoke"]
    done = [op.value for op in ops if op.value.get("installed")]
    assert done, [op.value for op in ops]
    for value in done:
        follower = value["follower"]
        assert follower != value["leader"]
        assert value["compacted_to"] > value["follower_holds_at_most"]
        # The follower's own log says it installed a snapshot at least as new as the
        # leader's compaction point: InstallSnapshot happened and was restored.
        installed = installs(run / "nodes" / follower / "node.log")
        assert installed and max(installed) >= value["compacted_to"], (follower, installed, value)
        # ... and it came in several 48-byte chunks: the multi-chunk path ran
        to_it = [s for s in sends(run) if s.get("peer") == follower and int(s["index"]) >= value["compacted_to"]]
        assert to_it and all(int(s["chunks"]) == -(-int(s["bytes"]) // 48) >= 2 for s in to_it), to_it
        # ... and the op's catch_up record (judged by the catch-up checker) says it caught up
        assert value["catch_up"]["node"] == follower and value["catch_up"]["reached"] is True, value
        assert value["catch_up"]["target"] == value["compacted_to"]
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True and verdict["checkers"]["availability"]["valid"] is True
    catch_up = verdict["checkers"]["catch-up"]
    assert catch_up["valid"] is True and catch_up["caught_up"] == catch_up["judged"] >= len(done), catch_up
