"""The simulator judges histories as a real run does: linearizable and elle see each info
write that no node's files ever held as a fail (checkers/whitebox/resolve.py), so a read of
a write that never committed is caught in the simulator too."""

from __future__ import annotations

from dataclasses import replace

from harness.sim.runner import SimSettings, run_seed

BUGGY = SimSettings(workload="rw-register", duration=10.0, nemeses=("partition", "kill"),
                    node_options=(("unsafe_bug", "read-uncommitted-txn"),))


def test_a_dirty_read_of_a_write_no_node_held_fails_the_seed(monkeypatch):
    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    # Seed 4 (the first where only the resolution shows it, since a leader sends at most one
    # commit-only append per tick): a cut-off leader answered a read-only transaction from
    # its uncommitted log; the write it saw timed out (info) and no node ever held it.
    r = run_seed(4, BUGGY)
    elle = r.checkers["elle"]
    assert r.failing_checkers() == ["elle"], r.failing_checkers()
    assert elle["resolved_info_ops"] > 0
    assert elle["valid_without_resolution"] is True  # the recorded history alone is explainable
    # Without the node files (no white-box export) nothing is resolved: the same seed passes.
    blind = run_seed(4, replace(BUGGY, whitebox=False))
    assert blind.checkers["elle"]["valid"] is True and "resolved_info_ops" not in blind.checkers["elle"]
    assert blind.digest == r.digest  # the same run; only the judging differs


def test_the_correct_build_stays_valid_with_writes_resolved():
    # Seed 1: the first with an info write resolved (seed 0 has none since links are in order).
    r = run_seed(1, SimSettings(workload="rw-register", duration=10.0, nemeses=("partition", "kill")))
    assert r.valid is True, r.failing_checkers()
    assert r.checkers["elle"]["resolved_info_ops"] > 0  # the view did differ from the history
