"""The sim's slow-leader-clock family (harness/sim/targeted.py): the leader's clock runs slow
while it is cut off from the other nodes, clients still attached to it. Without it the swarm
lost lease-no-drift-bound (0 of 80 register seeds): its only find (seed 14 at c963a05) was a
leader paused while a client that had timed out asked it again after the new leader's writes,
a coincidence of op timings that the node changes of edcf76c moved."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from harness.sim.runner import NEMESES, SimSettings, _History, _Nemesis, _world_options, run_seed, swarm
from ukehi import wire
from ukehi.raft.types import Role
from ukehi.sim.world import EPOCH, SimWorld

FAMILY = "slow-leader-clock"
BUG = "lease-no-drift-bound"


def _cluster(seed: int = 3) -> tuple[SimWorld, _History, _Nemesis]:
    settings = SimSettings(workload="register", nemeses=(FAMILY,))
    opts = swarm(seed, settings)
    opts.update(nodes=3, founders=3, loss=0.0, duplicate=0.0, election_ms=(300, 600), heartbeat_ms=30,
                delay=(0.0005, 0.003), max_entries_per_message=8, max_inflight=64)
    world = SimWorld(seed, _world_options(opts, settings))
    hist = _History(world)
    return world, hist, _Nemesis(world, hist, opts, random.Random(seed))


def _role_term(world: SimWorld, n: str) -> tuple[Role | None, int | None]:
    h = world.nodes[n]
    core = h.current.node.core if h.up and h.current and h.current.node else None
    return (None, None) if core is None else (core.role, core.term)


def _wall_error(world: SimWorld, n: str) -> float:
    return world.nodes[n].current.time() - EPOCH - world.now()  # type: ignore[union-attr]


def test_the_leader_runs_slow_and_cut_off_while_a_newer_leader_is_elected_then_all_is_undone():
    world, hist, nemesis = _cluster()
    marks: dict[str, Any] = {}

    async def scenario() -> None:
        for n in world.names:
            world.start(n)
        await asyncio.sleep(1.8)
        old = nemesis._leader()
        assert old is not None
        marks["old"], marks["old_term"] = old, _role_term(world, old)[1]
        nemesis.families[FAMILY].arm(random.Random(5))
        start = [o.value for o in hist.ops if o.f == "start-slow-leader-clock" and o.type == "info"][0]
        marks["start"] = start
        marks["rate_during"] = world.nodes[old].rate
        marks["blocked"] = set(world.blocked)
        t0 = world.now()
        # Wait (bounded) until the others elected a leader of a newer term.
        for _ in range(400):
            others = {n: _role_term(world, n) for n in world.names if n != old}
            if any(r is Role.LEADER and t > marks["old_term"] for r, t in others.values()):
                break
            await asyncio.sleep(0.01)
        marks["new_leader_after_s"] = world.now() - t0
        # By then the old one still believes it leads (its ticks run at `rate`), and a client
        # attached to it still reaches it (the cut is between nodes) and hears so.
        marks["old_then"] = _role_term(world, old)
        marks["status"] = await world.request(old, wire.MsgType.STATUS, {}, 0.5)
        await asyncio.sleep(start["for_s"] - (world.now() - t0) + 0.05)
        marks["rate_after"] = world.nodes[old].rate
        marks["blocked_after"] = set(world.blocked)
        marks["wall_error_after"] = _wall_error(world, old)
        nemesis.heal_all()
        await world.stop_all()

    world.run(scenario())
    old, start = marks["old"], marks["start"]
    assert start["node"] == old and 0.02 <= start["rate"] <= 0.5
    assert marks["rate_during"] == start["rate"]
    others = [n for n in world.names if n != old]
    assert marks["blocked"] == {(old, n) for n in others} | {(n, old) for n in others}
    assert marks["status"] is not None and marks["status"][0] is wire.MsgType.OK, marks["status"]
    status = marks["status"][1]["value"]
    assert (status["role"], status["term"]) == ("leader", marks["old_term"])
    assert marks["new_leader_after_s"] < start["for_s"]
    assert marks["old_then"] == (Role.LEADER, marks["old_term"])
    # Undone when the hold ends: true rate, links healed, wall clock stepped back to true
    # time (the monotonic clock keeps its lag), and the lag was measured for the lock checker.
    assert marks["rate_after"] == 1.0 and marks["blocked_after"] == set()
    assert abs(marks["wall_error_after"]) < 1e-6
    assert nemesis.max_skew > 0.5 * (1 - start["rate"]) * start["for_s"]
    assert [o.value["why"] for o in hist.ops if o.f == "stop-slow-leader-clock" and o.type == "info"] == ["held"]


def test_with_only_the_family_the_bug_is_found_and_the_correct_build_stays_valid(monkeypatch):
    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    only = SimSettings(workload="register", nemeses=(FAMILY,))
    for seed in (1, 2, 3):  # the first three that find it since the commit-per-tick change
        bad = run_seed(seed, SimSettings(workload="register", nemeses=(FAMILY,), node_options=(("unsafe_bug", BUG),)))
        assert bad.failing_checkers() == ["linearizable"], (seed, bad.checkers)
        assert any("start-slow-leader-clock" in f for f in bad.faults)
        good = run_seed(seed, only)
        assert good.valid is True, (seed, good.failing_checkers())


def test_the_default_swarm_finds_the_bug_again_and_the_correct_build_is_valid_there(monkeypatch):
    """The default swarm (register, every family the swarm has): seed 68 is the first seed
    that finds it with the family drawn (since the commit-per-tick change and lease seeds);
    the stale read happens while the family holds. Without the family no seed up to 80 failed
    (measured before those changes)."""
    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    assert FAMILY in NEMESES
    bad = run_seed(68, SimSettings(workload="register", node_options=(("unsafe_bug", BUG),)))
    assert "linearizable" in bad.failing_checkers(), bad.checkers
    assert any("start-slow-leader-clock" in f for f in bad.faults)
    good = run_seed(68, SimSettings(workload="register"))
    assert good.valid is True, good.failing_checkers()
