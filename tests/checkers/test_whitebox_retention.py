"""wal-retention: after a logged compaction to C, no WAL segment compact_to(C) removes is left.

The WAL files are written with the node's own WAL (small segments, so they rotate), and
compacted with its own ``compact_to`` where a test plays a correct node; a test that plays
the leak logs the compaction without calling it (what ``wal.py``'s ``compact_to`` does
when it never removes a segment).
"""

from __future__ import annotations

from pathlib import Path

from checkers.history import Op
from checkers.whitebox import NAMES, check_run_nodes, read_cluster
from checkers.whitebox.retention import Segment, check_cluster_retention, leaked
from ukehi.storage import CorruptionPolicy, WAL, WalEntry
from whitebox_nodes import Node, put

SEGMENT = 1024  # the WAL's minimum: about three of the entries below per segment


def entry(index: int, term: int = 1) -> WalEntry:
    return WalEntry(term, index, put(f"register/{index}", "x" * 200), (term << 32) | index)


def append(node: Node, first: int, last: int, *, compact: int | None = None) -> list[str]:
    """Append entries FIRST..LAST one by one (each rotation where the real WAL makes it), then
    ``compact_to(compact)`` when given; the segment names left."""
    wal, _ = WAL.open(str(node.group / "wal"), CorruptionPolicy.TruncateToLastGood, segment_size=SEGMENT)
    with wal:
        for i in range(first, last + 1):
            wal.append([entry(i)], sync=True)
        if compact is not None:
            wal.compact_to(compact)
        return wal.segment_names


def segments_of(node: Node) -> list[tuple[int, int]]:
    from ukehi.storage import scan_wal

    return [(s.indexes[0], s.indexes[-1]) for s in scan_wal(str(node.group / "wal")).segments if len(s.indexes)]


def judge(tmp_path: Path, *nodes: Node, history: list[Op] | None = None) -> dict:
    for node in nodes:
        node.write_log()
    cluster = read_cluster(tmp_path / "nodes")
    return check_cluster_retention(cluster, {n: tmp_path / "nodes" / n for n in cluster}, history or [])


def started(tmp_path: Path, name: str = "n1", **kw) -> Node:
    node = Node(tmp_path, name)
    node.group.mkdir(parents=True)
    node.start(**kw)
    return node


def test_a_segment_left_below_the_compaction_point_is_caught_and_named(tmp_path):
    node = started(tmp_path)
    names = append(node, 1, 12)  # no compact_to: the leak
    assert len(names) >= 4
    node.log("snapshot-created", index=8, term=1, bytes=10, reason="threshold")
    result = judge(tmp_path, node)
    assert result["valid"] is False, result
    bad = [v["segment"] for v in result["violations"]]
    assert segments_of(node)[2] == (7, 9)  # three entries a segment: the third straddles 8
    first_kept = next(i for i, (lo, hi) in enumerate(segments_of(node)) if hi > 8)
    assert bad == names[:first_kept]  # exactly the segments wholly at or below 8 before the straddling one
    v = result["violations"][0]
    assert v["node"] == "n1" and v["compacted_to"] == 8 and v["first"] == 1
    assert "n1 group 0: WAL segment " + names[0] in result["explanation"]
    assert "compaction to index 8" in result["explanation"]


def test_a_real_compaction_passes_and_is_counted(tmp_path):
    node = started(tmp_path)
    names = append(node, 1, 12, compact=9)
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert result["compactions"] == 1 and result["compaction_points"] == {"n1": 9}
    assert result["segments"] == len(names)


def test_the_newest_segment_at_compaction_time_may_stay_after_a_rotation(tmp_path):
    # Find where the third segment starts, then compact when the second is the newest and full.
    trial = started(tmp_path, "trial")
    append(trial, 1, 12)
    third = segments_of(trial)[2][0]
    node = started(tmp_path, "n1")
    append(node, 1, third - 1, compact=third - 1)  # keeps the second segment: the newest
    append(node, third, third + 4)  # rotates: the kept one is no longer the newest
    node.log("snapshot-created", index=third - 1, term=1, bytes=10, reason="threshold")
    assert segments_of(node)[0][1] == third - 1  # a non-newest segment wholly <= C is on disk
    result = judge(tmp_path, node)
    assert result["valid"] is True, result


