"""Fast schedules (nemeses/schedules.py) against a stand-in cluster whose leadership moves."""

import asyncio
import random

import pytest

from harness.registry import (MIX_MEMBERS, MIXES, NEEDS_FAKE_CLOCK, NEEDS_NETWORK_FAULTS, default_nemeses,
                              needs_fake_clock, parse_nemeses)
from nemeses import schedules


class Node:
    def __init__(self, name, cluster):
        self.name, self.address, self.cluster = name, f"10.0.0.{name[1:]}", cluster
        self.running, self._pid, self.calls = True, 100, []

    @property
    def pid(self):
        return self._pid if self.running else None

    def is_running(self):
        return self.running

    def process_state(self):
        return "S" if self.running else None

    def kill(self):
        self.calls.append("kill")
        self.running = False
        self.cluster.depose(self.name)

    def drop_from(self, peers, direction="in"):
        self.calls.append(("drop", tuple(peers)))
        n = len(self.cluster.nodes)
        if n - len(peers) < n // 2 + 1:  # hears less than a majority (itself included)
            self.cluster.cut.add(self.name)

    def heal_network(self):
        self.calls.append("heal")
        self.cluster.cut.clear()

    def clear_netem(self):
        pass

    def resume(self):
        pass


class Cluster:
    """Leadership moves to the lowest-named reachable node once the leader is cut or killed;
    the leader's applied index grows by one every ``apply_every`` status calls."""

    def __init__(self, n=3, apply_every=3):
        self.nodes = {f"n{i}": Node(f"n{i}", self) for i in range(1, n + 1)}
        self.leader, self.term, self.cut, self.applied, self.calls = "n1", 1, set(), 10, 0
        self.apply_every = apply_every
        self.dropped = []

    def depose(self, name):
        if name == self.leader:
            self.leader = None

    async def statuses(self, names=None):
        self.calls += 1
        if self.calls % self.apply_every == 0:
            self.applied += 1
        if self.leader is None or self.leader in self.cut:
            live = [n for n in sorted(self.nodes) if self.nodes[n].running and n != self.leader
                    and (not self.cut or n not in self.cut)]
            self.leader, self.term = live[0], self.term + 1
        names = sorted(self.nodes) if names is None else names
        return {n: ({"role": "leader" if n == self.leader else "follower", "term": self.term,
                     "applied_index": self.applied, "election_timeout_ms": [100, 200]}
                    if self.nodes[n].running else None) for n in names}

    async def start_node(self, name):
        self.nodes[name].running = True
        self.nodes[name]._pid += 1
        return self.nodes[name]._pid

    async def drop_unfsynced(self, name):
        self.dropped.append(name)
        return {"lost_bytes": 7, "lost": {"wal": 7}}


def test_leader_churn_changes_the_leader_every_round_and_heals():
    c = Cluster(3)
    pkg = schedules.leader_churn_package(c, duration_s=1.0, kill_fraction=0.5, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(1))))
    assert value["changes"] >= 3 and value["changes"] == len(value["rounds"])
    for r in value["rounds"]:
        assert r["new_leader"] != r["leader"] and ("killed" in r) != ("isolated" in r)
        if "isolated" in r:
            assert r["isolated"] == [r["leader"]]  # 3 nodes: the leader alone is a minority
    assert any("killed" in r for r in value["rounds"]) and any("isolated" in r for r in value["rounds"])
    assert all(n.running for n in c.nodes.values()) and not c.cut
    assert pkg.generator(random.Random(1)) == {"f": schedules.STOP_CHURN}


def test_leader_churn_on_five_nodes_isolates_the_leader_with_one_follower():
    c = Cluster(5)
    pkg = schedules.leader_churn_package(c, duration_s=0.5, kill_fraction=0.0, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(2))))
    assert value["rounds"] and all(len(r["isolated"]) == 2 for r in value["rounds"])


def test_flapping_cuts_and_heals_within_a_client_timeout():
    c = Cluster(5)
    pkg = schedules.flapping_package(c, period_ms=(20, 40), duration_s=0.5)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(3))))
    cuts = [s for s in value["steps"] if "cut" in s]
    assert value["flaps"] == len(cuts) >= 4
    assert value["steps"][-1] == {"at_ms": value["steps"][-1]["at_ms"], "healed": True}
    assert all(b["at_ms"] - a["at_ms"] < 200 for a, b in zip(value["steps"], value["steps"][1:]))


