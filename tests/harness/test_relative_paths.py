"""Paths a user gives relative to where they ran from reach every node, backend and checker.

A node runs with its own directory (``<run>/nodes/<n>``) as working directory. When the
harness handed it paths relative to the user's directory (the default ``--results-dir
results``), its WAL and log landed in ``<run>/nodes/n1/results/...``: the disk and LazyFS
faults hit an empty directory and the checkers read nothing, so planted bugs escaped. The
suite used to pass only absolute temporary paths, which hid it; these tests run from a
temporary working directory (with a space in its name) and the default relative store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends.base import BackendError
from harness.backends.local import LocalCluster, LocalNode
from harness.spec import TestSpec

CLI = [sys.executable, "-m", "harness.cli"]


def test_spec_resolves_the_results_dir_against_the_directory_run_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = TestSpec(name="t", workload="register", nodes=("n1",))
    assert spec.results_dir == str(tmp_path / "results")
    nested = TestSpec(name="t", workload="register", nodes=("n1",), results_dir="a b/../store")
    assert nested.results_dir == str(tmp_path / "store")
    # test.json keeps the resolved path, so a re-run from elsewhere uses the same store.
    again = TestSpec.from_dict(json.loads(spec.to_json()))
    assert again.results_dir == str(tmp_path / "results")


def test_spec_resolves_ssh_key_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = TestSpec(name="t", workload="register", nodes=("h1",), backend="ssh",
                    ssh_key="keys/id_ed25519", ssh_known_hosts="~/kh")
    assert spec.ssh_key == str(tmp_path / "keys" / "id_ed25519")
    assert spec.ssh_known_hosts == os.path.expanduser("~/kh")


def test_local_cluster_makes_node_directories_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster = LocalCluster(["n1", "n2"], results_dir="results/run", isolation="loopback")
    assert cluster.results_dir == tmp_path / "results" / "run"
    with cluster:
        for name, node in cluster.nodes.items():
            assert node.workdir == tmp_path / "results" / "run" / "nodes" / name


def test_a_node_handle_refuses_a_relative_directory(tmp_path):
    cluster = LocalCluster(["n1"], results_dir=tmp_path, isolation="loopback")
    with pytest.raises(BackendError, match="absolute"):
        LocalNode(cluster, "n1", "127.0.0.1", (7000, 7001), Path("results/nodes/n1"), None)


def node_files(run: Path, node: str) -> dict[str, bool]:
    home = run / "nodes" / node
    return {
        "node.log": (home / "node.log").is_file() and (home / "node.log").stat().st_size > 0,
        "wal": any((home / "data").glob("group-*/wal/wal-*.seg")),
        "nothing nested": not (home / "results").exists() and not list(home.glob("**/results")),
    }


@pytest.mark.slow
def test_a_default_run_from_another_directory_keeps_node_files_in_the_run(tmp_path):
    cwd = tmp_path / "a dir with spaces"
    cwd.mkdir()
    done = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "kill", "--nemesis-interval", "2",
                                 "--time-limit", "6"],
                          cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = (cwd / "results" / "latest").resolve()
    assert run.parent.parent == cwd / "results", run
    for node in ("n1", "n2", "n3"):
        assert node_files(run, node) == {"node.log": True, "wal": True, "nothing nested": True}, node
    spec = json.loads((run / "test.json").read_text())
    assert spec["results_dir"] == str(cwd / "results")
    # The output names files that exist.
    assert str(run.relative_to(cwd)) in done.stdout or str(run) in done.stdout, done.stdout[-2000:]
