"""The simulator: deterministic, finds a planted bug in a small fixed seed budget, clean on
the correct build, and its disk loses exactly what a power cut loses."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from harness.sim.runner import SimSettings, run_seed
from ukehi.sim.fs import SimFS
from ukehi.storage import vfs
from ukehi.storage.errors import StorageError
from ukehi.storage.format import WalEntry
from ukehi.storage.wal import WAL

SHORT = SimSettings(duration=4.0)
ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_digest_and_different_seeds_differ():
    a = run_seed(3, SHORT)
    b = run_seed(3, SHORT)
    c = run_seed(4, SHORT)
    assert a.digest == b.digest
    assert [o.to_dict() for o in a.history] == [o.to_dict() for o in b.history]
    assert a.digest != c.digest
    assert a.ops > 0 and a.virtual_seconds > SHORT.duration


def test_stale_read_is_found_within_a_fixed_seed_budget(monkeypatch):
    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    settings = SimSettings(duration=6.0, node_options=(("unsafe_bug", "stale-read"),), whitebox=False)
    found = [s for s in range(4) if run_seed(s, settings).failed]
    assert found, "stale-read escaped seeds 0-3"


def test_ack_before_commit_is_found_within_a_fixed_seed_budget(monkeypatch):
    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    settings = SimSettings(duration=6.0, node_options=(("unsafe_bug", "ack-before-commit"),), whitebox=False)
    found = next((s for s in range(6) if run_seed(s, settings).failed), None)
    assert found is not None, "ack-before-commit escaped seeds 0-5"


def test_correct_build_is_clean_over_many_seeds():
    # UKEHI_SIM_SEEDS raises the count (CI default kept small: ~2 s a seed on one core).
    n = int(os.environ.get("UKEHI_SIM_SEEDS", "12"))
    settings = SimSettings(duration=3.0)
    bad = []
    for seed in range(100, 100 + n):
        r = run_seed(seed, settings)
        if r.valid is not True:
            bad.append((seed, r.valid, r.failing_checkers()))
    assert not bad, bad


def test_simfs_power_cut_loses_unsynced_bytes_and_unsynced_names():
    fs = SimFS()
    fs.register_node("/n")
    fs.makedirs("/n/d")
    fd = fs.open("/n/d/f", fs.O_WRONLY | fs.O_CREAT)
    fs.write(fd, b"durable")
    fs.fsync(fd)
    dfd = fs.open("/n/d", fs.O_RDONLY)
    fs.fsync(dfd)
    fs.write(fd, b"+lost")
    fd2 = fs.open("/n/d/g", fs.O_WRONLY | fs.O_CREAT)  # name never made durable
    fs.write(fd2, b"x")
    fs.fsync(fd2)
    fs.crash("/n", random.Random(1), torn_probability=0.0)
    with pytest.raises(OSError):
        fs.listdir("/n/d")  # dead until restarted
    with pytest.raises(OSError):
        fs.write(fd, b"more")  # the dead process's descriptor
    fs.revive("/n")
    assert fs.listdir("/n/d") == ["f"]
    rfd = fs.open("/n/d/f", fs.O_RDONLY)
    assert fs.read(rfd, 100) == b"durable"


def test_the_real_wal_over_simfs_keeps_synced_entries_and_loses_unsynced_ones():
    fs = SimFS()
    fs.register_node("/n")
    with vfs.use(fs):
        fs.makedirs("/n/wal")
        wal, _ = WAL.open("/n/wal")
        wal.append([WalEntry(1, 1, b"a", 1 << 32)], sync=True)
        wal.append([WalEntry(1, 2, b"b", (1 << 32) + 1)], sync=False)
        fs.crash("/n", random.Random(0), torn_probability=0.0)
        with pytest.raises(StorageError):  # WalBrokenError: the process is dead
            wal.append([WalEntry(1, 3, b"c", (1 << 32) + 2)], sync=True)  # the process is dead
        fs.revive("/n")
        wal2, replay = WAL.open("/n/wal")
        try:
            assert [e.index for e in replay.entries] == [1]
        finally:
            wal2.close()


def test_wal_damage_under_refuse_start_is_judged_by_the_policy_checker():
    settings = SimSettings(duration=4.0, nemeses=("damage",), node_options=(("corruption_policy", "refuse-start"),))
    r = run_seed(0, settings)
    damaged = [o for o in r.history if o.f == "corrupt-wal" and o.type == "info" and o.value.get("nodes")]
    assert damaged, "no WAL damage in the schedule"
    assert r.checkers["corruption-policy"]["valid"] is True, r.checkers["corruption-policy"]
    assert r.valid is True, r.failing_checkers()


def test_membership_adds_and_removes_nodes_and_stays_valid():
    settings = SimSettings(duration=4.0, nemeses=("membership",))
    r = run_seed(2, settings)  # 5 nodes: 3 founders, 2 spares
    done = [o.f for o in r.history if o.process == "nemesis" and o.type == "info"
            and o.f in ("add-node", "remove-node") and o.value.get("outcome") == "ok"]
    assert "add-node" in done and "remove-node" in done, r.faults
    assert r.valid is True, r.failing_checkers()


def test_triggered_faults_fire_on_what_the_cluster_does():
    settings = SimSettings(duration=4.0, nemeses=("kill", "partition-in-flight", "crash-after-vote", "crash-after-ack"))
    seen = {"in-flight": False, "after": False}
    for seed in range(8):
        faults = run_seed(seed, settings).faults
        seen["in-flight"] |= any("leader-in-flight" in f for f in faults)
        seen["after"] |= any("'trigger': 'after-" in f for f in faults)
        if all(seen.values()):
            break
    assert all(seen.values()), seen


def test_ddmin_finds_a_one_minimal_failing_subset():
    from harness.sim.shrink import ddmin

    calls = []

    def fails(xs):
        calls.append(list(xs))
        return {3, 11}.issubset(xs)

    assert ddmin(list(range(20)), fails) == [3, 11]
    assert all(c != list(range(20)) for c in calls)  # the whole input is taken as failing
    assert ddmin([1, 2], lambda xs: False) == [1, 2]


def test_a_failing_seed_shrinks_to_a_smaller_schedule_that_fails_the_same_checker(monkeypatch):
    from harness.sim.shrink import shrink

    monkeypatch.setenv("UKEHI_I_KNOW_THIS_IS_UNSAFE", "1")
    settings = SimSettings(duration=4.0, node_options=(("unsafe_bug", "stale-read"),), whitebox=False)
    seed = next(s for s in range(6) if run_seed(s, settings).failed)
    sr = shrink(seed, settings, budget_s=120)
    assert sr is not None and sr.checker == "linearizable"
    assert sr.client_ops[0] < sr.client_ops[1] and sr.fault_steps[0] <= sr.fault_steps[1]
    again = run_seed(seed, sr.settings)  # the shrunk schedule replays: same trace, same failure
    assert again.digest == sr.result.digest and "linearizable" in again.failing_checkers()


def test_a_seed_over_its_iteration_budget_is_unknown_and_replays_alike(tmp_path):
    """A runaway seed (a livelock) is stopped deterministically and judged unknown, never valid;
    the CLI says UNKNOWN, prints a replay with the budget, and exits 2 (Jepsen's unknown)."""
    import dataclasses
    import subprocess
    import sys

    settings = dataclasses.replace(SimSettings(), max_steps=3000)
    a, b = run_seed(1, settings), run_seed(1, settings)
    assert a.valid == "unknown" and a.checkers["event-budget"]["valid"] == "unknown"
    assert "3000 loop iterations" in a.checkers["event-budget"]["explanation"]
    assert a.digest == b.digest
    assert run_seed(1).valid is True and "event-budget" not in run_seed(1).checkers  # the automatic budget
    done = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seeds", "1", "--start-seed", "1",
                           "--max-steps", "3000", "--workers", "1", "--no-store"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "seed 1: UNKNOWN (event-budget)" in done.stdout and "--max-steps 3000" in done.stdout
    assert "1 unknown" in done.stdout


def test_a_time_budget_stops_the_sweep_instead_of_running_every_queued_seed(tmp_path):
    """Pool.imap drains its task generator from a thread: unbounded, a --time-budget sweep
    queued thousands of seeds in its budget and then ran them all. A 2 s budget must end
    after the seeds in flight (generous bound: this checks the budget, not speed)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--time-budget", "2", "--workers", "1",
                           "--duration", "2", "--no-store"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("sim: ")]
    seeds = int(summary[-1].split()[1])
    assert 1 <= seeds <= 40, summary  # ~2 s of 2-virtual-second seeds plus the two queued


def test_stop_at_first_ends_the_sweep_at_its_first_failing_seed(tmp_path):
    """--stop-at-first used to hang after its first find: Pool.terminate() joined the feeder
    thread while that thread waited for a free slot that the stopped loop never released."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seeds", "30", "--workers", "1",
                           "--stop-at-first", "--workload", "register", "--duration", "4", "--no-store",
                           "--shrink-budget", "0", "--node-option", "unsafe_bug=stale-read"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "UKEHI_I_KNOW_THIS_IS_UNSAFE": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("sim: ")]
    assert summary and summary[-1].endswith(", 1 failing"), done.stdout
    assert int(summary[-1].split()[1]) < 30  # it stopped: not every seed ran


