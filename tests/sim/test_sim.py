"""The simulator: deterministic, finds a planted bug in a small fixed seed budget, clean on
the correct build, and its disk loses exactly what a power cut loses."""

from __future__ import annotations

import os
import random

import pytest

from harness.sim.runner import SimSettings, run_seed
from ukehi.sim.fs import SimFS
from ukehi.storage import vfs
from ukehi.storage.errors import StorageError
from ukehi.storage.format import WalEntry
from ukehi.storage.wal import WAL

SHORT = SimSettings(duration=4.0)


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
