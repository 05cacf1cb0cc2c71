"""Issue 12 section 2: bad input to either CLI is one line, the documented exit code, no
traceback, and nothing is started or repointed. Subprocess tests, run from a temporary
working directory with relative paths, as a person would type them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def jepsen(cwd: Path, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def ukehi(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ukehi.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be one line and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("option, words", [
    ("bogus=1", ["bogus", "accepted:", "heartbeat", "election_timeout"]),
    ("heartbeat=abc", ["heartbeat=abc", "whole number of milliseconds"]),
    ("election_timeout=fast", ["election_timeout", "MIN:MAX"]),
    ("log-level=loud", ["log_level", "debug, info, warning, error"]),
    ("unsafe_bug=meteor", ["unsafe_bug", "stale-read"]),
    ("heartbeat=400", ["heartbeat=400", "twice"]),
])
def test_run_refuses_bad_node_options_before_any_node_starts(tmp_path, option, words):
    done = jepsen(tmp_path, "run", "--node-option", option, "--time-limit", "5", "--results-dir", "results")
    assert done.returncode == 254, done.stdout + done.stderr
    line = one_error_line(done)
    assert line.startswith("ukehi-jepsen: error: --node-option")
    for word in words:
        assert word in line, line
    # Refused at parse time: no run directory, no latest link, no node.
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