def test_without_a_workload_each_seed_draws_one_and_its_replay_names_it(tmp_path):
    """`sim` without --workload: the seed draws its workload (all five over a few seeds),
    records it in its options, and the replay command names it, so replaying with that
    workload gives the same trace."""
    from harness.commands.sim import _one
    from harness.sim.runner import SWARM, WORKLOADS, resolve_workload

    swarm_settings = SimSettings(workload=SWARM, duration=3.0)
    drawn = {s: resolve_workload(s, swarm_settings).workload for s in range(40)}
    assert set(drawn.values()) == set(WORKLOADS)
    assert resolve_workload(5, SimSettings(workload="fencing")).workload == "fencing"  # named: kept
    seed = next(s for s, w in drawn.items() if w == "kv")
    a = run_seed(seed, swarm_settings)
    b = run_seed(seed, SimSettings(workload="kv", duration=3.0))
    assert a.options["workload"] == "kv" and a.digest == b.digest
    assert a.checkers.keys() == b.checkers.keys() and "linearizable" in a.checkers
    out = _one((seed, swarm_settings, str(tmp_path), False, False, 0.0))
    assert "--workload kv" in out["replay"] and out["digest"] == a.digest


def test_a_slow_link_delivers_late_and_never_loses_what_it_holds():
    """The "slow" fault: every message on a held link arrives `extra` seconds late (an
    election happens meanwhile) and still arrives: the deposed leader's old-term messages."""
    from ukehi.sim.world import SimWorld, WorldOptions

    world = SimWorld(5, WorldOptions())
    for n in world.names:
        world.start(n)
    world.run_until(8.0)

    def role(n: str) -> tuple[str, int]:
        core = world.nodes[n].current.node.core
        return core.role.name, core.term

    (lead,) = [n for n in world.names if role(n)[0] == "LEADER"]
    old_term = role(lead)[1]
    delivered: list[tuple[str, float]] = []
    deliver = world._deliver

    def spy(src: str, dst: str, frame: object) -> None:
        delivered.append((src, world.now()))
        deliver(src, dst, frame)

    world._deliver = spy  # type: ignore[method-assign]
    t0 = world.now()
    for other in world.names:
        if other != lead:
            world.slow_link(lead, other, 3.0)
    world.run_until(t0 + 2.9)
    assert not [t for src, t in delivered if src == lead]  # held: nothing arrived yet
    leaders = [n for n in world.names if n != lead and role(n)[0] == "LEADER"]
    assert leaders and role(leaders[0])[1] > old_term  # the others moved on meanwhile
    world.unslow()
    world.run_until(t0 + 4.0)
    assert [t for src, t in delivered if src == lead and t >= t0 + 3.0]  # late, not lost
    world.run(world.stop_all())


