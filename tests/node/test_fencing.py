"""Fenced writes and lock tokens on a real cluster, across a leader change."""

from __future__ import annotations

import asyncio

from ukehi.fencing import FencingToken


def test_fenced_writes_and_tokens_across_a_leader_change(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        async with cluster.client(timeout=5.0) as c:
            first = await c.acquire("lock", "alice", ttl_ms=300)
            assert first.ok, first
            t1 = FencingToken(first.value)
            assert (await c.fenced_put("k", "by-alice", t1)).ok
            # A token lower than the highest accepted for the key: refused, definitely.
            stale = await c.fenced_put("k", "stale", t1 - 1)
            assert stale.failed and stale.definite and stale.error == "refused", stale
            assert (await c.get("k")).value == "by-alice"
            # The lock is held: another owner cannot take it before the lease expires.
            held = await c.acquire("lock", "bob", ttl_ms=300)
            assert held.failed and held.error == "lock_held"

            # Leader change: kill the leader; the next holder's token must be strictly greater.
            cluster.nodes[leader].kill9()
            new_leader = await cluster.wait_for_leader(exclude=[leader])
            await asyncio.sleep(0.4)  # alice's 300 ms lease runs out
            second = None
            for _ in range(50):
                second = await c.acquire("lock", "bob", ttl_ms=5000)
                if second.ok or second.error != "lock_held":
                    break
                await asyncio.sleep(0.1)
            assert second is not None and second.ok, second
            t2 = FencingToken(second.value)
            assert t2 > t1 and t2.term > t1.term, (t1, t2)
            assert (await c.fenced_put("k", "by-bob", t2)).ok
            # Alice, deposed, writes with her old token: refused.
            late = await c.fenced_put("k", "late-alice", t1)
            assert late.failed and late.error == "refused"
            assert (await c.get("k")).value == "by-bob"
            assert new_leader != leader

    asyncio.run(scenario())
