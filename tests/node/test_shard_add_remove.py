"""Adding and removing nodes of a sharded cluster on real processes (issue 15): `add_node` and
`remove_node` change the node set in the shard map, the partitioner's plan decides which replicas
move, the shard leaders move them (at most --max-moves at once) through the replica-move
machinery, and the map is the address book that tells every node where a new node listens."""

from __future__ import annotations

import asyncio
import json

import pytest

from ukehi.client import UkehiClient
from ukehi.shardmap import ShardMap, meta_members, placement, plan

from test_shard_moves import kv_cli, writer

SHARDS, RF = 16, 3
FIVE = [f"n{i}" for i in range(1, 6)]


def sharded5(make_cluster, max_moves: int = 2, tls: bool = False):
    cluster = make_cluster(5, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF),
                                          "--max-moves", str(max_moves)], tls=tls)
    cluster.start()
    return cluster


async def wait_ready(cluster, ids) -> None:
    def led(statuses: dict) -> bool:
        leaders = {int(s) for st in statuses.values() for s, g in (st.get("shards") or {}).items()
                   if g["role"] == "leader"}
        return set(ids) <= set(statuses) and leaders == set(range(SHARDS))

    await cluster.wait_until(led, 45.0, "a leader in every shard", ids)


async def write_keys(addresses, count: int) -> dict[str, int]:
    async with UkehiClient(addresses, timeout=10.0) as c:
        written = {}
        for i in range(count):
            r = await c.put(f"k{i}", i)
            assert r.ok, r
            written[f"k{i}"] = i
        return written


async def read_back(addresses, written: dict[str, int]) -> None:
    async with UkehiClient(addresses, timeout=10.0) as c:
        for key, value in written.items():
            r = await c.get(key)
            assert r.ok and r.value == value, (key, r)


async def final_map(addresses) -> ShardMap:
    async with UkehiClient(addresses, timeout=5.0) as c:
        r = await c.rebalance_status()
        assert r.ok and not r.value["rebalancing"], r
        assert c.shard_map is not None
        return c.shard_map


async def sample_moves(cluster, stop: asyncio.Event, seen: list[int]) -> None:
    """The number of moves in flight in every map the nodes report, until stopped."""
    while not stop.is_set():
        seen += [len(st.get("moves") or []) for st in (await cluster.statuses()).values()]
        await asyncio.sleep(0.05)


