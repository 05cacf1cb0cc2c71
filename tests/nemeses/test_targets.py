"""Fault targets (Jepsen's combined nemesis) against a recording stand-in context."""

import asyncio
import random

import pytest

from harness.registry import EXCLUSIVE_NEMESES, NEEDS_FAKE_CLOCK, NEEDS_NETWORK_FAULTS, NEMESES, SHADING, parse_nemeses
from nemeses import clock, disk, partition, process, targets


class Node:
    def __init__(self, name):
        self.name, self.address = name, f"10.0.0.{name[1:]}"
        self.calls, self.running, self.state, self._pid = [], True, "S", 100

    @property
    def pid(self):
        return self._pid if self.running else None

    def process_state(self):
        return self.state if self.running else None

    def is_running(self):
        return self.running

    def drop_from(self, peers, direction="in"):
        self.calls.append(("drop", tuple(peers)))

    def heal_network(self):
        self.calls.append(("heal",))

    def kill(self):
        self.calls.append(("kill",))
        self.running = False

    def pause(self):
        self.calls.append(("pause",))
        self.state = "T"

    def resume(self):
        self.calls.append(("resume",))
        self.state = "S"

    def set_clock(self, offset, rate=1.0):
        self.calls.append(("clock", offset, rate))

    def clock_offset(self):
        return 0.0


class Ctx:
    """n nodes; ``leading`` maps node -> term of the nodes whose status says leader."""

    def __init__(self, n=5, leading=None):
        self.nodes = {f"n{i}": Node(f"n{i}") for i in range(1, n + 1)}
        self.leading = dict(leading or {})
        self.asked = []

    async def statuses(self, names=None):
        names = sorted(self.nodes) if names is None else list(names)
        self.asked.append(names)
        return {n: {"role": "leader" if n in self.leading else "follower", "term": self.leading.get(n, 1)}
                for n in names}

    async def leader(self):
        return max(self.leading, key=self.leading.get) if self.leading else None

    async def start_node(self, name):
        self.nodes[name].running = True
        self.nodes[name]._pid += 1
        return self.nodes[name]._pid

    async def node_clock(self, name):
        return None


def resolve(ctx, kind, seed=0):
    return asyncio.run(targets.resolve_detail(ctx, kind, random.Random(seed)))


@pytest.mark.parametrize("n,sizes", [(3, {"one": 1, "majority": 2, "minority-third": 1, "all": 3}),
                                     (5, {"one": 1, "majority": 3, "minority-third": 1, "all": 5}),
                                     (7, {"one": 1, "majority": 4, "minority-third": 2, "all": 7})])
def test_fixed_size_targets(n, sizes):
    ctx = Ctx(n)
    for kind, size in sizes.items():
        for seed in range(20):
            names, _ = resolve(ctx, kind, seed)
            assert len(names) == size and len(set(names)) == size and set(names) <= set(ctx.nodes)
    minority = {len(resolve(ctx, "minority", s)[0]) for s in range(50)}
    assert minority <= set(range(1, (n - 1) // 2 + 1)) and max(minority) == max(1, (n - 1) // 2)


def test_primaries_are_every_node_claiming_leadership_and_skip_paused_ones():
    ctx = Ctx(5, leading={"n2": 3, "n4": 4})  # an old, cut-off leader still claims term 3
    names, how = resolve(ctx, "primaries")
    assert names == ["n2", "n4"] and how == {"primaries": ["n4", "n2"]}
    assert resolve(ctx, "leader")[0] == ["n2", "n4"]  # the old name
    ctx.nodes["n2"].pause()
    assert resolve(ctx, "primaries")[0] == ["n4"]
    assert "n2" not in ctx.asked[-1]  # a stopped node is not asked (it would cost a time-out)


def test_primaries_without_a_leader_hits_one_node_and_says_so():
    ctx = Ctx(3)
    names, how = resolve(ctx, "primaries", seed=4)
    assert len(names) == 1 and how["primaries"] == [] and "no node claimed" in how["fallback"]


def test_unknown_target_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="minority-third, primaries, all"):
        process.kill_package(Ctx(), targets=("everyone",))
    with pytest.raises(ValueError, match="unknown fault target"):
        resolve(Ctx(), "everyone")


def test_kill_primaries_kills_the_leader_and_records_whom():
    ctx = Ctx(5, leading={"n3": 2})
    pkg = process.kill_package(ctx, targets=("primaries",))
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert value["killed"] == {"n3": 100} and value["primaries"] == ["n3"]
    assert not ctx.nodes["n3"].running and all(ctx.nodes[n].running for n in ("n1", "n2", "n4", "n5"))


def test_pause_and_clock_hit_the_primaries():
    ctx = Ctx(3, leading={"n1": 5})
    pkg = process.pause_package(ctx, targets=("primaries",))
    assert asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))["paused"] == ["n1"]
    ctx = Ctx(3, leading={"n2": 5})
    pkg = clock.package(ctx, modes=("bump",), targets=("primaries",))
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(1))))
    assert value["nodes"] == ["n2"] and [c[0] for c in ctx.nodes["n2"].calls] == ["clock"]
    assert not ctx.nodes["n1"].calls and not ctx.nodes["n3"].calls


