"""Issue 12 section 2: bad input to either CLI is one line, the documented exit code, no
traceback, and nothing is started or repointed. Subprocess tests, run from a temporary
working directory with relative paths, as a person would type them."""

from __future__ import annotations

import os
import re
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
    assert line.startswith("ukehi-jepsen run: error: --node-option")
    for word in words:
        assert word in line, line
    # Refused at parse time: no run directory, no latest link, no node.
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# -- --version, one error style, --nodes, help at 80 columns ---------------------------------------

def test_both_clis_have_version(tmp_path):
    from ukehi import __version__

    for run in (jepsen, ukehi):
        done = run(tmp_path, "--version")
        assert done.returncode == 0, done.stderr
        assert re.match(rf"^ukehi(-jepsen)? {re.escape(__version__)} ", done.stdout), done.stdout


STYLE = re.compile(r"^(ukehi|ukehi-jepsen)( [a-z-]+)*: error: \S.*$")


@pytest.mark.parametrize("cli, args, words", [
    ("jepsen", ["run", "--bogus"], ["ukehi-jepsen run: error:", "--bogus", "(see ukehi-jepsen run --help)"]),
    ("jepsen", ["run", "--time-limit", "soon"], ["ukehi-jepsen run: error: --time-limit 'soon': give a number"]),
    ("jepsen", ["nosuch"], ["ukehi-jepsen: error:", "nosuch", "(see ukehi-jepsen --help)"]),
    ("jepsen", ["check", "--initial"], ["ukehi-jepsen check: error:", "--initial"]),
    ("jepsen", ["check"], ["ukehi-jepsen check: error: give the history file"]),
    ("jepsen", ["cluster", "up", "--bogus"], ["ukehi-jepsen cluster up: error:", "--bogus"]),
    ("ukehi", ["kv", "get"], ["ukehi kv get: error:", "--cluster", "(see ukehi kv get --help)"]),
    ("ukehi", ["bogus"], ["ukehi: error:", "bogus"]),
    ("ukehi", ["kv", "get", "k", "--cluster", "127.0.0.1:1", "--timeout", "abc"], ["ukehi kv get: error:", "abc"]),
    ("ukehi", ["wal", "dump", "no-such-dir"], ["ukehi wal dump: error:", "no-such-dir"]),
    ("ukehi", ["kv", "get", "k", "--cluster", "nope"], ["ukehi kv: error: --cluster"]),
])
def test_one_error_style_for_both_clis(tmp_path, cli, args, words):
    done = (jepsen if cli == "jepsen" else ukehi)(tmp_path, *args)
    assert done.returncode == 254, done.stdout + done.stderr
    line = one_error_line(done)
    assert STYLE.match(line), line
    assert not line.startswith(("Usage", "usage", "Error", "Try")), line
    for word in words:
        assert word in line, line


def test_nodes_means_the_same_in_run_and_cluster_up(tmp_path):
    from harness.commands.run import build_spec, node_names

    assert node_names("5", None) == ["n1", "n2", "n3", "n4", "n5"] == node_names(None, 5)
    assert node_names("a,b", None) == ["a", "b"] and node_names(None, None) == ["n1", "n2", "n3"]
    spec = build_spec(workload="register", nemesis="none", nemesis_interval=None, nodes="5", node_count=None,
                      concurrency="1n", rate=10, time_limit=5, seed=0, backend="local", read_mode="readindex",
                      corruption_policy="truncate-to-last-good", results_dir=str(tmp_path / "r"),
                      leave_running=False, name=None, node_option=[])
    assert spec.nodes == ("n1", "n2", "n3", "n4", "n5") and spec.concurrency == 5
    # The same words, the same refusals, from both commands (refused before any Docker call).
    for args, message in ((["--nodes", "0"], "--nodes 0: a cluster needs at least 1 node"),
                          (["--nodes", "2", "--node-count", "2"], "give either --nodes or --node-count")):
        lines = []
        for command in (["run", "--results-dir", "r"], ["cluster", "up"]):
            done = jepsen(tmp_path, *command, *args)
            assert done.returncode == 254, done.stderr
            lines.append(one_error_line(done).split(": error: ", 1)[1])
        assert lines[0] == lines[1] and lines[0].startswith(message), lines


def test_run_help_is_readable_at_80_columns(tmp_path):
    env = {**ENV, "COLUMNS": "80"}
    done = jepsen(tmp_path, "run", "--help", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in done.stdout  # nothing cut off
    assert not any(ch in done.stdout for ch in "╭│╰")  # no boxes squeezing the text
    for option in ("--workload", "--nemesis", "--nodes", "--node-count", "--node-option", "--time-limit",
                   "truncate-to-last-good", "alert-and-continue"):
        assert option in done.stdout, option
    # Option names start their line, help text follows on the same or the next lines.
    assert any(line.startswith("  --node-option") for line in lines)
