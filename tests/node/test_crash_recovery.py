"""kill -9 of the leader while a client writes: a new leader, restart from the WAL, no
acknowledged write lost."""

from __future__ import annotations

import asyncio

from ukehi.client import UkehiClient


async def _writer(cluster, acked: dict[str, str], unknown: set[str], failed: set[str], stop: asyncio.Event,
                  tag: str) -> None:
    i = 0
    async with UkehiClient(cluster.addresses, timeout=2.0, connect_timeout=0.3) as c:
        while not stop.is_set() and i < 5000:
            key, value = f"{tag}-{i}", f"v{i}"
            r = await c.put(key, value)
            if r.ok:
                acked[key] = value
            elif r.unknown:
                unknown.add(key)
            else:
                failed.add(key)
            i += 1


def test_kill9_leader_new_leader_restart_catches_up_no_acked_write_lost(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        old_leader = await cluster.wait_for_leader()
        acked: dict[str, str] = {}
        unknown: set[str] = set()
        failed: set[str] = set()
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(cluster, acked, unknown, failed, stop, "w"))
        await asyncio.sleep(1.0)
        before_kill = len(acked)
        assert before_kill > 0, "the writer made no progress before the kill"
        killed = cluster.nodes[old_leader]
        old_pid = killed.pid
        killed.kill9()
        new_leader = await cluster.wait_for_leader(exclude=[old_leader])
        assert new_leader != old_leader
        await asyncio.sleep(1.0)
        assert len(acked) > before_kill, "no write succeeded after the new leader was elected"
        killed.start()
        await asyncio.sleep(0.5)
        stop.set()
        await writer
        statuses = await cluster.wait_converged(list(cluster.nodes), timeout=20)
        assert statuses[old_leader]["pid"] != old_pid
        assert statuses[old_leader]["applied_index"] == statuses[new_leader]["applied_index"]
        # Every acknowledged write is there, read linearizably through the cluster ...
        async with cluster.client(timeout=5.0) as c:
            for key, value in acked.items():
                r = await c.get(key)
                assert r.ok and r.value == value, (key, r)
            # Honesty of the client's verdicts: a write reported as a definite failure must
            # never have happened (each key is written once, so it must be absent).
            for key in failed:
                r = await c.get(key)
                assert r.ok and r.value is None, (key, r)
        # ... and the restarted node alone serves them once it leads.
        async with cluster.client(timeout=5.0) as c:
            r = await c.transfer_leader(old_leader)
            assert r.ok, r
        async with UkehiClient([killed.address], timeout=5.0) as c:
            missing = [k for k, v in acked.items() if (await c.get(k)).value != v]
            assert not missing, f"{len(missing)} acknowledged keys missing on the restarted node"

    asyncio.run(scenario())


def test_sigterm_of_a_busy_leader_shuts_down_cleanly(make_cluster):
    cluster = make_cluster(3)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        acked: dict[str, str] = {}
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(cluster, acked, set(), set(), stop, "t"))
        await asyncio.sleep(0.7)
        code = await asyncio.to_thread(cluster.nodes[leader].terminate, 10.0)
        assert code == 0, cluster.nodes[leader].log_text()[-2000:]
        assert "event=shutdown" in cluster.nodes[leader].log_text()
        await cluster.wait_for_leader(exclude=[leader])
        await asyncio.sleep(0.5)
        stop.set()
        await writer
        cluster.nodes[leader].start()  # restarts from what it persisted, including its vote
        await cluster.wait_converged(list(cluster.nodes))
        async with cluster.client(timeout=5.0) as c:
            for key, value in acked.items():
                assert (await c.get(key)).value == value, key

    asyncio.run(scenario())
