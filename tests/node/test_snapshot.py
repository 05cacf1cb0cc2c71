"""Compaction at the snapshot threshold, and a node added later catching up from a snapshot."""

from __future__ import annotations

import asyncio
import os

from ukehi.client import UkehiClient
from ukehi.nodelog import parse_line


def test_node_added_after_compaction_receives_a_snapshot(make_cluster):
    cluster = make_cluster(3, extra_args=["--snapshot-threshold", "50"])
    cluster.start()
    n4 = cluster.add_spare("n4")

    async def scenario() -> None:
        await cluster.wait_for_leader(among=["n1", "n2", "n3"])
        acked = {}
        async with cluster.client(timeout=5.0) as c:
            for i in range(180):
                r = await c.put(f"s{i}", f"value-{i}")
                assert r.ok, r
                acked[f"s{i}"] = f"value-{i}"
        st = await cluster.wait_until(
            lambda st: len(st) == 3 and all(s["snapshot_index"] >= 100 for s in st.values()),
            20, "every founder to compact its log", ["n1", "n2", "n3"],
        )
        for nid in ("n1", "n2", "n3"):
            assert "event=snapshot-created" in cluster.nodes[nid].log_text()
            snaps = os.listdir(os.path.join(cluster.nodes[nid].data_dir, "group-0", "snap"))
            assert any(name.endswith(".snap") for name in snaps), snaps
        async with cluster.client(timeout=5.0) as c:
            taken = await c.snapshot()  # admin: snapshot the leader now, below the threshold
            assert taken.ok and taken.value >= 180, taken
        n4.start()
        async with UkehiClient(cluster.addresses[:3], timeout=30.0) as admin:
            r = await admin.add_node("n4", n4.address)
            assert r.ok, r
        await cluster.wait_converged(["n1", "n2", "n3", "n4"])
        text = n4.log_text()
        assert "event=snapshot-installed" in text, text[-3000:]
        st4 = (await cluster.statuses(["n4"]))["n4"]
        assert st4["snapshot_index"] >= 100 and sorted(st4["members"]) == ["n1", "n2", "n3", "n4"]
        # n4 holds the data: make it the leader and read every key through it alone.
        async with cluster.client(timeout=5.0) as c:
            assert (await c.transfer_leader("n4")).ok
        async with UkehiClient([n4.address], timeout=5.0) as c:
            for key, value in acked.items():
                r = await c.get(key)
                assert r.ok and r.value == value, (key, r)
        # A restart of n4 comes back from its own snapshot + WAL.
        n4.kill9()
        n4.start()
        await cluster.wait_converged(["n1", "n2", "n3", "n4"])
        restart = n4.log_text().split("--- start #2")[1]
        replay = [parse_line(l) for l in restart.splitlines() if "event=replay-done" in l]
        assert replay and int(replay[0]["snapshot_index"]) >= 100, replay

    asyncio.run(scenario())
