"""The bad-input battery in one real run (harness/probes.py from harness/run.py): real node
processes, the run's TLS client certificate, every malformed probe refused, every scenario
step answered as the API says, nothing in the history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from checkers.history import load_jsonl
from checkers.probes import PROBES_FILE, read_probes
from harness.probes import BATTERY, PROBE_PREFIX, SCENARIO_STEPS


def test_a_real_run_probes_every_node_and_the_correct_build_refuses_everything(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--time-limit", "3", "--nemesis", "none",
                           "--seed", "5", "--results-dir", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = (tmp_path / "results" / "latest").resolve()
    verdict = json.loads((run / "results.json").read_text())["checkers"]["bad-input"]
    assert verdict["valid"] is True, verdict
    leader_only = sum(1 for p in BATTERY if p.leader_only)
    assert verdict["probes"] == 3 * (len(BATTERY) - leader_only) + leader_only + SCENARIO_STEPS
    # the malformed probes are refused; the well-formed scenario steps answered as expected
    assert verdict["answered"] == SCENARIO_STEPS and verdict["refused"] + verdict["answered"] == verdict["probes"]
    records = read_probes(run / PROBES_FILE)
    assert records is not None and records[-1]["kind"] == "end"
    # the frame-level refusals carry the node's own bad-frame reason, matched by port
    frames = [r for r in records if r["kind"] == "probe" and r["level"] == "frame"]
    assert frames and all(r["answer"]["outcome"] == "closed" and r["answer"].get("reason") for r in frames)
    assert {r["node"] for r in records if r["kind"] == "alive" and r["running"] and r["status"]} == {"n1", "n2", "n3"}
    # the probes never reach the workload's history
    for op in load_jsonl(str(run / "history.jsonl")):
        assert not str(op.key).startswith(PROBE_PREFIX)
    # `analyze` re-judges it from probes.jsonl alone
    again = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", str(run)], capture_output=True,
                           text=True, timeout=240, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["checkers"]["bad-input"]["probes"] == verdict["probes"]
