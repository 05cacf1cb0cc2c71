"""A WAL damaged at its very first entry: truncate-to-last-good cuts it to nothing, yet the node
must still refuse votes until a leader has brought it past every entry it may have acked.

Found by the simulator (correct-build sweep, register seed 5025 on 45f3944): a zeroed chunk
from the first entry's bytes on left nothing readable in n3's only segment. The cut reported
no index at all, so the node logged ``recovering refuse_votes_until=0`` and ``recovered`` at
once and went on voting with an empty log although it had acknowledged entries 1-6 (with one
other node lacking them, its vote could elect a leader without committed entries). The
refuse-votes index must count the entries the unreadable bytes may have held, not only the
readable ones.
"""

from __future__ import annotations

import io
import os
import random
from types import SimpleNamespace

from ukehi.config import DEFAULT_WAL_SEGMENT_SIZE
from ukehi.kv import encode_command
from ukehi.node.driver import Driver
from ukehi.node.recovery import build_core, open_storage
from ukehi.nodelog import NodeLogger
from ukehi.raft.config import RaftConfig
from ukehi.raft.messages import VoteRequest, VoteResponse
from ukehi.raft.types import Entry, EntryKind
from ukehi.raft.walcodec import entry_to_wal_command
from ukehi.storage.datadir import DataDir
from ukehi.storage.format import HEADER_SIZE, WalEntry
from ukehi.storage.hardstate import HardState

from offline_node import PEERS, NoNetwork as _NoNetwork, log_events as _events

WRITTEN = 6  # entries the node acknowledged before its disk was damaged


def _damaged_node(data_dir: str, zero_from: int, keep_tail: int):
    """Write WRITTEN entries (commit saved lazily: 0), zero the segment from ``zero_from`` up to
    ``keep_tail`` bytes before its end, and recover the node under truncate-to-last-good."""
    group = DataDir(data_dir).open_group(0, "truncate-to-last-good")
    try:
        batch = []
        for i in range(1, WRITTEN + 1):
            e = Entry(1, i, EntryKind.NORMAL, encode_command({"op": "put", "key": f"register/{i}", "value": i}),
                      (1 << 32) | i)
            batch.append(WalEntry(1, i, entry_to_wal_command(e), e.fencing_token))
        group.wal.append(batch, sync=True)
        group.hard_state.save(HardState(1, "n1", 0))
    finally:
        group.close()
    wal_dir = os.path.join(DataDir(data_dir).group_path(0), "wal")
    [name] = os.listdir(wal_dir)
    segment = os.path.join(wal_dir, name)
    size = os.path.getsize(segment)
    with open(segment, "r+b") as f:  # seed 5025: 357 zero bytes from offset 22 of 416
        f.seek(zero_from)
        f.write(bytes(size - keep_tail - zero_from))
    stream = io.StringIO()
    driver = Driver("n1", bug=None, fsync=True, founders=dict(PEERS), log=NodeLogger("n1", stream=stream),
                    clock=None, wake=lambda: None)
    driver.network = _NoNetwork()
    cfg = SimpleNamespace(node_id="n1", data_dir=data_dir, corruption_policy="truncate-to-last-good",
                          join=False, peers=dict(PEERS), wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE)
    storage = open_storage(cfg, None)
    core = build_core(driver, storage, cfg, RaftConfig(), random.Random(1))
    storage.close()
    return storage.recovered, core, _events(stream.getvalue())


def _grants_vote_to_an_empty_log(core) -> bool:
    core.step(VoteRequest(group_id=0, term=core.term + 1, src="n2", dst="n1", pre_vote=False,
                          last_log_index=0, last_log_term=0))
    replies = [m for m in core.ready().messages if isinstance(m, VoteResponse) and m.dst == "n2"]
    assert len(replies) == 1
    return replies[0].granted


def test_a_wal_cut_to_nothing_still_refuses_votes_until_past_what_it_held(tmp_path):
    rec, core, events = _damaged_node(str(tmp_path / "d"), zero_from=HEADER_SIZE + 10, keep_tail=37)
    assert rec.recovering and rec.entries == [] and rec.highest_index_seen is None  # nothing readable
    assert core.refuse_votes_until >= WRITTEN and core.recovering
    assert "recovering" in events and "recovered" not in events, events
    assert not _grants_vote_to_an_empty_log(core)
    assert rec.recover_until >= WRITTEN


def test_a_cut_after_kept_entries_counts_the_unreadable_ones_too(tmp_path):
    # Entry 1 survives; 2..6 are zeroed to the end of the segment but for a few bytes (not a
    # crash tail: the last bytes are not zero), so nothing after the cut reads.
    rec, core, events = _damaged_node(str(tmp_path / "d"), zero_from=HEADER_SIZE + 90, keep_tail=3)
    assert [e.index for e in rec.entries] in ([1], [])
    assert core.refuse_votes_until >= WRITTEN and core.recovering and "recovered" not in events
    assert rec.recover_until >= WRITTEN
