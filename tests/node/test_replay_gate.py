"""Nothing but `status` and "recovering" answers is served before the WAL replay finishes."""

from __future__ import annotations

import asyncio
import time

from ukehi.client import UkehiClient
from ukehi.kv import encode_command
from ukehi.raft.types import Entry, EntryKind
from ukehi.raft.walcodec import entry_to_wal_command
from ukehi.storage.datadir import DataDir
from ukehi.storage.format import WalEntry
from ukehi.storage.hardstate import HardState

ENTRIES = 150_000


def _write_big_wal(data_dir: str) -> None:
    group = DataDir(data_dir).open_group(0, "truncate-to-last-good")
    try:
        batch = []
        for i in range(1, ENTRIES + 1):
            cmd = encode_command({"op": "put", "key": f"k{i % 5000}", "value": i})
            e = Entry(1, i, EntryKind.NORMAL, cmd, (1 << 32) | i)
            batch.append(WalEntry(1, i, entry_to_wal_command(e), e.fencing_token))
            if len(batch) == 10_000:
                group.wal.append(batch)
                batch = []
        group.wal.append(batch, sync=True)
        group.hard_state.save(HardState(1, "n1", ENTRIES))
    finally:
        group.close()


def test_requests_during_replay_get_recovering(make_cluster):
    cluster = make_cluster(1)
    node = cluster.nodes["n1"]
    _write_big_wal(node.data_dir)
    node.start()

    async def scenario() -> None:
        seen_replaying = False
        refused = None
        deadline = time.monotonic() + 60
        async with UkehiClient([node.address], timeout=1.0, connect_timeout=0.2) as c:
            while time.monotonic() < deadline:
                st = await c.status(node.address)
                if st.ok and st.value["phase"] == "replaying":
                    seen_replaying = True
                    assert st.value["recovering"] is True
                    r = await c.request("get", {"key": "k1"}, target=node.address)
                    if r.error == "recovering":
                        refused = r
                    break
                await asyncio.sleep(0.005)
        assert seen_replaying, "the node never reported phase=replaying while it replayed"
        assert refused is not None and refused.failed, refused
        await cluster.wait_for_leader(timeout=60)
        async with cluster.client(timeout=10.0) as c:
            r = await c.get("k4999")
            assert r.ok and r.value == 4999 + 5000 * ((ENTRIES - 4999) // 5000)

    asyncio.run(scenario())
