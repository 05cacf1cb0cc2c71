"""The simulator's find on the correct build in --read-mode lease: a leader resumed after a pause
trusted a lease its stopped clock had not aged (ukehi/raft/core.py RaftCore.stalled)."""

from __future__ import annotations

from harness.sim.runner import SimSettings, run_seed

LEASE_PAUSE = SimSettings(workload="register", nemeses=("pause", "partition", "kill", "transfer"),
                          node_options=(("read_mode", "lease"),))


def test_a_paused_lease_leader_no_longer_serves_a_stale_read():
    # Seed 49 was invalid (linearizable: n3, paused 5.76-7.67 s and cut off, answered 272 at
    # 7.735 s after 281 and 282 were written) before the stall aged the lease.
    r = run_seed(49, LEASE_PAUSE)
    assert r.valid is True, r.failing_checkers()
    assert any(o.f == "pause" for o in r.history if not o.is_client)
