"""`ukehi-jepsen run --backend docker` end to end: 3 containers, faults inside them, a verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import labelled

pytestmark = pytest.mark.docker


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def only_run(results: Path) -> Path:
    runs = [p for p in results.glob("*/*") if p.is_dir() and "latest" not in p.relative_to(results).parts]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_register_under_partitions_and_kills_on_three_containers(docker_client: Any, node_image: Any,
                                                                tmp_path: Path, no_leftovers: None) -> None:
    before = labelled(docker_client)
    proc = run_cli(["run", "--backend", "docker", "--workload", "register", "--nemesis", "partition,kill",
                    "--nemesis-interval", "1.5", "--time-limit", "12", "--results-dir", str(tmp_path / "results")],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "VALID" in proc.stdout
    run = only_run(tmp_path / "results")
    for name in ("test.json", "history.jsonl", "results.json", "run.log", "latency.png", "rate.png",
                 "timeline.html"):
        assert (run / name).is_file(), f"{name} missing from {run}"
    assert json.loads((run / "test.json").read_text())["backend"] == "docker"
    assert json.loads((run / "results.json").read_text())["valid"] is True
    ops = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    nemesis_fs = {op["f"] for op in ops if op["process"] == "nemesis" and op["type"] == "info"}
    assert "kill" in nemesis_fs and "start-partition" in nemesis_fs, nemesis_fs
    killed = [op for op in ops if op["process"] == "nemesis" and op["f"] == "kill" and op["type"] == "info"]
    assert any(op["value"].get("killed") for op in killed), killed
    assert sum(1 for op in ops if op["type"] == "ok" and op["process"] != "nemesis") > 20
    for node in ("n1", "n2", "n3"):
        log = run / "nodes" / node / "node.log"
        assert log.is_file() and "level=" in log.read_text(), f"no node log for {node}"
        assert (run / "nodes" / node / "data").is_dir()
    after = labelled(docker_client)
    assert all(not (after[k] - before[k]) for k in after), "the run left containers or networks behind"


def test_missing_image_is_a_usage_error_that_says_how_to_build_it(docker_client: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEHI_JEPSEN_IMAGE", "ukehi-node:no-such-tag-ukj")
    proc = run_cli(["run", "--backend", "docker", "--time-limit", "1", "--results-dir", str(tmp_path / "r")],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 254, proc.stdout + proc.stderr
    assert "ukehi-jepsen image build --offline" in proc.stderr
