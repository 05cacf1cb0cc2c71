"""Sharded Ukehi on real processes (issue 15): one node process hosts every Raft group it is a
member of, clients route by key, and a node that does not own a key's shard refuses it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest

from ukehi import wire
from ukehi.client import UkehiClient
from ukehi.config import ConfigError, build_config
from ukehi.shardmap import ShardMap, group_of, meta_members

SHARDS, RF = 6, 3


def sharded(make_cluster, size: int, shards: int = SHARDS, rf: int = RF, **kwargs):
    cluster = make_cluster(size, extra_args=["--shards", str(shards), "--replication-factor", str(rf)], **kwargs)
    cluster.start()
    return cluster


def expected_map(cluster, shards: int = SHARDS, rf: int = RF) -> ShardMap:
    return ShardMap.initial(cluster.nodes, shards, rf)


async def wait_all_shards_led(cluster, shards: int = SHARDS, timeout: float = 30.0) -> dict:
    def led(statuses: dict) -> bool:
        leaders = {int(s) for st in statuses.values() for s, g in (st.get("shards") or {}).items()
                   if g["role"] == "leader"}
        return len(statuses) == len(cluster.nodes) and leaders == set(range(shards))

    return await cluster.wait_until(led, timeout, "a leader in every shard")


def keys_off(node: str, smap: ShardMap, count: int = 1) -> list[str]:
    """Keys whose shard `node` is not a member of."""
    out = []
    i = 0
    while len(out) < count:
        key = f"k{i}"
        if node not in smap.owners(key):
            out.append(key)
        i += 1
    return out


def test_each_node_hosts_its_shards_groups_and_every_key_survives_a_restart(make_cluster):
    cluster = sharded(make_cluster, 4)
    smap = expected_map(cluster)

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        for nid, st in statuses.items():
            # Placement is the partitioner's, computed alike on every node, at epoch 1.
            assert st["sharded"] is True and st["epoch"] == 1 and st["shard_count"] == SHARDS
            assert {int(s) for s in st["shards"]} == set(smap.shards_of(nid))
            for s, g in st["shards"].items():
                assert g["group"] == group_of(int(s)) and sorted(g["members"]) == sorted(smap.members[int(s)])
            # One data directory per hosted group; group 0 only on the metadata group's members.
            groups = sorted(d for d in os.listdir(cluster.nodes[nid].data_dir) if d.startswith("group-"))
            meta = ["group-0"] if nid in meta_members(cluster.nodes, RF) else []
            assert groups == sorted([f"group-{group_of(s)}" for s in smap.shards_of(nid)] + meta)
            assert st["metadata_members"] == list(meta_members(cluster.nodes, RF))
        # The metadata group committed the map, and each of its members found it is its own.
        meta = set(meta_members(cluster.nodes, RF))
        statuses = await cluster.wait_until(
            lambda st: len(st) == 4 and all(st[n]["shard_map_committed"] for n in meta), 30.0, "the map committed")
        assert {n for n, st in statuses.items() if st["metadata"] is not None} == meta
        assert not any(st["shard_map_committed"] for n, st in statuses.items() if n not in meta)
        written = {f"key-{i}": f"value-{i}" for i in range(40)}
        # A client that knows one node only: it learns the map from the first wrong_shard.
        async with UkehiClient([cluster.nodes["n1"].address], timeout=10.0) as c:
            for key, value in written.items():
                r = await c.put(key, value)
                assert r.ok, (key, r)
            assert c.shard_map is not None and c.shard_map.epoch == 1 and c.shard_map.members == smap.members
        touched = {smap.shard_for(k) for k in written}
        assert len(touched) == SHARDS  # 40 keys reach every one of 6 shards
        # Each write went to its own shard's group: the groups' applied indexes add up.
        statuses = await cluster.statuses()
        leaders_applied = {int(s): g["applied_index"] for st in statuses.values()
                           for s, g in st["shards"].items() if g["role"] == "leader"}
        for shard in range(SHARDS):
            in_shard = sum(1 for k in written if smap.shard_for(k) == shard)
            assert leaders_applied[shard] >= in_shard + 1, (shard, leaders_applied)  # + the leader's no-op
    asyncio.run(scenario())
    for node in cluster.nodes.values():
        node.kill9()
    cluster.start()

    async def after_restart() -> None:
        await wait_all_shards_led(cluster)
        async with UkehiClient([cluster.nodes["n4"].address], timeout=10.0) as c:
            for i in range(40):
                r = await c.get(f"key-{i}")
                assert r.ok and r.value == f"value-{i}", (i, r)
            absent = await c.get("never-written")
            assert absent.ok and absent.value is None
    asyncio.run(after_restart())
    log = cluster.nodes["n1"].log_text()
    assert "event=group-starting" in log and f"shards={SHARDS}" in log


async def _raw_request(cluster, nid: str, msg_type: wire.MsgType, body: dict, *, group: int = 0,
                       epoch: int = 0) -> wire.Frame:
    reader, writer = await cluster.open_connection(cluster.nodes[nid].port)
    try:
        await wire.write_frame(writer, msg_type, 7, body, group=group, epoch=epoch)
        frame = await asyncio.wait_for(wire.read_frame(reader), 10.0)
        assert frame is not None
        return frame
    finally:
        writer.close()


def test_a_non_owner_refuses_with_its_epoch_and_the_client_recovers(make_cluster):
    cluster = sharded(make_cluster, 4, tls=False)
    smap = expected_map(cluster)
    key = keys_off("n1", smap)[0]
    shard = smap.shard_for(key)

    async def scenario() -> None:
        await wait_all_shards_led(cluster)
        # A request to a node that is not in the key's shard: refused, nothing done, the
        # node's epoch and the shard's members in the answer.
        frame = await _raw_request(cluster, "n1", wire.MsgType.PUT, {"key": key, "value": "x"})
        assert frame.type is wire.MsgType.ERROR and frame.body["code"] == "wrong_shard"
        assert frame.body["epoch"] == 1
        assert ",".join(smap.members[shard]) in frame.body["message"]
        # A request routed by a newer map than the node's (even to an owner): refused too.
        owner = smap.members[shard][0]
        frame = await _raw_request(cluster, owner, wire.MsgType.GET, {"key": key}, group=group_of(shard), epoch=2)
        assert frame.body["code"] == "wrong_shard" and frame.body["epoch"] == 1
        # Routed to the wrong group by its own map: refused.
        other = (shard + 1) % SHARDS
        frame = await _raw_request(cluster, owner, wire.MsgType.GET, {"key": key}, group=group_of(other), epoch=1)
        assert frame.body["code"] == "wrong_shard"
        # The map itself, with every member's address.
        frame = await _raw_request(cluster, "n1", wire.MsgType.SHARD_MAP, {})
        assert ShardMap.from_dict(frame.body["value"]["map"]) == smap
        assert frame.body["value"]["addresses"] == {n: p.address for n, p in cluster.nodes.items()}
        # A transaction across shards is refused as a bad request (nothing done).
        other_key = next(k for k in (f"t{i}" for i in range(100)) if smap.shard_for(k) != shard)
        async with UkehiClient([cluster.nodes[owner].address], timeout=5.0) as c:
            r = await c.txn([["w", key, 1], ["w", other_key, 2]])
            assert r.failed and r.error == "bad_request" and "across shards" in r.message
        # The client pinned to n1 alone recovers: the wrong_shard answer makes it fetch the
        # map, and the write lands in the key's shard.
        async with UkehiClient([cluster.nodes["n1"].address], timeout=10.0, pinned=True) as c:
            assert c.shard_map is None
            r = await c.put(key, "v1")
            assert r.ok, r
            assert c.shard_map is not None and c.shard_map.epoch == 1
            assert r.node in {cluster.nodes[m].address for m in smap.members[shard]}
            r = await c.get(key)
            assert r.ok and r.value == "v1"
            # Locks route by their name.
            lock = keys_off("n1", smap)[0]
            r = await c.acquire(lock, "me", 5000)
            assert r.ok and isinstance(r.value, int)
    asyncio.run(scenario())


def test_an_unsharded_node_has_no_map_and_refuses_shard_routing(make_cluster):
    cluster = make_cluster(1, tls=False)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_for_leader()
        frame = await _raw_request(cluster, "n1", wire.MsgType.SHARD_MAP, {})
        assert frame.body["value"] == {"map": None, "addresses": {}}
        frame = await _raw_request(cluster, "n1", wire.MsgType.PUT, {"key": "a", "value": 1}, group=3, epoch=1)
        assert frame.body["code"] == "wrong_shard" and frame.body["epoch"] == 0
        async with cluster.client() as c:
            assert (await c.put("a", 1)).ok and c.shard_map is None
            r = await c.get("a")
            assert r.ok and r.value == 1
        st = (await cluster.statuses())["n1"]
        assert "shards" not in st and st["role"] == "leader"
        assert os.listdir(cluster.nodes["n1"].data_dir) == ["group-0"]
    asyncio.run(scenario())


@pytest.mark.parametrize("settings, message", [
    ({"replication_factor": 2}, "only applies to a sharded cluster"),
    ({"shards": 4, "replication_factor": 4}, "needs at least 4 founding nodes"),
    ({"shards": 0}, "--shards must be a whole number >= 1"),
    ({"shards": 5000}, "at most 4096"),
    ({"shards": 4, "join": True, "node_id": "n4", "listen": "127.0.0.1:4", "replication_factor": 4},
     "needs at least 4 founding nodes in --peers; there are 3: give the cluster's --peers"),
])
def test_bad_shard_settings_say_what_to_fix(settings, message, tmp_path):
    base = {"node_id": "n1", "peers": "n1=127.0.0.1:1,n2=127.0.0.1:2,n3=127.0.0.1:3",
            "data_dir": str(tmp_path), "insecure": True}
    with pytest.raises(ConfigError, match=message):
        build_config({**base, **settings})


def test_default_replication_factor_is_three_or_the_founders(tmp_path):
    base = {"node_id": "n1", "data_dir": str(tmp_path), "insecure": True, "shards": 4}
    two = build_config({**base, "peers": "n1=127.0.0.1:1,n2=127.0.0.1:2"})
    five = build_config({**base, "peers": ",".join(f"n{i}=127.0.0.1:{i}" for i in range(1, 6))})
    assert (two.replication_factor, five.replication_factor) == (2, 3)
    assert build_config({**base, "shards": None, "peers": "n1=127.0.0.1:1"}).shards is None


def test_node_cli_refuses_a_bad_replication_factor_with_exit_254(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ukehi.cli", "node", "--id", "n1", "--peers", "n1=127.0.0.1:7001",
         "--data-dir", str(tmp_path), "--insecure", "--shards", "4", "--replication-factor", "3"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 254
    assert "--replication-factor 3 needs at least 3 founding nodes" in proc.stderr


def _wal_entries(group_dir: str) -> list[dict]:
    from cluster import REPO

    out = subprocess.run([sys.executable, "-m", "ukehi.cli", "wal", "dump", os.path.join(group_dir, "wal")],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"segment"')]


def test_a_clean_stop_exits_0_and_a_refused_group_stops_the_whole_node(make_cluster):
    cluster = sharded(make_cluster, 3, shards=2, rf=3, tls=False)
    smap = expected_map(cluster, 2, 3)
    keys = [k for k in (f"key-{i}" for i in range(200)) if smap.shard_for(k) == 0][:30]

    async def fill() -> None:
        await wait_all_shards_led(cluster, 2)
        async with cluster.client(timeout=10.0) as c:
            for k in keys:
                assert (await c.put(k, k.upper())).ok
    asyncio.run(fill())
    codes = {nid: node.terminate() for nid, node in cluster.nodes.items()}
    assert codes == {"n1": 0, "n2": 0, "n3": 0}, codes
    # Damage one entry of shard 0's WAL (group 1) on n1; its other group is intact.
    n1 = cluster.nodes["n1"]
    group_dir = os.path.join(n1.data_dir, f"group-{group_of(0)}")
    entries = _wal_entries(group_dir)
    assert len(entries) > 10, entries
    victim = entries[len(entries) // 2]
    with open(os.path.join(group_dir, "wal", victim["segment"]), "r+b") as f:
        f.seek(victim["offset"] + 4 + 8 + 8 + 4 + 1)  # inside the entry's command bytes
        byte = f.read(1)
        f.seek(victim["offset"] + 4 + 8 + 8 + 4 + 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    plain_args = list(n1.args)
    n1.args = plain_args + ["--corruption-policy", "refuse-start"]
    n1.start()
    assert n1.wait_exit(60) == 4  # RefuseStart in one group stops the node with its code
    refused = [line for line in n1.log_text().splitlines() if "event=refuse-start" in line]
    assert refused and f"group={group_of(0)}" in refused[-1], n1.log_text()[-3000:]
    # The default policy cuts the damaged tail; the others bring n1's group back, no key lost.
    n1.args = plain_args
    cluster.start()

    async def check() -> None:
        await wait_all_shards_led(cluster, 2)
        async with cluster.client(timeout=10.0) as c:
            for k in keys:
                r = await c.get(k)
                assert r.ok and r.value == k.upper(), (k, r)
    asyncio.run(check())
    assert "event=corruption-report" in n1.log_text()


def test_a_client_with_a_stale_map_refreshes_it_when_the_cluster_was_remade(make_cluster):
    """The cluster is made again with another shard count at the same addresses: the client's
    cached map routes keys to groups the nodes no longer use, they answer wrong_shard, and
    the client fetches the new map and carries on."""
    cluster = sharded(make_cluster, 3, shards=6, rf=2, tls=False)

    async def scenario() -> None:
        await wait_all_shards_led(cluster, 6)
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i in range(12):
                assert (await c.put(f"a{i}", i)).ok
            assert c.shard_map is not None and c.shard_map.shards == 6
            # Its connections end with the old cluster (a write on one the kill cut would be
            # unknown, not the point here); the map it cached stays.
            await c.close()
            for node in cluster.nodes.values():
                node.kill9()
                shutil.rmtree(node.data_dir)
                os.makedirs(node.data_dir)
                node.args[node.args.index("--shards") + 1] = "4"
            cluster.start()
            await wait_all_shards_led(cluster, 4)
            new = expected_map(cluster, 4, 2)
            # With 6 shards cached, some key's group differs under 4 shards: pick such a key.
            key = next(k for k in (f"b{i}" for i in range(100))
                       if group_of(c.shard_map.shard_for(k)) != group_of(new.shard_for(k)))
            r = await c.put(key, "after")
            assert r.ok, r
            assert c.shard_map is not None and c.shard_map.shards == 4 and c.shard_map.members == new.members
            r = await c.get(key)
            assert r.ok and r.value == "after"
    asyncio.run(scenario())


def test_a_metadata_member_started_with_another_shard_count_stops_with_254(make_cluster):
    cluster = sharded(make_cluster, 3, shards=4, rf=3, tls=False)  # every node is in the metadata group

    async def committed() -> None:
        await cluster.wait_until(lambda st: len(st) == 3 and all(s["shard_map_committed"] for s in st.values()),
                                 30.0, "the map committed on every node")
    asyncio.run(committed())
    n1 = cluster.nodes["n1"]
    assert n1.terminate() == 0
    n1.args[n1.args.index("--shards") + 1] = "8"
    n1.start()
    assert n1.wait_exit(60) == 254
    mismatch = [line for line in n1.log_text().splitlines() if "event=shard-map-mismatch" in line]
    assert mismatch and "4 shards" in mismatch[-1] and "(8 shards" in mismatch[-1], n1.log_text()[-2000:]
    # Restarted with the cluster's settings it serves again.
    n1.args[n1.args.index("--shards") + 1] = "4"
    n1.start()
    asyncio.run(committed())


def test_admin_verbs_name_a_shard_and_ukehi_kv_passes_it(make_cluster):
    cluster = sharded(make_cluster, 3, shards=2, rf=3, tls=False)
    smap = expected_map(cluster, 2, 3)

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster, 2)
        leader0 = next(n for n, st in statuses.items() if st["shards"]["0"]["role"] == "leader")
        target = next(n for n in smap.members[0] if n != leader0)
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            r = await c.transfer_leader(target, shard=0)
            assert r.ok and r.value == {"leader": target}, r
            r = await c.snapshot(shard=1)
            assert r.ok and isinstance(r.value, int), r
            r = await c.snapshot(shard=2)
            assert r.failed and r.error == "invalid_argument" and "shards 0 .. 1" in r.message
            # Without a shard: group 0, the metadata group (every node is a member here).
            r = await c.snapshot()
            assert r.ok and isinstance(r.value, int), r
        statuses = await cluster.statuses()
        assert statuses[target]["shards"]["0"]["role"] == "leader"
    asyncio.run(scenario())
    done = subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", "transfer-leader", follower_of_shard(cluster, 1),
                           "--shard", "1", "--cluster", ",".join(cluster.addresses)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "UKEHI_TLS_DIR": ""})
    assert done.returncode == 0, done.stdout + done.stderr


def follower_of_shard(cluster, shard: int) -> str:
    """A member of `shard` that is not its leader now (the transfer target)."""
    statuses = asyncio.run(cluster.statuses())
    hosts = [n for n, st in statuses.items() if str(shard) in st["shards"]]
    leader = next(n for n in hosts if statuses[n]["shards"][str(shard)]["role"] == "leader")
    return next(n for n in hosts if n != leader)


def test_a_shard_on_an_unsharded_cluster_is_refused_before_anything_is_sent(make_cluster):
    cluster = make_cluster(1, tls=False)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with cluster.client() as c:
            r = await c.transfer_leader(shard=0)
            assert r.failed and r.error == "invalid_argument" and "not sharded" in r.message
    asyncio.run(scenario())
