"""`ukehi-jepsen run --backend ssh` end to end on three real sshd hosts (namespaces).

The harness builds and uploads the wheel, starts the nodes under its supervisor,
partitions them with iptables on the hosts and kills them, checks the history,
and collects the node logs; afterwards nothing of the run is left on the hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from nemeses import partition

sys.path.insert(0, str(Path(__file__).parent))
from sshd_hosts import SshdHosts, checked_sshd_hosts, ssh_args, sshd_missing_reason  # noqa: E402

CLI = [sys.executable, "-m", "harness.cli"]
pytestmark = [pytest.mark.root, pytest.mark.skipif(sshd_missing_reason() is not None,
                                                   reason=sshd_missing_reason() or "")]


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    with checked_sshd_hosts(3, "ukj-sshd-e2e-") as made:
        yield made


def test_strict_run_against_unknown_hosts_stops_with_the_fix(hosts: SshdHosts, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    proc = subprocess.run(CLI + ["run", "--time-limit", "5", "--results-dir", str(tmp_path / "results"),
                                 *ssh_args(hosts, known, "strict")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 254, proc.stderr[-2000:]
    assert "is unknown" in proc.stderr and "ssh-keyscan" in proc.stderr and "accept-new" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert known.read_text() == ""


@pytest.mark.slow
def test_register_run_with_partitions_and_kills_is_valid_and_collects_node_logs(hosts: SshdHosts,
                                                                                 tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"  # accept-new fills it on first contact
    results = tmp_path / "results"
    proc = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "partition,kill",
                                 "--nemesis-interval", "1.5", "--time-limit", "15", "--rate", "30",
                                 "--results-dir", str(results), "--ssh-node-port", "7301",
                                 *ssh_args(hosts, known, "accept-new")],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith("VALID")
    run = (results / "latest").resolve()
    for name in ("test.json", "history.jsonl", "results.json", "run.log", "latency.png", "rate.png",
                 "timeline.html"):
        assert (run / name).is_file(), f"{name} missing from {run}"
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["valid"] is True
    spec = json.loads((run / "test.json").read_text())
    assert spec["backend"] == "ssh" and spec["nodes"] == hosts.addresses
    assert spec["ssh_host_key_policy"] == "accept-new" and spec["ssh_node_port"] == 7301
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    nemesis_fs = {op["f"] for op in history if op["process"] == "nemesis"}
    assert {partition.START, "kill"} <= nemesis_fs, f"both faults should have happened: {nemesis_fs}"
    assert sum(1 for op in history if op["type"] == "ok" and op["process"] != "nemesis") > 30
    for address in hosts.addresses:
        log = run / "nodes" / address / "node.log"
        assert log.is_file() and log.stat().st_size > 0, f"no node log collected for {address}"
        # the data directory too (harness/nodefiles.py), so the white-box checkers judged the hosts' WALs
        assert (run / "nodes" / address / "data" / "group-0" / "hardstate").is_file()
    assert verdict["checkers"]["log-matching"]["valid"] is True
    assert all(commit > 0 for commit in verdict["checkers"]["log-matching"]["commit"].values())
    # every host's key was learnt, and nothing of the run is left on the hosts
    assert sorted(line.split()[0] for line in known.read_text().splitlines()) == sorted(hosts.addresses)
    assert not any(Path("/tmp/ukehi-jepsen").glob(f"*/{hosts.addresses[0]}"))
    others = [p for p in hosts.processes_in_namespaces()
              if Path(f"/proc/{p}/cmdline").exists() and b"sshd" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert others == [], "node processes were left on the hosts"
    for ns in hosts.netns:
        rules = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "-S"],
                               capture_output=True, text=True, timeout=30).stdout
        assert "UKJ" not in rules