def test_default_mix_is_leader_heavy():
    ctx = Ctx(5, leading={"n5": 2})
    pkg = process.kill_package(ctx)
    drawn = []
    for seed in range(400):
        op = pkg.generator(random.Random(seed))
        if op["f"] == "kill":
            drawn.append(op["value"]["target"])
    assert drawn.count("primaries") / len(drawn) > 0.4
    assert {"one", "minority", "majority"} <= set(drawn)


def test_partition_primaries_cuts_the_leaders_off_at_the_moment_of_the_fault():
    ctx = Ctx(5, leading={"n2": 7})
    pkg = partition.package(ctx, topologies=("primaries",), one_way_fraction=0)
    op = pkg.generator(random.Random(0))
    assert "grudge" not in op["value"]  # decided when it runs, not when it is generated
    value = asyncio.run(pkg.invoke(op))
    assert value["primaries"] == ["n2"] and value["components"] == [["n1", "n3", "n4", "n5"], ["n2"]]
    assert ctx.nodes["n2"].calls == [("drop", tuple(ctx.nodes[p].address for p in ("n1", "n3", "n4", "n5")))]
    assert ctx.nodes["n1"].calls == [("drop", (ctx.nodes["n2"].address,))]


def test_partition_minority_third_and_default_mix():
    ctx = Ctx(7)
    pkg = partition.package(ctx, topologies=("minority-third",), one_way_fraction=0)
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(2))))
    assert sorted(len(c) for c in value["components"]) == [2, 5]
    drawn = [partition.package(Ctx(5)).generator(random.Random(s))["value"]["topology"] for s in range(200)]
    assert 0.35 < drawn.count("primaries") / len(drawn) < 0.65


def test_disk_minority_third_victim_count():
    assert disk.victim_count("minority-third", 7) == 2 and disk.victim_count("minority-third", 3) == 1


def test_registry_names_every_family_and_target():
    for family in ("kill", "pause", "clock"):
        for target in ("one", "minority", "majority", "minority-third", "primaries"):
            assert f"{family}-{target}" in NEMESES and f"{family}-{target}" in SHADING
    for target in ("one", "minority", "majority", "minority-third", "primaries"):
        assert f"partition-{target}" in NEEDS_NETWORK_FAULTS
    assert "clock-primaries" in NEEDS_FAKE_CLOCK and "disk-primaries" in NEMESES
    assert parse_nemeses("partition-primaries,kill-primaries,pause-one") == (
        "partition-primaries", "kill-primaries", "pause-one")
    with pytest.raises(ValueError, match="variants of one fault"):
        parse_nemeses("kill,kill-primaries")
    assert any("kill-all" in g and "kill-primaries" in g for g in EXCLUSIVE_NEMESES)
    ctx = Ctx(3, leading={"n1": 1})
    for name in NEMESES:
        if name.split("-")[0] in ("kill", "pause", "clock", "partition", "disk"):
            NEMESES[name](ctx)  # every variant builds
