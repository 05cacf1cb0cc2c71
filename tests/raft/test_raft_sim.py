"""Seeded whole-cluster simulations of the Raft core (see raftsim.py).

Each seed is one schedule of 300-800 random steps (message loss, delay, reordering,
duplication, partitions, crashes that keep only persisted state, WAL cuts, membership
changes, leadership transfers, reads, proposals) with the safety checks after every step,
followed by healing and a liveness check (a leader is elected and a proposal is applied
everywhere within a bounded number of ticks) and a check that every acknowledged write
survived.

Environment:
  UKEHI_SIM_SEEDS=N    run seeds 0..N-1 (default 2000) -- e.g. 20000 for a slow soak
  UKEHI_SIM_SEED=S     run only seed S (the command printed for a failing seed)
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from raftsim import SafetyViolation, run_seed

BATCH = 100


def _seeds() -> list[int]:
    one = os.environ.get("UKEHI_SIM_SEED")
    if one is not None:
        return [int(one)]
    return list(range(int(os.environ.get("UKEHI_SIM_SEEDS", "2000"))))


SEEDS = _seeds()
BATCHES = [SEEDS[i : i + BATCH] for i in range(0, len(SEEDS), BATCH)]


def _run(seed: int) -> Counter:
    try:
        return run_seed(seed).stats
    except Exception as exc:
        rerun = f"UKEHI_SIM_SEED={seed} .venv/bin/python -m pytest tests/raft/test_raft_sim.py"
        raise AssertionError(f"simulation seed {seed} failed; rerun it alone with:\n  {rerun}\n{exc}") from exc


@pytest.mark.parametrize("batch", BATCHES, ids=[f"seeds{b[0]}-{b[-1]}" for b in BATCHES])
def test_seeded_schedules_are_safe_and_live(batch: list[int]) -> None:
    for seed in batch:
        _run(seed)


def test_schedules_exercise_every_feature() -> None:
    """The chaos must really reach the interesting paths, or the safety checks prove little."""
    total: Counter = Counter()
    for seed in range(200):
        total += _run(seed)
    for what in (
        "elections",
        "acked",
        "reads",
        "snapshot_taken",
        "snapshot_installed",
        "config_committed",
        "transfers",
        "wal_cut",
    ):
        assert total[what] > 10, f"200 schedules exercised {what} only {total[what]} times: {total}"


def test_a_failing_seed_names_its_rerun_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import raftsim

    def broken(seed: int, opts=None):
        raise SafetyViolation("planted")

    monkeypatch.setattr(raftsim, "run_seed", broken)
    monkeypatch.setitem(globals(), "run_seed", broken)
    with pytest.raises(AssertionError, match="UKEHI_SIM_SEED=7 .*test_raft_sim.py"):
        _run(7)
