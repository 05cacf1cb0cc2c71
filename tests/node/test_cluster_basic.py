"""Real 3- and 5-node clusters on loopback: election, replication, redirects, status."""

from __future__ import annotations

import asyncio

from ukehi.client import UkehiClient

STATUS_KEYS = {"id", "role", "term", "leader", "commit_index", "applied_index", "members", "recovering", "clock", "pid"}


async def _write_through_each_node_and_read_back(cluster) -> None:
    leader = await cluster.wait_for_leader()
    ids = list(cluster.nodes)
    written = {}
    for nid in ids:
        # A client that only knows this one node: a follower redirects it to the leader.
        async with UkehiClient([cluster.nodes[nid].address], timeout=5.0) as c:
            for i in range(5):
                key, value = f"via-{nid}-{i}", f"value-{nid}-{i}"
                r = await c.put(key, value)
                assert r.ok, (nid, r)
                written[key] = value
            if nid != leader:
                assert c.leader == cluster.nodes[leader].address
    statuses = await cluster.wait_converged(ids)
    for st in statuses.values():
        assert STATUS_KEYS <= set(st)
        assert st["leader"] == leader
        assert sorted(st["members"]) == sorted(ids)
        assert st["recovering"] is False
        # the timers it runs with, as configured (fault schedules size their delays by them)
        assert st["election_timeout_ms"] == [int(v) for v in cluster.election.split(":")]
        assert st["heartbeat_ms"] == int(cluster.heartbeat)
        # every entry written since the election is the leader's: the log ends in its term
        assert st["last_term"] == st["term"] and st["last_index"] >= len(written)
    # Every node applied the same index; reads through any entry point return every write.
    async with cluster.client() as c:
        for key, value in written.items():
            r = await c.get(key)
            assert r.ok and r.value == value, (key, r)
        absent = await c.get("never-written")
        assert absent.ok and absent.value is None


def test_three_node_cluster_elects_and_replicates(make_cluster):
    cluster = make_cluster(3)
    cluster.start()
    asyncio.run(_write_through_each_node_and_read_back(cluster))


def test_five_node_cluster_elects_and_replicates(make_cluster):
    cluster = make_cluster(5)
    cluster.start()
    asyncio.run(_write_through_each_node_and_read_back(cluster))


def test_cas_delete_and_definite_failures(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_for_leader()
        async with cluster.client() as c:
            assert (await c.cas("reg", None, 1)).ok  # absent -> 1
            failed = await c.cas("reg", 5, 6)
            assert failed.failed and failed.error == "cas_failed" and failed.definite
            assert (await c.get("reg")).value == 1
            assert (await c.cas("reg", 1, 2)).ok
            assert (await c.delete("reg")).ok
            assert (await c.get("reg")).value is None
            reserved = await c.put("\x00ukehi/addr/n9", "1.2.3.4:5")
            assert reserved.failed and reserved.error == "bad_request"

    asyncio.run(scenario())


def test_follower_answers_not_leader_with_address(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        follower = next(n for n in cluster.nodes if n != leader)
        async with UkehiClient([cluster.nodes[follower].address]) as c:
            r = await c.request("put", {"key": "x", "value": 1}, target=cluster.nodes[follower].address)
            assert r.failed and r.error == "not_leader"
            assert r.leader_hint == cluster.nodes[leader].address
        async with cluster.client() as c:
            assert (await c.get("x")).value is None  # the refused put certainly did not happen

    asyncio.run(scenario())
