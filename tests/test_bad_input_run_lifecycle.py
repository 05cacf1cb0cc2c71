"""Issue 12 section 2: a run that fails before its history starts leaves `results/latest`
alone and says why in its run.log; a run ended by SIGTERM keeps what it has."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checkers.history import load_jsonl
from harness import run as run_module
from harness.spec import SpecError, TestSpec
from harness.store import new_run

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
CLI = [sys.executable, "-m", "harness.cli"]


def previous_run(results: Path) -> Path:
    """A finished earlier run that `latest` points at."""
    run = new_run(results, "register-none")
    run.history.write_text("", encoding="utf-8")
    return run.path


def test_setup_failure_in_process_keeps_latest_and_logs_the_reason(tmp_path, monkeypatch):
    results = tmp_path / "results"
    before = previous_run(results)

    def no_backend(spec, run):
        raise SpecError("--backend local: no node can start here (test)")

    monkeypatch.setattr(run_module, "open_backend", no_backend)
    spec = TestSpec(name="register-none", workload="register", nodes=("n1",), results_dir=str(results))
    with pytest.raises(SpecError):
        run_module.run_test(spec)
    assert (results / "latest").resolve() == before.resolve()
    assert (results / "register-none" / "latest").resolve() == before.resolve()
    failed = [p for p in (results / "register-none").iterdir() if p.name not in ("latest", before.name)]
    assert len(failed) == 1
    log = (failed[0] / "run.log").read_text()
    assert "before its history started" in log and "no node can start here" in log


def test_unreachable_ssh_host_keeps_latest_and_logs_why(tmp_path):
    """From a temporary cwd with a relative --results-dir: sshd is not on port 1."""
    before = previous_run(tmp_path / "results")
    done = subprocess.run(CLI + ["run", "--backend", "ssh", "--nodes", "127.0.0.1", "--ssh-port", "1",
                                 "--nemesis", "none", "--time-limit", "5", "--results-dir", "results"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 254, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (tmp_path / "results" / "latest").resolve() == before.resolve()
    logs = [p for p in (tmp_path / "results").glob("register-none/*/run.log")]
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "run stopped before its history started" in text and "127.0.0.1:1" in text, text


@pytest.mark.slow
def test_sigterm_keeps_history_partial_results_and_names_the_signal(tmp_path):
    proc = subprocess.Popen(CLI + ["run", "--nemesis", "none", "--time-limit", "40", "--results-dir", "results"],
                            cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        history = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # wait until ops are recorded
            runs = list((tmp_path / "results").glob("*/2*/history.jsonl"))
            if runs and runs[0].stat().st_size > 2000:
                history = runs[0]
                break
            time.sleep(0.3)
        assert history is not None, "the run never started recording: " + (proc.stdout.read() if proc.poll()
                                                                           is not None else "")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM" in out
    run = history.parent
    assert (tmp_path / "results" / "latest").resolve() == run.resolve()
    ops = load_jsonl(str(history), torn_tail="error")
    assert ops and any(op.type == "invoke" for op in ops)
    results = json.loads((run / "results.json").read_text())
    assert results["incomplete"] is True and results["interrupted_by"] == "SIGTERM"
    assert "terminated (SIGTERM)" in (run / "run.log").read_text()
    assert (run / "history.closed").exists()
    nodes = subprocess.run(["pgrep", "-af", "ukehi.cli node"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in nodes