def test_a_sixth_node_gets_the_replicas_the_partitioner_plans_and_every_key_stays(make_cluster):
    # Mutual TLS, as a node runs by default: the new node's links are authenticated too.
    cluster = sharded5(make_cluster, tls=True)
    founding = ShardMap.initial(FIVE, SHARDS, RF)
    expected = plan(founding, FIVE + ["n6"])
    target = placement(FIVE + ["n6"], SHARDS, RF)

    async def scenario() -> None:
        await wait_ready(cluster, FIVE)
        written = await write_keys(cluster.addresses, 48)
        # Not running yet: refused, nothing recorded, and the error says how to start it.
        spare = cluster.add_spare("n6")
        async with UkehiClient(cluster.addresses[:5], timeout=15.0) as admin:
            early = await admin.add_node("n6", spare.address)
            assert not early.ok and early.error == "refused", early
            assert "--join --shards 16 --replication-factor 3" in early.message, early.message
            spare.start()
            await cluster.wait_until(lambda st: "n6" in st, 20.0, "n6 to answer", ["n6"])
            added = await admin.add_node("n6", spare.address)
            assert added.ok, (added, cluster.tails())
            assert added.value["planned"] == [[m.shard, list(m.remove), list(m.add)] for m in expected]
            assert "n6" in added.value["nodes"] and added.value["rebalancing"] is True
        # The CLI waits for the end of the rebalance; the moves in flight never exceed --max-moves.
        stop, seen = asyncio.Event(), []
        sampler = asyncio.create_task(sample_moves(cluster, stop, seen))
        done = await asyncio.to_thread(kv_cli, "rebalance", "--wait", "60", "--json", "--tls-dir", cluster.certs_dir,
                                       "--cluster", ",".join(cluster.addresses[:5]))
        stop.set()
        await sampler
        assert done.returncode == 0, (done.stdout, done.stderr, cluster.tails())
        assert seen and max(seen) <= 2, seen
        value = json.loads(done.stdout)["value"]
        assert value["planned"] == [] and value["leaving"] == [] and "n6" in value["nodes"]
        smap = await final_map(cluster.addresses)
        assert [set(m) for m in smap.members] == [set(m) for m in target]
        # Only shards whose member set changed moved, and only to the new node: every change
        # is one old member swapped for n6, none between old nodes.
        for s in range(SHARDS):
            gone, came = set(founding.members[s]) - set(smap.members[s]), set(smap.members[s]) - set(founding.members[s])
            assert (not gone and not came) or came == {"n6"}, (s, founding.members[s], smap.members[s])
        assert smap.address_of("n6") == spare.address  # the map is the address book
        moved_to_n6 = {m.shard for m in expected}
        statuses = await cluster.wait_until(
            lambda st: "n6" in st and {int(s) for s in st["n6"]["shards"]} == moved_to_n6
            and all(g["member"] for g in st["n6"]["shards"].values()),
            20.0, "n6 to host the shards moved to it")
        assert statuses["n6"]["epoch"] == smap.epoch
        await read_back(cluster.addresses, written)
        # A client that knows only the new node reaches every shard through the map.
        await read_back([spare.address], written)
        # And out again: a node that was added can be removed; the placement is the founders'
        # again, and its address leaves the map with it.
        async with UkehiClient(cluster.addresses[:5], timeout=15.0) as admin:
            assert (await admin.remove_node("n6")).ok
            waited = await admin.wait_rebalanced(60.0)
            assert waited.ok, (waited, cluster.tails())
        back = await final_map(cluster.addresses[:5])
        assert [set(m) for m in back.members] == [set(m) for m in founding.members]
        assert "n6" not in back.nodes and back.address_of("n6") is None and back.same_cluster(founding)
        await read_back(cluster.addresses[:5], written)

    asyncio.run(scenario())


def test_a_removed_node_ends_with_no_replicas_and_the_cluster_serves(make_cluster):
    cluster = sharded5(make_cluster)
    founding = ShardMap.initial(FIVE, SHARDS, RF)
    meta = meta_members(FIVE, RF)
    gone = next(n for n in FIVE if n not in meta)
    rest = [n for n in FIVE if n != gone]
    target = placement(rest, SHARDS, RF)

    async def scenario() -> None:
        await wait_ready(cluster, FIVE)
        written = await write_keys(cluster.addresses, 32)
        async with UkehiClient(cluster.addresses, timeout=15.0) as admin:
            r = await admin.remove_node(gone)
            assert r.ok, (r, cluster.tails())
            assert gone in r.value["leaving"]
            assert r.value["replicas_to_move"] == len(founding.shards_of(gone))
            waited = await admin.wait_rebalanced(60.0)
            assert waited.ok, (waited, cluster.tails())
            assert gone not in waited.value["nodes"] and waited.value["leaving"] == []
        smap = await final_map([cluster.nodes[n].address for n in rest])
        assert [set(m) for m in smap.members] == [set(m) for m in target]
        assert not smap.shards_of(gone)
        for s in range(SHARDS):  # only the removed node's replicas moved
            assert set(founding.members[s]) - set(smap.members[s]) <= {gone}, s
        await cluster.wait_until(lambda st: gone in st and st[gone]["shards"] == {} and st[gone]["epoch"] == smap.epoch,
                                 20.0, f"{gone} to host no shard")
        live = [cluster.nodes[n].address for n in rest]
        await read_back(live, written)
        cluster.nodes[gone].kill9()  # the cluster no longer needs it
        more = {f"after{i}": i for i in range(16)}
        async with UkehiClient(live, timeout=10.0) as c:
            for key, value in more.items():
                assert (await c.put(key, value)).ok
        await read_back(live, {**written, **more})

    asyncio.run(scenario())


