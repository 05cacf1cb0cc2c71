"""White-box resolution of info writes in a real run (checkers/whitebox/resolve.py): a cut-off
leader's clients time out on writes that never commit; the node files show it, Elle judges
them as failed, and the correct build stays valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.net import netns_support

_ok, _why = netns_support()
pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(not (os.geteuid() == 0 and _ok), reason=f"needs root and `ip netns`: {_why}")]

CLI = [sys.executable, "-m", "harness.cli"]


def test_correct_build_stays_valid_with_resolved_info_writes(tmp_path: Path):
    results = tmp_path / "results"
    # the schedule that cuts leaders off every 2 s (harness/regress.py, read-uncommitted-txn):
    # every such run measured left info writes in the cut-off leader's log that never committed
    proc = subprocess.run(CLI + ["run", "--workload", "rw-register", "--nemesis", "partition-primaries",
                                 "--nemesis-interval", "2", "--concurrency", "9", "--rate", "100",
                                 "--time-limit", "15", "--seed", "2", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300)
    run = (results / "latest").resolve()
    verdict = json.loads((run / "results.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resolution = verdict["resolution"]
    assert resolution["used_by"] == ["elle"] and "refused" not in resolution, resolution
    assert resolution["resolved"] >= 1, resolution
    elle = verdict["checkers"]["elle"]
    assert elle["valid"] is True and elle["resolved_info_ops"] == resolution["resolved"]
    # the recorded history keeps them as info
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    infos = {op["index"] for op in history if op["type"] == "info" and op["process"] != "nemesis"}
    by_invoke = {op["index"]: op for op in history}
    assert all(by_invoke[i]["type"] == "invoke" for i in resolution["ops"])
    assert len(infos) >= resolution["resolved"]
