"""Read modes: lease reads (opt-in) and the test-only stale-read bug hook."""

from __future__ import annotations

import asyncio

from ukehi.client import UkehiClient


def test_lease_read_mode_serves_linearizable_reads(make_cluster):
    cluster = make_cluster(3, extra_args=["--read-mode", "lease"])
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        async with cluster.client(timeout=5.0) as c:
            for i in range(20):
                assert (await c.put(f"k{i}", i)).ok
                r = await c.get(f"k{i}")
                assert r.ok and r.value == i
            st = (await c.status(cluster.nodes[leader].address)).value
            assert st["read_mode"] == "lease"
        # Followers still redirect reads in lease mode: only the leaseholder answers.
        follower = next(n for n in cluster.nodes if n != leader)
        async with UkehiClient([cluster.nodes[follower].address]) as c:
            r = await c.request("get", {"key": "k1"}, target=cluster.nodes[follower].address)
            assert r.failed and r.error == "not_leader"

    asyncio.run(scenario())


def test_stale_read_bug_answers_from_any_node(make_cluster):
    cluster = make_cluster(3, extra_args=["--unsafe-bug", "stale-read"],
                           env={"UKEHI_I_KNOW_THIS_IS_UNSAFE": "1"})
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        async with cluster.client(timeout=5.0) as c:
            assert (await c.put("k", "v")).ok
        await cluster.wait_converged(list(cluster.nodes))
        follower = next(n for n in cluster.nodes if n != leader)
        async with UkehiClient([cluster.nodes[follower].address]) as c:
            # The planted bug: a follower serves the read itself instead of redirecting.
            r = await c.request("get", {"key": "k"}, target=cluster.nodes[follower].address)
            assert r.ok and r.value == "v"
            st = (await c.status(cluster.nodes[follower].address)).value
            assert st["unsafe_bug"] == "stale-read"

    asyncio.run(scenario())
