"""The metadata group's own membership on real processes (issue 15): a metadata member can be
removed (its replica of group 0 moves to another node by the shard-move steps first: learner,
catch-up, joint change), the map keeps changing afterwards, every node and client still finds
it, and a removed founder rejoins as a fresh ``--join`` node.

One scenario, in order, under a writer that runs through the removal:

1. ``remove_node`` of a bootstrap metadata member: the rebalance moves its shard replicas and
   its metadata replica (to the node the partitioner ranks first for the metadata group among
   those staying), then drops it; the map names the new metadata members (``meta``), the new
   member hosts group 0 (``group-0/``), the removed one hosts nothing and is killed;
2. the map still changes: the removed founder, started again fresh with ``--join`` (empty data
   directory, the founders' ``--peers``), is added back with ``add_node``, and the rebalance
   returns it the founders' placement of the shards;
3. no acknowledged write is lost, and a client that knows only a node that was never a
   metadata member reads everything.
"""

from __future__ import annotations

import asyncio
import os
import shutil

from ukehi.client import UkehiClient
from ukehi.shardmap import meta_members, placement

from test_shard_add_remove import final_map as settled_map
from test_shard_moves import writer

SHARDS, RF = 8, 3
FIVE = [f"n{i}" for i in range(1, 6)]


async def wait_led(cluster, ids, timeout: float = 45.0) -> None:
    def led(statuses: dict) -> bool:
        leaders = {int(s) for st in statuses.values() for s, g in (st.get("shards") or {}).items()
                   if g["role"] == "leader"}
        return set(ids) <= set(statuses) and leaders == set(range(SHARDS))

    await cluster.wait_until(led, timeout, "a leader in every shard", ids)


def test_a_metadata_member_is_removed_and_rejoins_fresh_and_the_map_keeps_changing(make_cluster):
    cluster = make_cluster(5, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF)])
    cluster.start()
    boot = meta_members(FIVE, RF)
    gone = boot[0]
    rest = [n for n in FIVE if n != gone]
    newcomer = next(n for n in meta_members(rest, len(rest)) if n not in boot)
    outsider = next(n for n in rest if n not in boot and n != newcomer)  # never a metadata member

    async def scenario() -> None:
        await wait_led(cluster, FIVE)
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        keys = [f"w{i}" for i in range(40)]
        load = asyncio.create_task(writer([cluster.nodes[n].address for n in rest], keys, acked, stop))
        try:
            await asyncio.sleep(0.5)
            async with UkehiClient(cluster.addresses, timeout=15.0) as admin:
                r = await admin.remove_node(gone)
                assert r.ok, (r, cluster.tails())
                waited = await admin.wait_rebalanced(90.0)
                assert waited.ok, (waited, cluster.tails())
                assert gone not in waited.value["nodes"], waited
        finally:
            stop.set()
            await load
        live = [cluster.nodes[n].address for n in rest]
        smap = await settled_map(live)
        # The metadata replica moved before the node left: the map names the group's members.
        assert gone not in smap.nodes and not smap.shards_of(gone)
        assert set(smap.metadata_members) == (set(boot) - {gone}) | {newcomer}, smap.metadata_members
        assert smap.meta and not smap.meta_move
        assert [set(m) for m in smap.members] == [set(m) for m in placement(rest, SHARDS, RF)]
        statuses = await cluster.wait_until(
            lambda st: all(n in st and st[n]["epoch"] >= smap.epoch for n in [*rest, gone])
            and st[newcomer]["metadata"] is not None and st[gone]["metadata"] is None and st[gone]["shards"] == {},
            20.0, f"{newcomer} to host the metadata group and {gone} nothing")
        for n in rest:
            assert set(statuses[n]["metadata_members"]) == set(smap.metadata_members), (n, statuses[n])
        assert os.path.isdir(os.path.join(cluster.nodes[newcomer].data_dir, "group-0"))
        assert statuses[newcomer]["metadata"]["members"], statuses[newcomer]["metadata"]
        assert set(statuses[newcomer]["metadata"]["members"]) == set(smap.metadata_members)
        cluster.nodes[gone].kill9()

        # The removed founder comes back fresh, as a --join node with the founders' --peers
        # (itself among them), at its old address, and is added again: the map changes
        # again through the moved metadata group.
        old = cluster.nodes[gone]
        shutil.rmtree(os.path.join(cluster.base_dir, gone))
        again = cluster._make(gone, old.port, cluster.peers_arg, join=True)
        cluster.nodes[gone] = again
        again.start()
        await cluster.wait_until(lambda st: gone in st, 20.0, f"{gone} to answer", [gone])
        async with UkehiClient(live, timeout=15.0) as admin:
            added = await admin.add_node(gone, again.address)
            assert added.ok, (added, cluster.tails())
            waited = await admin.wait_rebalanced(90.0)
            assert waited.ok, (waited, cluster.tails())
        final = await settled_map(live)
        assert final.epoch > smap.epoch and gone in final.nodes
        assert [set(m) for m in final.members] == [set(m) for m in placement(FIVE, SHARDS, RF)]
        await cluster.wait_until(
            lambda st: gone in st and st[gone]["epoch"] >= final.epoch
            and {int(s) for s in st[gone]["shards"]} == set(final.shards_of(gone))
            and all(g["member"] for g in st[gone]["shards"].values()),
            30.0, f"{gone} to host its shards again")

        # No acknowledged write lost; a client that knows only a node outside the metadata
        # group (never a member) reads every key.
        assert len(acked) > 10, acked
        async with UkehiClient([cluster.nodes[outsider].address], timeout=10.0) as c:
            for key, value in acked.items():
                got = await c.get(key)
                assert got.ok and got.value >= value, (key, value, got)
            assert (await c.put("after", 1)).ok
        async with UkehiClient([again.address], timeout=10.0) as c:
            assert (await c.get("after")).value == 1

    asyncio.run(scenario())


