"""list-append (transactions, the Elle-style checker) on three real sshd hosts (namespaces) under
partitions and kills: valid on the correct build, with transactions that really ran and faults
that really happened (issue 14: the transactional workloads run on every backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd_hosts import SshdHosts, checked_sshd_hosts, ssh_args, sshd_missing_reason  # noqa: E402

CLI = [sys.executable, "-m", "harness.cli"]
pytestmark = [pytest.mark.root, pytest.mark.skipif(sshd_missing_reason() is not None,
                                                   reason=sshd_missing_reason() or "")]


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    with checked_sshd_hosts(3, "ukj-sshd-la-") as made:
        yield made


@pytest.mark.slow
def test_list_append_under_partitions_and_kills_is_valid(hosts: SshdHosts, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(CLI + ["run", "--workload", "list-append", "--nemesis", "partition,kill",
                                 "--nemesis-interval", "1.5", "--time-limit", "12", "--rate", "30",
                                 "--results-dir", str(results), "--ssh-node-port", "7311",
                                 *ssh_args(hosts, hosts.known_hosts(), "strict")],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run = (results / "latest").resolve()
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True
    elle = verdict["checkers"]["elle"]
    assert elle["valid"] is True and elle["anomaly_types"] == [] and elle["model"] == "list-append"
    assert elle["txns"]["ok"] > 20, elle["txns"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    nemesis_fs = {op["f"] for op in history if op["process"] == "nemesis" and op["type"] == "info"}
    assert {"kill", "start-partition"} <= nemesis_fs, nemesis_fs
    oks = [op for op in history if op["process"] != "nemesis" and op["type"] == "ok"]
    assert any(isinstance(op.get("raft_index"), int) for op in oks)
    assert any(m[0] == "r" and m[2] for op in oks for m in op["value"]), "no read saw an append"
    # the hosts' WALs were fetched and judged
    assert verdict["checkers"]["durability"]["valid"] is True
    others = [p for p in hosts.processes_in_namespaces()
              if Path(f"/proc/{p}/cmdline").exists() and b"sshd" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert others == [], "node processes were left on the hosts"