def test_a_restart_of_the_mover_mid_rebalance_still_converges(make_cluster):
    cluster = sharded5(make_cluster, max_moves=1)
    target = placement(FIVE + ["n6"], SHARDS, RF)

    async def scenario() -> None:
        await wait_ready(cluster, FIVE)
        written = await write_keys(cluster.addresses, 32)
        spare = cluster.add_spare("n6")
        spare.start()
        await cluster.wait_until(lambda st: "n6" in st, 20.0, "n6 to answer", ["n6"])
        # Writes go on through the rebalance and the restart; none acknowledged may be lost.
        acked: dict[str, int] = {}
        stop_writes = asyncio.Event()
        load = asyncio.create_task(writer(cluster.addresses[:5], [f"w{i}" for i in range(24)], acked, stop_writes))
        async with UkehiClient(cluster.addresses[:5], timeout=15.0) as admin:
            added = await admin.add_node("n6", spare.address)
            assert added.ok, (added, cluster.tails())
            # The first node seen running a rebalance move is killed, and started again.
            statuses = await cluster.wait_until(lambda st: any(s.get("moving") for s in st.values()),
                                                30.0, "a node running a rebalance move")
            mover = next(n for n, s in statuses.items() if s.get("moving"))
            cluster.nodes[mover].kill9()
            await asyncio.sleep(1.0)
            cluster.nodes[mover].start()
            stop, seen = asyncio.Event(), []
            sampler = asyncio.create_task(sample_moves(cluster, stop, seen))
            waited = await admin.wait_rebalanced(75.0)
            stop.set()
            await sampler
            assert waited.ok, (waited, cluster.tails())
            assert seen and max(seen) <= 1, seen  # --max-moves 1, across the restart too
        stop_writes.set()
        await load
        assert len(acked) == 24, acked
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for key, n in acked.items():
                r = await c.get(key)
                assert r.ok and r.value >= n, (key, n, r)  # writes of one key count up
        assert cluster.nodes[mover].starts == 2
        smap = await final_map(cluster.addresses)
        assert [set(m) for m in smap.members] == [set(m) for m in target]
        assert "rebalance-move" in cluster.nodes[mover].log_text()
        await read_back(cluster.addresses, written)

    asyncio.run(scenario())


def test_a_dead_node_is_removed_and_its_shards_get_their_replicas_back(make_cluster):
    # Replacing a failed machine: the moves off a node that is down need only the group's
    # other members (the joint change needs a majority of the old voters and of the new).
    cluster = sharded5(make_cluster)
    founding = ShardMap.initial(FIVE, SHARDS, RF)
    dead = next(n for n in FIVE if n not in meta_members(FIVE, RF))
    rest = [n for n in FIVE if n != dead]
    live = [cluster.nodes[n].address for n in rest]

    async def scenario() -> None:
        await wait_ready(cluster, FIVE)
        written = await write_keys(cluster.addresses, 32)
        cluster.nodes[dead].kill9()
        async with UkehiClient(live, timeout=15.0) as admin:
            r = await admin.remove_node(dead)
            assert r.ok and r.value["replicas_to_move"] == len(founding.shards_of(dead)), (r, cluster.tails())
            waited = await admin.wait_rebalanced(75.0)
            assert waited.ok, (waited, cluster.tails())
        smap = await final_map(live)
        assert [set(m) for m in smap.members] == [set(m) for m in placement(rest, SHARDS, RF)]
        assert dead not in smap.nodes
        await read_back(live, written)

    asyncio.run(scenario())


def test_a_sharded_join_needs_the_founders_flags(tmp_path):
    import argparse

    from ukehi.config import ConfigError
    from ukehi.nodecli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    founders = "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003"
    base = ["--id", "n4", "--listen", "127.0.0.1:7004", "--data-dir", str(tmp_path), "--insecure", "--join",
            "--shards", "8"]
    config = config_from_args(parser.parse_args([*base, "--peers", founders]))
    assert config.join and config.shards == 8 and config.replication_factor == 3 and "n4" not in config.peers
    # Listing itself among the peers, as for an unsharded --join, changes nothing for placement.
    listed = config_from_args(parser.parse_args([*base, "--peers", founders + ",n4=127.0.0.1:7004"]))
    assert listed.join and listed.replication_factor == 3
    with pytest.raises(ConfigError, match="needs at least 4 founding nodes in --peers; there are 3"):
        config_from_args(parser.parse_args([*base, "--peers", founders, "--replication-factor", "4"]))
