"""Lease reads in the swarm (harness/sim/runner.py ``_draw_read_mode``): about one swarm seed
in four runs the nodes with ``read_mode=lease`` where its faults keep clocks within the
lease's drift bound, and on such a seed the slow-leader-clock family slows the cut-off
leader's clock only within that bound (harness/sim/targeted.py ``LEASE_RATES``), so a correct
lease holds and a stale read is the lease code's fault."""

from __future__ import annotations

import pytest

from harness.sim.runner import NEMESES, TARGETED, SimSettings, run_seed, swarm
from harness.sim.targeted import SlowLeaderClock
from ukehi.raft import core as raft_core
from ukehi.raft.types import Role

# The first lease seed (register, default nemeses) where a lease that ignores its acks
# serves a stale read, measured on seeds 0-299 (1 of the 43 lease seeds with the family).
ACKS_IGNORED_SEED = 129


def test_lease_is_drawn_only_where_clocks_stay_within_the_drift_bound() -> None:
    settings = SimSettings()
    drawn = [swarm(seed, settings) for seed in range(300)]
    lease = [o for o in drawn if o["read_mode"] == "lease"]
    assert 0.15 < len(lease) / len(drawn) < 0.4, len(lease)
    assert all("clock" not in o["faults"] for o in lease)  # any node's rate 0.5-2x: no lease
    assert any("slow-leader-clock" in o["faults"] for o in lease)  # kept within the bound
    assert {o["read_mode"] for o in drawn} == {"lease", "readindex"}
    # A nemesis run alone keeps ReadIndex (regress's and mutate's NAME@SEED probes); a read
    # mode asked for wins over the draw.
    for name in (*TARGETED, "partition", "damage"):
        alone = SimSettings(nemeses=(name,))
        assert {swarm(seed, alone)["read_mode"] for seed in range(40)} == {"readindex"}
    asked = SimSettings(node_options=(("read_mode", "readindex"),))
    assert {swarm(seed, asked)["read_mode"] for seed in range(40)} == {"readindex"}


def test_the_draw_leaves_every_other_option_of_a_seed_alone() -> None:
    # Its own RNG: a seed's other options are what they are with the read mode asked for.
    for seed in range(60):
        drawn = swarm(seed, SimSettings(nemeses=NEMESES))
        fixed = swarm(seed, SimSettings(nemeses=NEMESES, node_options=(("read_mode", "readindex"),)))
        assert {**drawn, "read_mode": None} == {**fixed, "read_mode": None}


def _slow_clock_rates(result) -> list[float]:
    return [op.value["rate"] for op in result.history if op.f == "start-slow-leader-clock"]


def test_a_lease_that_ignores_its_acks_is_caught_on_a_lease_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SimSettings(workload="register")
    opts = swarm(ACKS_IGNORED_SEED, settings)
    assert opts["read_mode"] == "lease" and "slow-leader-clock" in opts["faults"]
    good = run_seed(ACKS_IGNORED_SEED, settings)
    assert good.valid is True, good.failing_checkers()
    rates = _slow_clock_rates(good)
    lo, hi = SlowLeaderClock.LEASE_RATES
    assert rates and all(lo <= r <= hi for r in rates), rates

    def acks_ignored(self) -> bool:
        # the mutant core.py:869 (every peer's ack tick read as the leader's own tick): the
        # lease holds whenever this node leads, whatever its followers last acknowledged
        if not self.cfg.lease_read or self.role is not Role.LEADER or self._lease_disabled:
            return False
        return self.lead_transferee is None

    monkeypatch.setattr(raft_core.RaftCore, "_lease_valid", acks_ignored)
    bad = run_seed(ACKS_IGNORED_SEED, settings)
    assert "linearizable" in bad.failing_checkers(), bad.checkers
