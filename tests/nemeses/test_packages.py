"""Package logic against a recording stand-in context (the real effects are tested per backend)."""

import asyncio
import random

import pytest

from nemeses import partition, process
from nemeses.package import compose


class RecordingNode:
    def __init__(self, name, address):
        self.name, self.address = name, address
        self.calls = []
        self.running = True
        self._pid = 100

    @property
    def pid(self):
        return self._pid if self.running else None

    def drop_from(self, peers, direction="in"):
        self.calls.append(("drop", tuple(peers), direction))

    def heal_network(self):
        self.calls.append(("heal",))

    def kill(self):
        self.calls.append(("kill",))
        self.running = False

    def pause(self):
        self.calls.append(("pause",))

    def resume(self):
        self.calls.append(("resume",))

    def is_running(self):
        return self.running


class Ctx:
    def __init__(self, n=5):
        self.nodes = {f"n{i}": RecordingNode(f"n{i}", f"10.0.0.{i}") for i in range(1, n + 1)}
        self.leader_name = "n3"

    async def start_node(self, name):
        node = self.nodes[name]
        node.running = True
        node._pid += 1
        return node._pid

    async def leader(self):
        return self.leader_name


def test_partition_applies_grudge_by_address_and_heals_everyone():
    ctx = Ctx()
    pkg = partition.package(ctx, topologies=["halves"], one_way_fraction=0)
    op = pkg.generator(random.Random(1))
    assert op["f"] == "start-partition"
    value = asyncio.run(pkg.invoke(op))
    for name, peers in op["value"]["grudge"].items():
        expected = tuple(ctx.nodes[p].address for p in peers)
        assert ctx.nodes[name].calls == [("drop", expected, "in")]
    assert sorted(len(c) for c in value["components"]) == [2, 3]
    assert pkg.generator(random.Random(1)) == {"f": "stop-partition"}
    for final in pkg.final():
        asyncio.run(pkg.invoke(final))
    assert all(node.calls[-1] == ("heal",) for node in ctx.nodes.values())


def test_a_cut_off_leader_gets_bursts_of_reads_over_an_election_timeout():
    import time

    class Recorder:  # stands in for ClientOps (nemeses/leader_reads.py)
        def __init__(self):
            self.bursts = []

        async def burst(self, address, node, reads, writes, timeout):
            self.bursts.append((time.monotonic(), address, node, reads, writes, timeout))
            return {"node": node, "ops": [{"f": "read"}] * reads, "ok": 0}

    class StatusCtx(Ctx):
        async def statuses(self, names=None):
            return {n: {"role": "leader" if n == self.leader_name else "follower", "term": 2,
                        "election_timeout_ms": [200, 400]} for n in (names or self.nodes)}

        def endpoint(self, name):
            return f"{self.nodes[name].address}:7000"

    ctx = StatusCtx(3)
    ctx.client_ops = Recorder()
    pkg = partition.package(ctx, topologies=["primaries"], one_way_fraction=0)
    started = time.monotonic()
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(1))))
    assert value["primaries"] == ["n3"] and sorted(value["grudge"]) == ["n1", "n2", "n3"]
    bursts = ctx.client_ops.bursts
    assert len(bursts) == partition.CUT_OFF_READ_BURSTS
    assert {b[1:] for b in bursts} == {("10.0.0.3:7000", "n3", partition.CUT_OFF_READ_KEYS, 0,
                                        partition.CUT_OFF_READ_TIMEOUT_S)}  # reads only, at the cut-off leader
    window = partition.CUT_OFF_READ_WINDOW * 0.4  # the status's longest election timeout, 400 ms
    assert bursts[0][0] - started < 0.2 and bursts[-1][0] - bursts[0][0] >= window * 0.95
    assert value["cut_off_reads"] == [{"node": "n3", "bursts": 8, "window_ms": round(window * 1000),
                                       "ops": 8 * partition.CUT_OFF_READ_KEYS, "ok": 0}]
    # other topologies cut off no leader on purpose: no reads; a run without client ops neither
    halves = partition.package(ctx, topologies=["halves"], one_way_fraction=0)
    assert "cut_off_reads" not in asyncio.run(halves.invoke(halves.generator(random.Random(1))))
    del ctx.client_ops
    assert "cut_off_reads" not in asyncio.run(pkg.invoke(pkg.generator(random.Random(2))))
    assert len(bursts) == partition.CUT_OFF_READ_BURSTS


def test_kill_leader_then_restart_records_pids():
    ctx = Ctx()
    pkg = process.kill_package(ctx, targets=["leader"])
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert value["killed"] == {"n3": 100} and not ctx.nodes["n3"].running
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(0))))
    assert value == {"started": {"n3": 101}} and ctx.nodes["n3"].running


def test_compose_routes_ops_and_collects_finals():
    ctx = Ctx()
    nem = compose([partition.package(ctx), process.kill_package(ctx), process.pause_package(ctx)])
    assert {op["f"] for op in nem.final_ops()} == {"stop-partition", "start", "resume"}
    with pytest.raises(ValueError, match="no nemesis package"):
        asyncio.run(nem.invoke({"f": "explode"}))
    with pytest.raises(ValueError, match="claimed by both"):
        compose([process.kill_package(ctx), process.kill_package(ctx)])
    assert [s.name for s in nem.shading] == ["partition", "kill", "pause"]


def test_packet_link_target_shapes_one_node_towards_one_peer_only():
    from nemeses import packet

    class ShapingNode(RecordingNode):
        def set_netem(self, **settings):
            self.calls.append(("netem", settings))

        def clear_netem(self):
            self.calls.append(("clear",))

    ctx = Ctx()
    ctx.nodes = {n: ShapingNode(n, node.address) for n, node in ctx.nodes.items()}
    pkg = packet.package(ctx, profiles=["slow"], targets=["link"])
    value = asyncio.run(pkg.invoke(pkg.generator(random.Random(4))))
    source, dest = value["link"]
    assert source != dest
    shaped = [n for n, node in ctx.nodes.items() if node.calls]
    assert shaped == [source]
    (kind, settings), = ctx.nodes[source].calls
    assert settings["to"] == [ctx.nodes[dest].address] and settings["delay_ms"] == 200.0
    asyncio.run(pkg.invoke({"f": "stop-packet"}))
    assert all(node.calls[-1] == ("clear",) for node in ctx.nodes.values())
