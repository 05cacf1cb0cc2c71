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
