"""wal-retention in the simulator: every seed gets the checker; with small WAL segments (the
node option ``wal_segment_size``, drawn per seed) a compaction removes whole segments,
and a build whose ``compact_to`` never removes one (mutant ``wal.py:382:8:swap_if``) fails.
"""

from __future__ import annotations

from harness.sim.runner import SimSettings, run_seed, swarm
from ukehi.storage import wal as wal_module

# Seed 3 draws a snapshot threshold of at most 100 and small segments.
SEED = 3


def test_every_sim_seed_is_judged_by_wal_retention():
    result = run_seed(SEED)
    assert result.checkers["wal-retention"]["valid"] is True, result.checkers["wal-retention"]


def test_small_segments_are_compacted_and_judged_on_the_correct_build():
    opts = swarm(SEED, SimSettings())
    assert opts["wal_segment_size"] <= 4096 and opts["snapshot_threshold"] <= 100
    w = run_seed(SEED).checkers["wal-retention"]
    assert w["valid"] is True and w["compactions"] >= 3, w


def test_a_compaction_that_never_removes_a_segment_fails_the_seed(monkeypatch):
    real = wal_module.WAL.compact_to

    def keep_everything(self, index):  # the mutant: validate, then remove nothing
        if not isinstance(index, int) or index < 0:
            return real(self, index)
        self._check_open()

    monkeypatch.setattr(wal_module.WAL, "compact_to", keep_everything)
    result = run_seed(SEED)
    w = result.checkers["wal-retention"]
    assert result.valid is False and w["valid"] is False
    assert "is still on disk after its compaction to index" in w["explanation"]