def test_the_metadata_leader_killed_mid_metadata_move_is_repaired_and_the_removal_finishes(make_cluster):
    """kill -9 of the metadata group's leader while it moves a leaving member's metadata replica
    (its target down, so the move waits in catch-up): a new leader of the group undoes the
    move from the map alone (learner removed, record cleared), and once everyone is back the
    removal finishes, the map naming the group's voters; no acknowledged write lost."""
    cluster = make_cluster(5, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF)], tls=False)
    cluster.start()
    boot = meta_members(FIVE, RF)
    gone = boot[0]
    rest = [n for n in FIVE if n != gone]
    newcomer = next(n for n in meta_members(rest, len(rest)) if n not in boot)

    async def scenario() -> None:
        await wait_led(cluster, FIVE)
        statuses = await cluster.statuses()
        lead = next(n for n, st in statuses.items() if (st.get("metadata") or {}).get("role") == "leader")
        if lead == gone:  # the mover must not be the leaving member (that one hands leadership on)
            async with UkehiClient([cluster.nodes[gone].address], timeout=10.0) as admin:
                assert (await admin.transfer_leader(boot[1])).ok
            lead = boot[1]
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        keys = [f"w{i}" for i in range(20)]
        writers = [cluster.nodes[n].address for n in rest if n not in (lead, newcomer)]
        load = asyncio.create_task(writer(writers, keys, acked, stop))
        cluster.nodes[newcomer].kill9()
        up = [n for n in FIVE if n != newcomer]
        try:
            async with UkehiClient([cluster.nodes[n].address for n in up], timeout=15.0) as admin:
                assert (await admin.remove_node(gone)).ok
            await cluster.wait_until(
                lambda st: (st.get(lead, {}).get("moving") or {}).get("-1", {}).get("step") == "catch-up",
                20.0, "the metadata move waiting for its learner", up)
            cluster.nodes[lead].kill9()
            survivors = [n for n in up if n != lead]
            # The group's next leader undoes it from the map: no move recorded, no learner.
            await cluster.wait_until(
                lambda st: any((s.get("metadata") or {}).get("role") == "leader"
                               and not s["metadata"].get("learners") and not s.get("metadata_move")
                               for s in st.values()),
                30.0, "the interrupted metadata move undone", survivors)
            assert any("event=meta-reconcile" in cluster.nodes[n].log_text() for n in survivors)
            cluster.nodes[lead].start()
            cluster.nodes[newcomer].start()
            async with UkehiClient(cluster.addresses, timeout=15.0) as admin:
                waited = await admin.wait_rebalanced(90.0)
                assert waited.ok, (waited, cluster.tails())
        finally:
            stop.set()
            await load
        smap = await settled_map([cluster.nodes[n].address for n in rest])
        assert gone not in smap.nodes and set(smap.metadata_members) == (set(boot) - {gone}) | {newcomer}
        st = await cluster.wait_until(
            lambda st: newcomer in st and (st[newcomer].get("metadata") or {}).get("members")
            and set(st[newcomer]["metadata"]["members"]) == set(smap.metadata_members)
            and not st[newcomer]["metadata"].get("learners")
            # it applies the settled map a moment after its group's membership (seen in CI:
            # epoch 24 against the settled 25), so wait for that too rather than race it
            and int(st[newcomer].get("epoch") or 0) >= smap.epoch,
            20.0, "the metadata group's voters to be the map's, at the settled map's epoch", [newcomer])
        assert st[newcomer]["epoch"] >= smap.epoch
        assert len(acked) > 5, acked
        async with UkehiClient([cluster.nodes[n].address for n in rest], timeout=10.0) as c:
            for key, value in acked.items():
                got = await c.get(key)
                assert got.ok and got.value >= value, (key, value, got)

    asyncio.run(scenario())
