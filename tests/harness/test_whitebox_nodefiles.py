"""Node files reach the run store (harness/nodefiles.py) and the white-box checkers read them there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from checkers.whitebox import NAMES, whitebox_checkers
from harness.nodefiles import collect_node_files


class FakeRemoteNode:
    """A node whose directory is elsewhere (as on an SSH host), reached only through exec and read_file."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name, self.workdir, self.reads = name, workdir, []

    def exec(self, argv, timeout=10.0):
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def read_file(self, path):
        self.reads.append(path)
        return Path(path).read_bytes()


def test_remote_data_dirs_are_copied_into_the_run_store(tmp_path):
    remote = tmp_path / "host" / "n1"
    (remote / "data" / "group-0" / "wal").mkdir(parents=True)
    (remote / "data" / "group-0" / "wal" / "wal-00000001.seg").write_bytes(b"segment")
    (remote / "data" / "group-0" / "hardstate").write_bytes(b"hs")
    (remote / "other.txt").write_text("not data")
    run = tmp_path / "run"
    node = FakeRemoteNode("n1", remote)
    assert collect_node_files([node], run) == {"n1": "2 file(s) copied"}
    assert (run / "nodes/n1/data/group-0/wal/wal-00000001.seg").read_bytes() == b"segment"
    assert (run / "nodes/n1/data/group-0/hardstate").read_bytes() == b"hs"
    assert not (run / "nodes/n1/other.txt").exists()


def test_nodes_already_in_the_run_store_are_left_alone_and_failures_do_not_raise(tmp_path):
    run = tmp_path / "run"
    local = FakeRemoteNode("n1", run / "nodes" / "n1")
    (local.workdir / "data").mkdir(parents=True)
    missing = FakeRemoteNode("n2", tmp_path / "gone")
    outcome = collect_node_files([local, missing], run)
    assert outcome["n1"] == "in the run directory already" and local.reads == []
    assert outcome["n2"].startswith("not copied: listing")


def test_whitebox_checkers_join_a_run_only_when_it_has_node_directories(tmp_path):
    assert whitebox_checkers(tmp_path, ["n1"], "register") == {}
    (tmp_path / "nodes" / "n1").mkdir(parents=True)
    (tmp_path / "nodes" / "n1" / "node.log").write_text(
        "ts=2026-01-01T00:00:00.000Z level=error node=n1 event=step-failed error=boom\n")
    checks = whitebox_checkers(tmp_path, ["n1"], "register")
    assert tuple(checks) == NAMES
    assert checks["node-health"]([], {})["valid"] is False
    assert checks["election-safety"]([], {})["valid"] is True
