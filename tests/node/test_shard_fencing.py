"""Fencing on a sharded cluster (issue 15): "fencing tokens stay per group, and a fenced write
checks both" the token and the shard map epoch.

The fencing workload names a key's lock with the key as its hash tag (``lock/{fenced/0}``,
``ukehi.shardmap.hash_tag``), so the lock and the key are in one shard: the Raft group that
mints a token (the lock's acquire entry) is the one whose state machine judges the fenced
writes made with it. On real processes:

- the node itself places the lock in the key's group (a frame naming that group is served for
  both, one naming another group is refused), and a fenced write with a stale token is
  refused by that group, also after the shard's replica moved to another node (the key's
  fence moved with the group's log);
- a fenced write routed by the map from before the move, sent to the node the move took the
  shard from, is refused with ``wrong_shard`` and the newer epoch, and nothing is written;
  under the planted ``no-epoch-check`` the former owner acknowledges it instead.
"""

from __future__ import annotations

import asyncio

import pytest

from ukehi import wire
from ukehi.client import UkehiClient
from ukehi.shardmap import ShardMap, group_of
from workloads.fencing import key_name, lock_name

from test_shard_move_bugs import cluster_with
from test_shard_moves import RF, SHARDS, leader_of, wait_all_shards_led

TTL_MS = 300


async def raw(cluster, node: str, msg_type: wire.MsgType, body: dict, *, group: int, epoch: int) -> wire.Frame:
    """One request frame to `node`, naming `group` and routed by map `epoch`; its answer."""
    reader, w = await cluster.open_connection(cluster.nodes[node].port)
    try:
        await wire.write_frame(w, msg_type, 1, body, group=group, epoch=epoch)
        return await asyncio.wait_for(wire.read_frame(reader), 10.0)
    finally:
        w.close()


def fencing_key(smap: ShardMap, cluster) -> tuple[int, int]:
    """A workload key (and its shard) whose shard does not include every node, so a node outside
    it can take a replica."""
    return next((k, smap.shard_for(key_name(k))) for k in range(100)
                if len(smap.members[smap.shard_for(key_name(k))]) < len(cluster.nodes))


@pytest.mark.parametrize("bug", [None, "no-epoch-check"])
def test_a_fenced_write_is_judged_by_the_lock_group_and_refused_on_a_stale_token_or_epoch(make_cluster, bug):
    cluster = cluster_with(make_cluster, bug)

    async def scenario() -> None:
        smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
        k, shard = fencing_key(smap, cluster)
        key, lock = key_name(k), lock_name(k)
        assert smap.shard_for(lock) == shard  # by the hash tag alone
        gid = group_of(shard)
        statuses = await wait_all_shards_led(cluster)
        leader = leader_of(statuses, shard)

        # The node places the lock in the key's group: a frame naming that group is served,
        # one naming another shard's group is refused before anything is done.
        acq = await raw(cluster, leader, wire.MsgType.ACQUIRE, {"lock": lock, "owner": "a", "ttl_ms": TTL_MS},
                        group=gid, epoch=1)
        assert acq.type is wire.MsgType.OK, acq
        first = int(acq.body["value"])
        other = group_of((shard + 1) % SHARDS)
        elsewhere = await raw(cluster, leader, wire.MsgType.ACQUIRE,
                              {"lock": lock, "owner": "z", "ttl_ms": TTL_MS}, group=other, epoch=1)
        assert elsewhere.type is wire.MsgType.ERROR and elsewhere.body["code"] == "wrong_shard", elsewhere
        put = await raw(cluster, leader, wire.MsgType.FENCED_PUT, {"key": key, "value": "a1", "token": first},
                        group=gid, epoch=1)
        assert put.type is wire.MsgType.OK, put

        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            # The lease runs out; another owner takes the lock and writes with its newer token.
            await asyncio.sleep(TTL_MS / 1000 + 0.2)
            second = await c.acquire(lock, "b", TTL_MS)
            assert second.ok and int(second.value) > first, second
            assert (await c.fenced_put(key, "b1", int(second.value))).ok
            # The deposed holder's write with its old token: refused by the key's group.
            stale = await c.fenced_put(key, "a2", first)
            assert not stale.ok and stale.error == "refused", stale
            assert (await c.get(key)).value == "b1"

            # Move a replica of the shard off a node that does not lead it.
            src = next(n for n in smap.members[shard] if n != leader)
            dst = next(n for n in cluster.nodes if n not in smap.members[shard])
            moved = await c.move_replica(shard, src, dst)
            assert moved.ok, (moved, cluster.tails())
            epoch = moved.value["epoch"]
            await cluster.wait_until(lambda st: src in st and st[src]["epoch"] >= epoch
                                     and str(shard) not in st[src]["shards"],
                                     15.0, f"{src} at epoch {epoch} without shard {shard}")

            # A fenced write with the current token, routed by the epoch-1 map, to the node
            # the move took the shard from: refused with the newer epoch, nothing written.
            fresh = int(second.value)
            old_route = await raw(cluster, src, wire.MsgType.FENCED_PUT,
                                  {"key": key, "value": "via-old-owner", "token": fresh}, group=gid, epoch=1)
            # The stale token, after the move, through the cluster: still refused (the
            # fence is in the group's log and moved with it).
            stale_after = await c.fenced_put(key, "a3", first)
            value_after = (await c.get(key)).value
        assert not stale_after.ok and stale_after.error == "refused", stale_after
        if bug is None:
            assert old_route.type is wire.MsgType.ERROR and old_route.body["code"] == "wrong_shard", old_route
            assert old_route.body["epoch"] >= epoch, old_route
            assert value_after == "b1"
        else:
            # The planted bug: the former owner's leftover copy acknowledges it, and the
            # shard's group never sees it.
            assert old_route.type is wire.MsgType.OK, old_route
            assert value_after == "b1"

    asyncio.run(scenario())
