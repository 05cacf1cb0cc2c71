"""The driver's read-lost invariant (ukehi/node/driver.py ``Driver.expire``): a read the Raft
core took and never confirmed nor dropped while it led through its term is logged at error
level, which node-health fails. Client timeouts alone cannot show it: a lost reply looks the
same in the history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.sim.runner import SimSettings, run_seed

BROKEN = Path(__file__).resolve().parent.parent / "harness" / "broken_build"


def _sim(tmp_path: Path, seed: int) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BROKEN), os.environ.get("PYTHONPATH", "")]),
           "UKJ_TEST_BROKEN_BUILD": "forget-reads"}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seed", str(seed), "--workload", "register",
                           "--shrink-budget", "0", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300, env=env)
    stored = sorted(results.rglob("results.json"))
    assert stored, proc.stdout + proc.stderr[-2000:]
    return proc, json.loads(stored[-1].read_text())


def test_a_core_that_forgets_reads_fails_node_health_and_the_correct_build_does_not(tmp_path):
    proc, verdict = _sim(tmp_path, 0)
    assert proc.returncode == 1, proc.stdout
    health = verdict["checkers"]["node-health"]
    assert health["valid"] is False and "read-lost" in health["explanation"], health
    # the same seed on the correct build: valid, and no node logged a lost read
    result = run_seed(0, SimSettings(workload="register"), keep_world=True)
    assert result.valid is True, result.failing_checkers()
    logs = "".join(result.world.nodes[n].log.getvalue() for n in result.world.names)
    assert "event=read-lost" not in logs and "event=became-leader" in logs


def test_expired_reads_report_the_term_and_ticks_they_started_at():
    import asyncio

    from ukehi.waiters import ReadWaiters

    async def go():
        r = ReadWaiters()
        loop = asyncio.get_running_loop()
        old, new = loop.create_future(), loop.create_future()
        r.add(b"c1", [old], deadline=5.0, started=(3, 40))
        r.add(b"c2", [new], deadline=50.0, started=(4, 90))
        expired = r.expire(10.0)
        return expired, old.result(), new.done(), len(r)

    assert asyncio.run(go()) == ([(b"c1", (3, 40))], False, False, 1)
