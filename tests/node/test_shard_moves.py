"""Shard replica moves on real processes (issue 15): the map changes through the metadata group
(a compare-and-set from epoch E to E + 1), one replica of a shard moves as Raft membership
changes inside the shard's group, and restarts in the middle leave the map consistent with the
group."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from ukehi import wire
from ukehi.client import UkehiClient
from ukehi.shardmap import ShardMap, group_of, meta_members

SHARDS, RF = 4, 3


def sharded(make_cluster, size: int = 4, **kwargs):
    cluster = make_cluster(size, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF)], **kwargs)
    cluster.start()
    return cluster


async def wait_all_shards_led(cluster, ids=None, timeout: float = 30.0) -> dict:
    ids = list(ids or cluster.nodes)

    def led(statuses: dict) -> bool:
        leaders = {int(s) for st in statuses.values() for s, g in (st.get("shards") or {}).items()
                   if g["role"] == "leader"}
        return set(ids) <= set(statuses) and leaders == set(range(SHARDS))

    return await cluster.wait_until(led, timeout, "a leader in every shard", ids)


def kv_cli(*args: str) -> subprocess.CompletedProcess:
    from cluster import REPO

    return subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", *args], capture_output=True, text=True,
                          timeout=90, cwd=REPO, env={**os.environ, "UKEHI_TLS_DIR": ""})


def keys_in(smap: ShardMap, shard: int, count: int, prefix: str = "k") -> list[str]:
    out, i = [], 0
    while len(out) < count:
        key = f"{prefix}{i}"
        if smap.shard_for(key) == shard:
            out.append(key)
        i += 1
    return out


def leader_of(statuses: dict, shard: int) -> str:
    best = max(((g["term"], n) for n, st in statuses.items() for s, g in (st.get("shards") or {}).items()
                if int(s) == shard and g["role"] == "leader"), default=None)
    assert best is not None, f"no leader of shard {shard}"
    return best[1]


async def writer(addresses, keys: list[str], acked: dict[str, int], stop: asyncio.Event) -> None:
    """Writes key i -> n (n counting up) until stopped, at most 3,000 writes; records acks."""
    async with UkehiClient(addresses, timeout=5.0, connect_timeout=0.3) as c:
        for n in range(3000):
            if stop.is_set():
                break
            key = keys[n % len(keys)]
            r = await c.put(key, n)
            if r.ok:
                acked[key] = n
            await asyncio.sleep(0.01)


def test_a_replica_moves_under_load_and_the_client_follows_the_new_map(make_cluster):
    cluster = sharded(make_cluster)
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    shard = 1
    members = smap.members[shard]
    dst = next(n for n in cluster.nodes if n not in members)

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        src = leader_of(statuses, shard)  # the hardest case: the leader itself moves away
        keys = keys_in(smap, shard, 8)
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        load = asyncio.create_task(writer(cluster.addresses, keys, acked, stop))
        # A client that learned the map (epoch 1) before the move, from a node not in the shard.
        old = UkehiClient([cluster.nodes[dst].address], timeout=10.0, pinned=True)
        r = await old.put(keys[0], -1)
        assert r.ok and old.shard_map is not None and old.shard_map.epoch == 1, r
        async with UkehiClient(cluster.addresses, timeout=10.0) as admin:
            while len(acked) < len(keys):  # the writer is going before the move starts
                await asyncio.sleep(0.05)
            before = len(acked) and max(acked.values())
            # Two moves of one shard at once: one runs, the other is refused (one per shard).
            first, second = await asyncio.gather(admin.move_replica(shard, src, dst),
                                                 admin.move_replica(shard, src, dst))
            results = sorted([first, second], key=lambda r: not r.ok)
            assert results[0].ok, (first, second, cluster.tails())
            assert results[1].failed and results[1].error in ("cas_failed", "bad_request"), results[1]
            moved = results[0].value
            assert moved["shard"] == shard and dst in moved["members"] and src not in moved["members"]
            assert sorted(moved["members"]) == sorted([n for n in members if n != src] + [dst])
            # The move was recorded (epoch 2), then finished (epoch 3): one compare-and-set each.
            assert moved["epoch"] == 3, moved
            # A write made after the move lands under the new map.
            deadline = asyncio.get_running_loop().time() + 15
            while max(acked.values()) <= before + 20 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
        # Every node learns the new map; the target serves the shard, the source hosts it no more.
        final = await cluster.wait_until(
            lambda st: len(st) == 4 and all(s["epoch"] == 3 and not s["moves"] for s in st.values())
            and str(shard) in st[dst]["shards"] and str(shard) not in st[src]["shards"],
            20.0, "every node at epoch 3 with the shard moved")
        assert final[dst]["shards"][str(shard)]["member"] is True
        assert sorted(final[dst]["shards"][str(shard)]["members"]) == sorted(moved["members"])
        for nid in moved["members"]:
            assert str(shard) in final[nid]["shards"]
        stop.set()
        await load
        assert max(acked.values()) > before + 20, "no write succeeded after the move"
        # The client with the epoch-1 map goes to the shard's old leader, the moved-away node,
        # which refuses with epoch 3; the client takes the new map and writes to a member.
        r = await old.put(keys[1], 10_000)
        assert r.ok, r
        assert old.shard_map.epoch == 3 and old.shard_map.members[shard] == tuple(moved["members"])
        assert r.node in {cluster.nodes[n].address for n in moved["members"]}
        await old.close()
        acked[keys[1]] = 10_000
        # The source refuses the shard now, naming the new epoch; nothing was done.
        reader, w = await cluster.open_connection(cluster.nodes[src].port)
        try:
            await wire.write_frame(w, wire.MsgType.GET, 1, {"key": keys[0]}, group=group_of(shard), epoch=1)
            frame = await asyncio.wait_for(wire.read_frame(reader), 10.0)
        finally:
            w.close()
        assert frame.body["code"] == "wrong_shard" and frame.body["epoch"] == 3, frame
        # No acknowledged write lost: each key holds its last acknowledged value or a later one.
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for key, n in acked.items():
                r = await c.get(key)
                assert r.ok and isinstance(r.value, int) and r.value >= n, (key, n, r)
        # The target keeps the map on disk (a restart hosts the shard before asking anyone).
        with open(os.path.join(cluster.nodes[dst].data_dir, "shardmap.json")) as f:
            saved = ShardMap.from_dict(json.load(f))
        assert saved.epoch == 3 and dst in saved.members[shard]
    asyncio.run(scenario())
    log = cluster.nodes[dst].log_text()
    hosted = [line for line in log.splitlines() if "event=group-hosted" in line]
    assert hosted and "join=true" in hosted[0] and f"group={group_of(shard)}" in hosted[0], hosted


def test_a_move_waits_for_a_target_that_was_down_and_restarts_keep_the_map(make_cluster):
    """The target is down when the move starts: the move is recorded, the learner added, and
    when the target comes up it reads the map, hosts the group as a joiner, catches up, and the
    move finishes. Then every node restarts (kill -9): the moved placement stays."""
    cluster = sharded(make_cluster, tls=False)
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    shard = 2
    members = smap.members[shard]
    dst = next(n for n in cluster.nodes if n not in members)
    keys = keys_in(smap, shard, 20, "d")

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        src = next(n for n in members if n != leader_of(statuses, shard))  # a follower moves away
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i, key in enumerate(keys):
                assert (await c.put(key, i)).ok
        cluster.nodes[dst].kill9()
        up = [n for n in cluster.nodes if n != dst]
        async with UkehiClient([cluster.nodes[n].address for n in up], timeout=60.0) as admin:
            move = asyncio.create_task(admin.move_replica(shard, src, dst, timeout=60.0))
            st = await cluster.wait_until(
                lambda st: any(str(shard) in (s.get("moving") or {}) and s["moving"][str(shard)]["step"] == "catch-up"
                               for s in st.values()), 20.0, "the move waiting for its learner", up)
            assert all(s["moves"] == [{"shard": shard, "from": src, "to": dst}] for s in st.values()
                       if s["epoch"] == 2), st
            # `ukehi kv status` on the mover shows the epoch and the move in flight.
            mover = next(n for n, s in st.items() if str(shard) in (s.get("moving") or {}))
            await cluster.wait_until(lambda st: st[mover]["epoch"] == 2, 10.0, "the mover at epoch 2", [mover])
            shown = await asyncio.to_thread(kv_cli, "status", "--cluster", cluster.nodes[mover].address)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert "shard map: epoch 2," in shown.stdout, shown.stdout
            assert f"move in flight (epoch 2): shard {shard} from {src} to {dst}" in shown.stdout, shown.stdout
            assert f"runs the move of shard {shard} from {src} to {dst}: step catch-up" in shown.stdout
            cluster.nodes[dst].start()
            r = await move
            assert r.ok, (r, cluster.tails())
            assert r.value["epoch"] == 3 and dst in r.value["members"]
            moved_to.extend(r.value["members"])
    moved_to: list[str] = []
    asyncio.run(scenario())
    for node in cluster.nodes.values():
        node.kill9()
    cluster.start()

    async def after() -> None:
        await wait_all_shards_led(cluster)
        # A node killed before it heard of epoch 3 comes back with its older map (and may host
        # the group it left for a moment); every node converges on the committed map.
        st = await cluster.wait_until(
            lambda st: len(st) == 4 and all(s["epoch"] == 3 for s in st.values())
            and {n for n, s in st.items() if str(shard) in s["shards"]} == set(moved_to),
            20.0, "the moved placement after a restart of every node")
        assert dst in st and str(shard) in st[dst]["shards"]
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i, key in enumerate(keys):
                r = await c.get(key)
                assert r.ok and r.value == i, (key, r)
    asyncio.run(after())


def test_the_mover_killed_mid_move_leaves_the_map_consistent_with_the_group(make_cluster):
    """kill -9 of the shard's leader while its move waits for a learner that is down: the move
    is reported unknown, a new leader undoes it (the learner removed, the map's record
    cleared, members unchanged), and a later move of that shard succeeds."""
    cluster = sharded(make_cluster, tls=False)
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    shard = 0
    members = smap.members[shard]
    dst = next(n for n in cluster.nodes if n not in members)  # the outsider, or the mover is
    keys = keys_in(smap, shard, 10, "m")

    # The mover and the target both go down: keep them from being two of the three metadata
    # members, or the map could not change at all (which is right, but not this test).
    outsider = next(n for n in cluster.nodes if n not in meta_members(cluster.nodes, RF))

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        mover = leader_of(statuses, shard)
        if outsider in members and mover != outsider:
            async with UkehiClient(cluster.addresses, timeout=10.0) as admin:
                r = await admin.transfer_leader(outsider, shard=shard)
                assert r.ok, r
            mover = outsider
        src = next(n for n in members if n != mover)
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i, key in enumerate(keys):
                assert (await c.put(key, i)).ok
        cluster.nodes[dst].kill9()
        up = [n for n in cluster.nodes if n != dst]
        async with UkehiClient([cluster.nodes[mover].address], timeout=60.0) as admin:
            move = asyncio.create_task(admin.move_replica(shard, src, dst, timeout=60.0))
            await cluster.wait_until(
                lambda st: (st.get(mover, {}).get("moving") or {}).get(str(shard), {}).get("step") == "catch-up",
                20.0, "the move waiting for its learner", up)
            cluster.nodes[mover].kill9()
            r = await move
            assert not r.ok, r
        rest = [n for n in up if n != mover]
        # The group's new leader settles it: no learner, voters = the map's members, no move.
        st = await cluster.wait_until(
            lambda st: any(str(shard) in s["shards"] and s["shards"][str(shard)]["role"] == "leader"
                           and not s["shards"][str(shard)]["learners"] for s in st.values())
            and all(s["epoch"] >= 3 and not s["moves"] for s in st.values()),
            30.0, "the interrupted move undone", rest)
        lead = leader_of(st, shard)
        assert sorted(st[lead]["shards"][str(shard)]["members"]) == sorted(members)
        async with UkehiClient([cluster.nodes[n].address for n in rest], timeout=10.0) as c:
            r = await c.shard_map_of(cluster.nodes[rest[0]].address)
            final_map = ShardMap.from_dict(r.value["map"])
            assert sorted(final_map.members[shard]) == sorted(members) and final_map.move_of(shard) is None
        log = cluster.nodes[lead].log_text()
        assert "event=shard-reconcile" in log
        # Everyone back: the keys are all there, and the same move now succeeds.
        cluster.nodes[mover].start()
        cluster.nodes[dst].start()
        await wait_all_shards_led(cluster)
        done = await asyncio.to_thread(kv_cli, "move-replica", "--shard", str(shard), "--from", src, "--to", dst,
                                       "--cluster", ",".join(cluster.addresses))
        assert done.returncode == 0, done.stdout + done.stderr + cluster.tails()
        await cluster.wait_until(lambda st: st[dst]["shards"].get(str(shard), {}).get("member") is True, 20.0,
                                 "the target a member of the shard", [dst])
        async with UkehiClient(cluster.addresses, timeout=60.0) as admin:
            for i, key in enumerate(keys):
                got = await admin.get(key)
                assert got.ok and got.value == i, (key, got)
    asyncio.run(scenario())


def test_the_metadata_leader_killed_mid_move_does_not_stop_the_move(make_cluster):
    """The metadata group's leader dies between the move's two map changes: the mover sends
    the second one to the group's next leader, and the move finishes (the shard's own group
    never depended on the metadata group)."""
    cluster = sharded(make_cluster, tls=False)
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    meta = meta_members(cluster.nodes, RF)
    outsider = next(n for n in cluster.nodes if n not in meta)
    shard = next(s for s in range(SHARDS) if outsider not in smap.members[s])  # its members: the metadata ones
    keys = keys_in(smap, shard, 10, "q")

    async def scenario() -> None:
        await cluster.wait_until(lambda st: len(st) == 4 and all(st[n]["shard_map_committed"] for n in meta),
                                 30.0, "the map committed")
        statuses = await wait_all_shards_led(cluster)
        meta_leader = next(n for n in meta if (statuses[n].get("metadata") or {}).get("role") == "leader")
        mover = leader_of(statuses, shard)
        async with UkehiClient(cluster.addresses, timeout=10.0) as admin:
            if mover == meta_leader:  # the shard's leader must survive: hand it to another member
                mover = next(n for n in smap.members[shard] if n != meta_leader)
                assert (await admin.transfer_leader(mover, shard=shard)).ok
            for i, key in enumerate(keys):
                assert (await admin.put(key, i)).ok
        src = next(n for n in smap.members[shard] if n not in (mover, meta_leader))
        cluster.nodes[outsider].kill9()  # the target: the move waits for it in catch-up
        up = [n for n in cluster.nodes if n != outsider]
        async with UkehiClient([cluster.nodes[mover].address], timeout=60.0) as admin:
            move = asyncio.create_task(admin.move_replica(shard, src, outsider, timeout=60.0))
            await cluster.wait_until(
                lambda st: (st.get(mover, {}).get("moving") or {}).get(str(shard), {}).get("step") == "catch-up",
                20.0, "the move waiting for its learner", up)
            cluster.nodes[meta_leader].kill9()
            cluster.nodes[outsider].start()
            r = await move
            assert r.ok, (r, cluster.tails())
            assert r.value["epoch"] == 3 and sorted(r.value["members"]) == sorted(
                [n for n in smap.members[shard] if n != src] + [outsider])
        log = cluster.nodes[mover].log_text()
        assert "event=move-done" in log
        cluster.nodes[meta_leader].start()
        await cluster.wait_until(lambda st: len(st) == 4 and all(s["epoch"] == 3 for s in st.values()), 20.0,
                                 "every node at epoch 3")
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i, key in enumerate(keys):
                got = await c.get(key)
                assert got.ok and got.value == i, (key, got)
    asyncio.run(scenario())


def test_a_target_behind_a_compacted_log_catches_up_by_snapshot(make_cluster):
    """The shard's log is compacted long before the move: the new replica cannot be sent the
    log from its start, so it installs the leader's snapshot, and serves every key after."""
    cluster = make_cluster(4, tls=False, extra_args=["--shards", str(SHARDS), "--replication-factor", str(RF),
                                                     "--snapshot-threshold", "40"])
    cluster.start()
    smap = ShardMap.initial(cluster.nodes, SHARDS, RF)
    shard = 3
    dst = next(n for n in cluster.nodes if n not in smap.members[shard])
    keys = keys_in(smap, shard, 150, "s")

    async def scenario() -> None:
        statuses = await wait_all_shards_led(cluster)
        src = next(n for n in smap.members[shard] if n != leader_of(statuses, shard))
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            for i, key in enumerate(keys):
                assert (await c.put(key, i)).ok
            r = await c.move_replica(shard, src, dst)
            assert r.ok and dst in r.value["members"], (r, cluster.tails())
        await cluster.wait_until(lambda st: st[dst]["shards"].get(str(shard), {}).get("member") is True, 20.0,
                                 "the target a member", [dst])
        # The new replica leads the shard: every read is served from what it installed.
        async with UkehiClient(cluster.addresses, timeout=10.0) as c:
            r = await c.transfer_leader(dst, shard=shard)
            assert r.ok, r
            for i, key in enumerate(keys):
                got = await c.get(key)
                assert got.ok and got.value == i, (key, got)
    asyncio.run(scenario())
    log = cluster.nodes[dst].log_text()
    installed = [line for line in log.splitlines() if "event=snapshot-installed" in line
                 and f"group={group_of(shard)}" in line]
    assert installed, log[-3000:]