def test_a_crash_between_snapshot_and_compaction_is_not_a_leak(tmp_path):
    node = started(tmp_path)
    append(node, 1, 12, compact=3)
    node.log("snapshot-created", index=3, term=1, bytes=10, reason="threshold")
    node.snapshot(9, 1)  # the next snapshot was saved, then the node died before compact_to(9)
    node.start(snapshot_index=9, entries=3, term=1)  # restarted: nothing compacts on start
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert result["compaction_points"] == {"n1": 3}


def test_an_installed_snapshot_is_a_compaction_point(tmp_path):
    node = started(tmp_path)
    append(node, 1, 12)
    node.log("snapshot-installed", index=9, term=1, bytes=10)  # the WAL should have been emptied
    result = judge(tmp_path, node)
    assert result["valid"] is False and result["violations"][0]["compacted_to"] == 9


def test_compactions_before_a_damaged_restart_do_not_count(tmp_path):
    node = started(tmp_path)
    append(node, 1, 12)
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")
    node.start(entries=12, term=1)
    node.log("corruption-report", kind="crc-mismatch", action="cut", segment="wal-00000002.seg", offset=40)
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert result["compactions"] == 0
    # ... but one logged after that replay does
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")
    assert judge(tmp_path, node)["valid"] is False


def test_a_node_damaged_without_a_restart_is_not_judged(tmp_path):
    node = started(tmp_path)
    append(node, 1, 12)
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")
    damage = Op(5, 50, "nemesis", "info", "corrupt-wal",
                value={"nodes": {"n1": {"changes": ["truncated wal-00000001.seg"], "pid": 999}}})
    result = judge(tmp_path, node, history=[damage])
    assert result["valid"] is True, result
    assert "n1" in result["unjudged"]
    # the same record with the pid of a process in its log is a restart: judged from there on
    damage_restarted = Op(5, 50, "nemesis", "info", "corrupt-wal",
                          value={"nodes": {"n1": {"changes": ["x"], "pid": node.pid}}})
    assert judge(tmp_path, node, history=[damage_restarted])["valid"] is False


def test_a_wiped_node_is_judged_by_its_new_incarnation_only(tmp_path):
    node = started(tmp_path)
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")  # old incarnation
    append(node, 1, 12)  # the new incarnation's WAL, never compacted
    node.start(join=True)  # replayed an empty directory: wiped and added again
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert result["compactions"] == 0


def test_segments_set_aside_by_the_policy_are_reported_not_judged(tmp_path):
    node = started(tmp_path, policy="alert-and-continue")
    names = append(node, 1, 12, compact=2)
    node.log("snapshot-created", index=2, term=1, bytes=10, reason="threshold")
    path = node.group / "wal" / names[1]
    path.write_bytes(b"\xff" * path.stat().st_size)  # unreadable from its header on
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert names[1] in result["unjudged"]["n1"]


def test_the_rule_on_plain_segments():
    seg = lambda i, lo, hi: Segment(i, f"wal-{i:08x}.seg", lo, hi, 0 if lo is None else hi - lo + 1)  # noqa: E731
    # an empty segment before one that holds an entry at or below C is a leak too
    assert [s.segment_id for s in leaked([seg(1, None, None), seg(2, 4, 9)], 5)] == [1]
    # the newest segment is never a leak, whatever it holds
    assert leaked([seg(1, 1, 3)], 9) == []
    # a segment wholly <= C followed only by entries above C was the newest at compaction time
    assert leaked([seg(1, 1, 5), seg(2, 6, 9)], 5) == []


def test_every_run_and_the_sim_get_wal_retention(tmp_path):
    assert "wal-retention" in NAMES
    node = started(tmp_path)
    append(node, 1, 12)
    node.log("snapshot-created", index=9, term=1, bytes=10, reason="threshold")
    node.write_log()
    results = check_run_nodes(tmp_path, ["n1"], [], "register")
    assert results["wal-retention"]["valid"] is False


def test_a_wal_its_refuse_start_policy_refuses_is_not_judged(tmp_path):
    from whitebox_nodes import corrupt

    node = started(tmp_path, policy="refuse-start")
    append(node, 1, 12)
    node.log("snapshot-created", index=8, term=1, bytes=10, reason="threshold")  # would be a leak
    corrupt(node, 11)
    result = judge(tmp_path, node)
    assert result["valid"] is True, result
    assert "refuse-start" in result["unjudged"]["n1"]
