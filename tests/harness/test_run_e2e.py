"""`ukehi-jepsen run` end to end: real node processes, real faults, stored results."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checkers.history import load_jsonl
from checkers.whitebox import NAMES as WHITEBOX

CLI = [sys.executable, "-m", "harness.cli"]
ROOT = os.geteuid() == 0
# clock.png only when a clock fault recorded offsets; none of these runs has one
FILES = ["test.json", "history.jsonl", "results.json", "run.log", "latency.png",
         "latency-quantiles.png", "rate.png", "timeline.html"]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def latest_run(results: Path) -> Path:
    return (results / "latest").resolve()


def assert_complete_run(run: Path, checkers: set[str]) -> dict:
    for name in FILES:
        assert (run / name).is_file(), f"{name} missing from {run}"
    assert not (run / "clock.png").exists(), "clock.png drawn without clock offsets to plot"
    for name in FILES:
        if name.endswith(".png"):
            width, height = png_size(run / name)
            assert 400 <= width <= 4000 and 300 <= height <= 4000, (name, width, height)
    history = load_jsonl(str(run / "history.jsonl"))
    assert sum(1 for op in history if op.type == "invoke" and op.is_client) > 50
    results = json.loads((run / "results.json").read_text())
    # white-box checkers and availability judge every run
    assert set(results["checkers"]) == checkers | set(WHITEBOX) | {"availability", "bad-input"}
    assert "<html" in (run / "timeline.html").read_text().lower()
    for node in ("n1", "n2", "n3"):
        assert (run / "nodes" / node / "node.log").stat().st_size > 0
    return results


def leftovers(run: Path) -> list[str]:
    """Namespaces of this run still present (other runs on the machine are not ours to judge)."""
    run_id = json.loads((run / "test.json").read_text())["run_id"]
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith(f"ukj-{run_id}-")]


def node_processes(results: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "ukehi.cli node"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(results) in line]


@pytest.mark.slow
def test_register_without_faults_is_valid_and_complete(tmp_path):
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nemesis", "none", "--time-limit", "12",
                   "--results-dir", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VALID" in done.stdout
    verdict = assert_complete_run(latest_run(results), {"linearizable", "stats"})
    assert verdict["valid"] is True
    assert not node_processes(results)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_register_with_partitions_and_kills_is_valid(tmp_path):
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nemesis", "partition,kill",
                   "--nemesis-interval", "3", "--time-limit", "20", "--results-dir", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    run = latest_run(results)
    assert_complete_run(run, {"linearizable", "stats"})
    faults = {op.f for op in load_jsonl(str(run / "history.jsonl")) if not op.is_client}
    assert {"start-partition", "kill"} & faults, f"no fault was injected: {faults}"
    assert not leftovers(run) and not node_processes(results)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_stale_reads_are_caught_with_a_counterexample(tmp_path):
    """A node that serves reads from local state must be judged invalid under partitions."""
    results = tmp_path / "results"
    done = run_cli("run", "--workload", "register", "--nemesis", "partition",
                   "--nemesis-interval", "2", "--time-limit", "25", "--rate", "100",
                   "--node-option", "unsafe_bug=stale-read", "--results-dir", str(results))
    assert done.returncode == 1, done.stdout + done.stderr
    run = latest_run(results)
    verdict = json.loads((run / "results.json").read_text())
    linear = verdict["checkers"]["linearizable"]
    assert linear["valid"] is False and linear["failures"]
    page = run / linear["page"]
    assert page.is_file() and "<svg" in page.read_text()


@pytest.mark.slow
def test_sigint_leaves_nothing_behind_and_a_readable_history(tmp_path):
    results = tmp_path / "results"
    # SIGINT as a terminal's Ctrl-C: a shell without job control starts background jobs with
    # SIGINT ignored, which the child would inherit (and Python then keeps ignoring it)
    proc = subprocess.Popen(CLI + ["run", "--nemesis", "none", "--time-limit", "60", "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        history = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until ops are being recorded
            runs = list(results.glob("*/2*/history.jsonl"))
            if runs and runs[0].stat().st_size > 2000:
                history = runs[0]
                break
            time.sleep(0.3)
        assert history is not None, "the run never started recording"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert not leftovers(history.parent) and not node_processes(results), out
    ops = load_jsonl(str(history))
    assert ops and all(op.type in ("invoke", "ok", "fail", "info") for op in ops)
    analyzed = run_cli("analyze", str(history.parent))
    assert analyzed.returncode in (0, 1, 2), analyzed.stdout + analyzed.stderr
    assert (history.parent / "results.json").is_file()


@pytest.mark.parametrize("args, fix", [
    (["--workload", "bank"], "--workload"),
    (["--time-limit", "-5"], "--time-limit"),
    (["--node-count", "0"], "--node-count"),
    (["--nemesis", "meteor"], "unknown nemesis"),
    (["--concurrency", "x"], "--concurrency"),
    (["--bogus"], "No such option"),
    (["--time-limit", "soon"], "--time-limit"),
    (["--workload-option", "values"], "write KEY=VALUE"),
    (["--workload-option", "values=1"], "values='1': must be at least 2"),
    (["--workload-option", "colour=red"], "has no option colour"),
])
def test_bad_arguments_exit_254_and_name_the_fix(tmp_path, args, fix):
    done = run_cli("run", "--results-dir", str(tmp_path / "r"), *args, timeout=60)
    assert done.returncode == 254, done.stdout + done.stderr
    assert fix in done.stderr
    assert not (tmp_path / "r" / "latest").exists()


def test_unusable_results_dir_exits_254(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = run_cli("run", "--results-dir", str(blocker / "results"), timeout=60)
    assert done.returncode == 254 and "--results-dir" in done.stderr


def test_analyze_without_runs_exits_254(tmp_path):
    done = run_cli("analyze", "--results-dir", str(tmp_path), timeout=60)
    assert done.returncode == 254 and "no run has been stored" in done.stderr


@pytest.mark.slow
def test_test_count_runs_each_seed_and_prints_a_summary(tmp_path):
    results = tmp_path / "results"
    done = run_cli("run", "--nemesis", "none", "--test-count", "2", "--seed", "5", "--time-limit", "3",
                   "--results-dir", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(p for p in (results / "register-none").iterdir() if p.name != "latest")
    assert len(runs) == 2
    seeds = sorted(json.loads((run / "test.json").read_text())["seed"] for run in runs)
    assert seeds == [5, 6]
    summary = done.stdout.split("verdict", 1)[1]  # the table after the per-run summaries
    for run in runs:
        assert str(run) in summary
    assert summary.count("VALID") == 2
