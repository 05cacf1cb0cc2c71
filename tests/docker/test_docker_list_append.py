"""list-append and rw-register (transactions, the Elle-style checker) on three containers under
partitions and kills: valid on the correct build, with transactions that really ran and faults
that really happened (issue 14: the transactional workloads run on every backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["list-append", "rw-register"])
def test_txn_workload_under_partitions_and_kills_is_valid(workload: str, docker_client: Any, node_image: Any,
                                                          tmp_path: Path, no_leftovers: None) -> None:
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--backend", "docker",
                           "--workload", workload, "--nemesis", "partition,kill", "--nemesis-interval", "1.5",
                           "--time-limit", "12", "--results-dir", str(results)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = (results / "latest").resolve()
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True
    elle = verdict["checkers"]["elle"]
    assert elle["valid"] is True and elle["anomaly_types"] == [] and elle["model"] == workload
    assert elle["txns"]["ok"] > 20, elle["txns"]
    assert not (run / "elle.html").exists()  # drawn only for an invalid run
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    nemesis_fs = {op["f"] for op in history if op["process"] == "nemesis" and op["type"] == "info"}
    assert {"kill", "start-partition"} <= nemesis_fs, nemesis_fs
    oks = [op for op in history if op["process"] != "nemesis" and op["type"] == "ok"]
    assert all(op["f"] == "txn" for op in oks)
    # writes acknowledged with their log index, and reads that saw them (a list of appends,
    # or a register's value), read-only transactions among them (the node's read path)
    assert any(isinstance(op.get("raft_index"), int) for op in oks)
    assert any(m[0] == "r" and m[2] for op in oks for m in op["value"]), "no read saw a write"
    assert any(all(m[0] == "r" for m in op["value"]) and any(m[2] for m in op["value"]) for op in oks)
    # the white-box checkers judged the containers' WALs too
    assert verdict["checkers"]["durability"]["valid"] is True
