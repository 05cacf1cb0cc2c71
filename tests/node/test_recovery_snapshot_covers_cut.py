"""A WAL cut (truncate-to-last-good) below a snapshot that already covers every index the cut
may have lost: the node is caught up before it runs, and its log says so at once.

Found by the simulator (correct-build seed 109): the node logged ``recovering``, then
campaigned, and only after that first Ready logged ``recovered``, so the policy checker read
"campaigned while recovering" although the core had never been recovering (its snapshot
reached refuse_votes_until)."""

from __future__ import annotations

import io
import os
import random
from types import SimpleNamespace

from ukehi.config import DEFAULT_WAL_SEGMENT_SIZE
from ukehi.kv import KVStateMachine, encode_command
from ukehi.node.driver import Driver, membership_to_config
from ukehi.node.recovery import build_core, open_storage
from ukehi.nodelog import NodeLogger
from ukehi.raft.config import RaftConfig
from ukehi.raft.types import Entry, EntryKind, Membership
from ukehi.raft.walcodec import entry_to_wal_command
from ukehi.storage.datadir import DataDir
from ukehi.storage.format import WalEntry
from ukehi.storage.hardstate import HardState
from ukehi.storage.snapshot import Snapshot

from offline_node import PEERS, NoNetwork as _NoNetwork, log_events as _events


def _recover(data_dir: str, snapshot_index: int) -> tuple[list[str], bool]:
    group = DataDir(data_dir).open_group(0, "truncate-to-last-good")
    try:
        batch = []
        for i in range(1, 41):
            e = Entry(1, i, EntryKind.NORMAL, encode_command({"op": "put", "key": f"k{i}", "value": i}), (1 << 32) | i)
            batch.append(WalEntry(1, i, entry_to_wal_command(e), e.fencing_token))
        group.wal.append(batch, sync=True)
        group.hard_state.save(HardState(1, "n1", 30))  # commit is saved lazily: behind the snapshot
        if snapshot_index:
            members = membership_to_config(Membership(voters=frozenset(PEERS)))
            group.snapshots.save(Snapshot(snapshot_index, 1, KVStateMachine().snapshot(), members))
    finally:
        group.close()
    wal_dir = os.path.join(DataDir(data_dir).group_path(0), "wal")
    segment = os.path.join(wal_dir, sorted(os.listdir(wal_dir))[0])
    with open(segment, "r+b") as f:  # zero a chunk early in the log: a CRC the cut stops at
        f.seek(200)
        f.write(bytes(64))
    stream = io.StringIO()
    log = NodeLogger("n1", stream=stream)
    driver = Driver("n1", bug=None, fsync=True, founders=dict(PEERS), log=log, clock=None, wake=lambda: None)
    driver.network = _NoNetwork()
    cfg = SimpleNamespace(node_id="n1", data_dir=data_dir, corruption_policy="truncate-to-last-good",
                          join=False, peers=dict(PEERS), wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE)
    storage = open_storage(cfg, None)
    assert storage.recovered.recovering, "the zeroed chunk must make the policy cut the WAL"
    core = build_core(driver, storage, cfg, RaftConfig(), random.Random(1))
    try:
        return _events(stream.getvalue()), core.recovering
    finally:
        storage.close()


def test_a_snapshot_that_covers_the_cut_means_recovered_before_the_node_runs(tmp_path):
    events, recovering = _recover(str(tmp_path / "covered"), snapshot_index=40)
    assert not recovering
    assert events[events.index("recovering") + 1:events.index("recovering") + 3] == ["replay-done", "recovered"], events


def test_a_cut_the_snapshot_does_not_cover_stays_recovering(tmp_path):
    events, recovering = _recover(str(tmp_path / "short"), snapshot_index=0)
    assert recovering  # must not vote until a leader brings it past the cut
    assert "recovering" in events and "recovered" not in events, events