def test_a_seed_that_does_not_draw_the_slow_family_runs_as_without_it():
    from harness.sim.runner import NEMESES, swarm

    without = SimSettings(nemeses=tuple(n for n in NEMESES if n != "slow"))
    drew = 0
    for seed in range(40):
        opts = swarm(seed, SimSettings())
        if "slow" in opts["faults"]:
            drew += 1
            assert opts["faults"][-1] == "slow"
            assert {**opts, "faults": opts["faults"][:-1]} == swarm(seed, without) or not opts["faults"][:-1]
        else:
            assert opts == swarm(seed, without)
    assert 5 < drew < 35


def test_a_peer_link_delivers_in_send_order_whatever_the_jitter():
    """A peer link is one ordered stream (the real node's TCP connection): with delays drawn
    from 1 to 50 ms and duplication, no message overtakes one sent before it on its link.
    (Each message arriving after its own delay shuffled 256-entry windows; sim seed 8082.)"""
    from ukehi.sim.world import SimWorld, WorldOptions

    world = SimWorld(3, WorldOptions(delay=(0.001, 0.05), duplicate=0.2, heartbeat_ms=20))
    keep: list[object] = []  # every frame stays alive, so an id names one object
    sent: dict[tuple[str, str], dict[int, list[int]]] = {}
    counts: dict[tuple[str, str], int] = {}
    delivered: dict[tuple[str, str], list[int]] = {}
    transmit, deliver = world._transmit, world._deliver

    def spy_transmit(src: str, dst: str, frame: object) -> None:
        keep.append(frame)
        n = counts[(src, dst)] = counts.get((src, dst), 0) + 1
        sent.setdefault((src, dst), {}).setdefault(id(frame), []).append(n)
        transmit(src, dst, frame)  # type: ignore[arg-type]

    def spy_deliver(src: str, dst: str, frame: object) -> None:
        delivered.setdefault((src, dst), []).append(id(frame))
        deliver(src, dst, frame)  # type: ignore[arg-type]

    world._transmit = spy_transmit  # type: ignore[method-assign]
    world._deliver = spy_deliver  # type: ignore[method-assign]
    for n in world.names:
        world.start(n)
    world.run_until(6.0)
    world.run(world.stop_all())
    busy = [link for link, ids in delivered.items() if len(ids) > 50]
    assert len(busy) >= 4  # the leader's links both ways
    for link in busy:
        at, repeats = 0, 0
        for ident in delivered[link]:
            # the earliest send of this object not before the last delivered one: a copy of
            # the same send may arrive again (duplication), an earlier send may not
            later = [k for k in sent[link][ident] if k >= at]
            assert later, f"{link}: a message sent before #{at} arrived after it"
            repeats += later[0] == at
            at = later[0]
        assert repeats > 0, link  # duplicates did arrive, right after their original
