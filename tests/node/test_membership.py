"""Membership on real processes: grow 3 -> 5, shrink to 3 removing the leader, while writing."""

from __future__ import annotations

import asyncio

from ukehi.client import UkehiClient


async def _writer(addresses, acked: dict[str, int], stop: asyncio.Event) -> None:
    i = 0
    async with UkehiClient(addresses, timeout=3.0, connect_timeout=0.3) as c:
        while not stop.is_set() and i < 20_000:
            r = await c.put(f"m{i}", i)
            if r.ok:
                acked[f"m{i}"] = i
            i += 1
            await asyncio.sleep(0.005)


def test_grow_to_five_and_shrink_to_three_removing_the_leader(make_cluster):
    cluster = make_cluster(3)
    cluster.start()
    n4 = cluster.add_spare("n4")
    n5 = cluster.add_spare("n5")

    async def scenario() -> None:
        await cluster.wait_for_leader(among=["n1", "n2", "n3"])
        n4.start()
        n5.start()
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(cluster.addresses, acked, stop))
        async with UkehiClient(cluster.addresses, timeout=30.0) as admin:
            await asyncio.sleep(0.5)
            for node in (n4, n5):
                r = await admin.add_node(node.node_id, node.address)
                assert r.ok, r
            five = ["n1", "n2", "n3", "n4", "n5"]
            st = await cluster.wait_until(
                lambda st: len(st) == 5 and all(sorted(s["members"]) == five and not s["joint"] for s in st.values()),
                20, "all five nodes to see the five-voter configuration",
            )
            leader = next(s["id"] for s in st.values() if s["role"] == "leader")
            progress_before = len(acked)
            # Remove the current leader (it steps down once C_new commits), then one more.
            r = await admin.remove_node(leader)
            assert r.ok, r
            remaining = [n for n in five if n != leader]
            await cluster.wait_for_leader(among=remaining)
            victim = next(n for n in ("n1", "n2", "n3") if n != leader)
            r = await admin.remove_node(victim)
            assert r.ok, r
            final = sorted(n for n in remaining if n != victim)
            await cluster.wait_until(
                lambda st: all(sorted(st[n]["members"]) == final and not st[n]["joint"] for n in final if n in st)
                and set(final) <= set(st),
                20, f"the final configuration {final}", final,
            )
        # A write in flight when the leader was removed may wait out its whole timeout, so
        # give the writer a bounded while to get one through under the final configuration.
        deadline = asyncio.get_running_loop().time() + 15
        while len(acked) <= progress_before and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await writer
        assert len(acked) > progress_before, "no write succeeded after the membership changes began"
        # The removed nodes may stop now; the three members serve every acknowledged write.
        for nid in (leader, victim):
            cluster.nodes[nid].terminate()
        new_leader = await cluster.wait_for_leader(among=final)
        assert new_leader in final
        await cluster.wait_converged(final)
        async with UkehiClient([cluster.nodes[n].address for n in final], timeout=5.0) as c:
            for key, value in acked.items():
                r = await c.get(key)
                assert r.ok and r.value == value, (key, r)
        logs = "".join(cluster.nodes[n].log_text() for n in final)
        assert "event=membership-changed" in logs and "joint=true" in logs

    asyncio.run(scenario())


def test_a_joining_node_answers_a_leader_it_was_never_told_about(make_cluster):
    """n5 joins knowing only the founders; the leader is n4, added later. The hello
    handshake carries n4's address, so n5 can answer it and catch up."""
    cluster = make_cluster(3)
    cluster.start()
    n4 = cluster.add_spare("n4")
    n5 = cluster.add_spare("n5")  # its --peers lists n1..n3 and itself, never n4

    async def scenario() -> None:
        await cluster.wait_for_leader(among=["n1", "n2", "n3"])
        n4.start()
        async with UkehiClient(cluster.addresses, timeout=30.0) as admin:
            r = await admin.add_node("n4", n4.address)
            assert r.ok, r
            r = await admin.transfer_leader("n4")
            assert r.ok, r
            await cluster.wait_until(lambda st: st.get("n4", {}).get("role") == "leader", 20,
                                     "n4 to lead", ["n1", "n2", "n3", "n4"])
            r = await admin.put("before-n5", 1)
            assert r.ok, r
            n5.start()
            r = await admin.add_node("n5", n5.address)
            assert r.ok, (r, cluster.tails())
        st = await cluster.wait_converged(["n1", "n2", "n3", "n4", "n5"])
        assert sorted(st["n5"]["members"]) == ["n1", "n2", "n3", "n4", "n5"]
        assert "source=hello" in n5.log_text()

    asyncio.run(scenario())
