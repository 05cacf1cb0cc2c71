"""The durable-cut checker in the simulator (checkers/whitebox/durable_cut.py, fed by
ukehi.sim.fs.SimFS): a correct seed whose crashed node replays over damage passes it; a WAL
that opens from a scan without applying its cuts (mutant ``ukehi/storage/wal.py:132:8:
drop_stmt``, planted here by a monkeypatch) appends after the bytes the replay cut, and the
next replay drops those fsynced, acknowledged appends: the seed fails by durable-cut.

Seed 4 of the kill/damage family: n5 crashes, a bit flip hits its WAL segment, it restarts
and cuts the segment at the damaged entry; it appends and fsyncs; it crashes and restarts
again. (The simulator persists each write with its fsync, so a crash leaves no torn tail;
damage is how a seed reaches a cut and a second restart.)"""

from __future__ import annotations

import pytest

import ukehi.storage.wal as wal_module
from harness.sim.runner import SimSettings, run_seed

SETTINGS = SimSettings(workload="register", nemeses=("kill", "crash-after-ack", "damage", "snapshot"))
SEED = 4


def test_a_correct_seed_that_cuts_over_damage_passes_durable_cut():
    result = run_seed(SEED, SETTINGS)
    verdict = result.checkers["durable-cut"]
    assert verdict["valid"] is True, verdict
    assert verdict["cuts"] >= 1  # the replay did cut: the rule was exercised
    assert result.valid is True, result.failing_checkers()


def test_a_wal_that_never_applies_its_cuts_fails_durable_cut(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(wal_module, "apply_actions", lambda directory, actions: None)
    result = run_seed(SEED, SETTINGS)
    verdict = result.checkers["durable-cut"]
    assert verdict["valid"] is False, verdict
    [v] = verdict["violations"]
    assert v["node"] == "n5" and v["file"] == "group-0/wal/wal-00000001.seg"
    assert v["offset"] < v["extent"] < v["end"] == v["durable"]
    assert f"durable size {v['durable']}" in verdict["explanation"]
    assert result.failing_checkers() == ["durable-cut"]  # no other checker sees it
