"""`ukehi-jepsen run --backend docker` end to end: 3 containers, faults inside them, a verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docker_leftovers import labelled, session_filter

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
    # From a directory with a space in its name, with the default relative --results-dir:
    # the bind mounts must get the run's absolute node directories (issue 12).
    cwd = tmp_path / "a dir with spaces"
    cwd.mkdir()
    proc = run_cli(["run", "--backend", "docker", "--workload", "register", "--nemesis", "partition,kill",
                    "--nemesis-interval", "1.5", "--time-limit", "12"], cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "VALID" in proc.stdout
    run = only_run(cwd / "results")
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
        assert list((run / "nodes" / node / "data").glob("group-*/wal/wal-*.seg")), f"no WAL for {node}"
    after = labelled(docker_client)
    assert all(not (after[k] - before[k]) for k in after), "the run left containers or networks behind"


def test_missing_image_is_a_usage_error_that_says_how_to_build_it(docker_client: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEHI_JEPSEN_IMAGE", "ukehi-node:no-such-tag-ukj")
    proc = run_cli(["run", "--backend", "docker", "--time-limit", "1", "--results-dir", str(tmp_path / "r")],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 254, proc.stdout + proc.stderr
    assert "ukehi-jepsen image build --offline" in proc.stderr


@pytest.mark.slow
def test_pause_clock_and_packet_faults_act_inside_the_containers(docker_client: Any, node_image: Any,
                                                                 tmp_path: Path, no_leftovers: None) -> None:
    proc = run_cli(["run", "--backend", "docker", "--workload", "kv", "--nemesis", "pause,clock,packet",
                    "--nemesis-interval", "1.5", "--time-limit", "12", "--results-dir", str(tmp_path / "results")],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = only_run(tmp_path / "results")
    ops = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    done = [op for op in ops if op["process"] == "nemesis" and op["type"] == "info"]
    fs = {op["f"] for op in done}
    assert {"pause", "start-packet"} <= fs, fs
    assert any(op["value"].get("paused") for op in done if op["f"] == "pause"), done
    # the heal at the end reset every clock (libfaketime files on the bind mounts) and cleared shaping
    assert {"reset-clock", "stop-packet"} <= fs, fs


def _labelled_containers(client: Any) -> set[str]:
    return {c.id for c in client.containers.list(all=True, filters=session_filter())}


def test_ctrl_c_during_a_run_removes_the_containers(docker_client: Any, node_image: Any, tmp_path: Path,
                                                    no_leftovers: None) -> None:
    import signal
    import time

    before = _labelled_containers(docker_client)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--backend", "docker", "--time-limit", "120",
                             "--results-dir", str(tmp_path / "results")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # SIGINT as a terminal's Ctrl-C, even if this run inherited it ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        history = None
        while time.monotonic() < deadline:
            found = list((tmp_path / "results").glob("*/*/history.jsonl"))
            if found and found[0].stat().st_size > 0:
                history = found[0]
                break
            time.sleep(0.5)
        assert history is not None, "the run never started writing its history"
        ours = [c for c in docker_client.containers.list(filters=session_filter())
                if c.labels.get("ukehi-jepsen.owner", "").split(":")[1:2] == [str(proc.pid)]]
        assert len(ours) == 3, [c.name for c in ours]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out[-2000:]
    assert "interrupted" in out
    assert _labelled_containers(docker_client) - before == set()


def test_leave_running_keeps_the_containers_until_cleanup(docker_client: Any, node_image: Any, tmp_path: Path,
                                                          no_leftovers: None) -> None:
    before = _labelled_containers(docker_client)
    proc = run_cli(["run", "--backend", "docker", "--time-limit", "2", "--leave-running",
                    "--results-dir", str(tmp_path / "results")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    left = _labelled_containers(docker_client) - before
    assert len(left) == 3
    cleanup = run_cli(["cleanup"], cwd=tmp_path)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert "docker: removed" in cleanup.stdout
    assert _labelled_containers(docker_client) & left == set()
