"""`ukehi-jepsen run --nemesis membership` end to end: spares join, the history records every change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checkers.history import load_jsonl
from nemeses.membership import ADD, REMOVE, SETTLE, TRANSFER

CLI = [sys.executable, "-m", "harness.cli"]


@pytest.mark.slow
def test_membership_run_records_configurations_before_and_after(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "membership", "--node-count", "5",
                                 "--time-limit", "12", "--nemesis-interval", "1.5", "--seed", "2",
                                 "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300)
    run = (results / "latest").resolve()
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((run / "results.json").read_text())["valid"] is True
    ops = [op for op in load_jsonl(str(run / "history.jsonl")) if op.process == "nemesis" and op.type == "info"]
    changes = [op for op in ops if op.f in (ADD, REMOVE, TRANSFER) and "after" in (op.value or {})]
    assert {op.f for op in changes} >= {ADD, REMOVE}, [op.value for op in ops]
    founders = ["n1", "n2", "n3"]  # 5 nodes: the first 3 found the cluster, n4 and n5 are spares
    assert changes[0].value["before"]["voters"] == founders  # skipped ops change nothing
    for op in changes:
        before, after = op.value["before"], op.value["after"]
        if op.value["outcome"] != "ok":
            continue
        if op.f == ADD:
            assert after["voters"] == sorted(before["voters"] + [op.value["node"]])
        elif op.f == REMOVE:
            assert after["voters"] == sorted(set(before["voters"]) - {op.value["node"]})
            assert len(after["voters"]) >= 3
            assert isinstance(op.value["restarted_fresh_pid"], int)
        else:
            assert after["leader"] == op.value["node"] and after["voters"] == before["voters"]
    # Each change starts from where the previous one left the configuration.
    for prev, nxt in zip(changes, changes[1:]):
        assert nxt.value["before"]["voters"] == prev.value["after"]["voters"]
    settle = [op for op in ops if op.f == SETTLE]
    assert len(settle) == 1 and settle[0].value["members"]["voters"] == changes[-1].value["after"]["voters"]
    # The spares ran as nodes (started with --join), so clients could be pinned to them too.
    for spare in ("n4", "n5"):
        log = (run / "nodes" / spare / "node.log").read_text()
        assert "join=true" in log, log[:400]