def test_crash_after_ack_kills_the_leader_right_after_its_applied_index_moves():
    c = Cluster(3, apply_every=4)
    pkg = schedules.crash_after_ack_package(c, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert value["leader"] == "n1" and value["applied"] == value["applied_before"] + 1
    assert value["killed"] == {"n1": 100} and not c.nodes["n1"].running
    assert asyncio.run(pkg.invoke(pkg.generator(random.Random(0)))) == {"started": {"n1": 101}}


def test_crash_after_ack_skips_when_nothing_is_acknowledged():
    c = Cluster(3, apply_every=10 ** 9)
    pkg = schedules.crash_after_ack_package(c, watch_s=0.05, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert "skipped" in value and all(n.running for n in c.nodes.values())


def test_power_cut_after_ack_drops_every_node():
    c = Cluster(3, apply_every=2)
    pkg = schedules.power_cut_after_ack_package(c, poll_s=0.001)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert sorted(value["lost"]) == ["n1", "n2", "n3"] and c.dropped == ["n1", "n2", "n3"]
    assert not any(n.running for n in c.nodes.values())
    asyncio.run(pkg.invoke({"f": schedules.POWER_ON}))
    assert all(n.running for n in c.nodes.values())


def test_registry_and_default_mix():
    assert parse_nemeses("flapping,leader-churn,crash-after-ack") == ("flapping", "leader-churn", "crash-after-ack")
    assert {"flapping", "leader-churn", "mix", "lazyfs-mix"} <= NEEDS_NETWORK_FAULTS
    assert default_nemeses("register", "local", root=True, fuse=True) == ("lazyfs-mix",)
    assert default_nemeses("register", "local", root=True, fuse=False) == ("mix",)
    assert default_nemeses("register", "docker", root=True, fuse=True) == ("mix",)
    assert default_nemeses("register", "local", root=False, fuse=False) == ("mix-loopback",)
    assert "mix-loopback" not in NEEDS_NETWORK_FAULTS and not needs_fake_clock(("mix-loopback",))
    assert needs_fake_clock(("lazyfs-mix",))  # slow-leader is a member
    assert not set(default_nemeses("register", "ssh", root=True)) & NEEDS_FAKE_CLOCK
    assert "pause" in default_nemeses("fencing", "local", root=True, fuse=True)
    with pytest.raises(ValueError, match="mix of faults already"):
        parse_nemeses("mix,kill")
    # A typo gets the name it was probably meant to be; a name like nothing gets no guess.
    with pytest.raises(ValueError, match=r"unknown nemesis partiton \(did you mean 'partiton' -> 'partition'\?\)"):
        parse_nemeses("partiton,kill")
    with pytest.raises(ValueError) as refused:
        parse_nemeses("meteor")
    assert "did you mean" not in str(refused.value) and "choose from partition, kill" in str(refused.value)
    assert set(MIXES["lazyfs-mix"]) == set(MIX_MEMBERS) | {"lazyfs-after-ack"}


def test_a_mix_opens_one_fault_at_a_time_and_closes_it_next():
    from nemeses import process
    from nemeses.package import one_at_a_time

    c = Cluster(5)
    mix = one_at_a_time("m", [process.kill_package(c, targets=("one",)),
                              process.pause_package(c, targets=("one",))])
    rng = random.Random(0)
    ops = [mix.generator(rng)["f"] for _ in range(40)]
    starts, stops = {"kill": "start", "pause": "resume"}, {"start", "resume"}
    for a, b in zip(ops[::2], ops[1::2]):
        assert a in starts and b == starts[a]  # opened, then closed by the same package
    assert set(ops[::2]) == {"kill", "pause"} and set(ops[1::2]) <= stops
    for turn in range(0, 40, 4):  # a deck: each package opens once per round of two
        assert {ops[turn], ops[turn + 2]} == {"kill", "pause"}
    assert {op["f"] for op in mix.final()} == {"start", "resume"}
    value = asyncio.run(mix.invoke({"f": "kill", "value": {"target": "one", "seed": 1}}))
    assert len(value["killed"]) == 1
    with pytest.raises(ValueError, match="claimed by both"):
        one_at_a_time("m", [process.kill_package(c), process.kill_package(c)])


def test_wal_damage_in_a_mix_brings_the_corruption_policy_checker():
    from harness.registry import damages_wal

    assert damages_wal(("lazyfs-mix",)) and damages_wal(("mix",)) and damages_wal(("mix-loopback",))
    assert damages_wal(("disk",)) and damages_wal(("partition", "disk-primaries"))
    assert not damages_wal(("partition", "kill", "lazyfs-after-ack"))


def test_a_mix_that_drew_no_wal_damage_passes_the_policy_checker(tmp_path):
    from harness.registry import wal_policy_checker

    history = []  # no corrupt-wal op
    assert wal_policy_checker(("lazyfs-mix",), {}, "truncate-to-last-good")(history)["valid"] is True
    assert wal_policy_checker(("disk-one",), {}, "truncate-to-last-good")(history)["valid"] == "unknown"
