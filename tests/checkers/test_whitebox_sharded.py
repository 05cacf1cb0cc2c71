"""White-box checkers on a sharded run: each Raft group judged as its own cluster."""

from __future__ import annotations

import zlib

from checkers.history import Op
from checkers.whitebox import check_sharded_nodes, read_node
from checkers.whitebox.nodedata import group_events, read_log
from ukehi.shardmap import shard_of
from whitebox_nodes import NOOP, Node, put, term_entries

NAMES = ("n1", "n2", "n3")
SHARDS = 2


def key_in(shard: int) -> int:
    """A register key (history form) whose wire key lands in `shard`."""
    return next(k for k in range(1000) if shard_of(f"register/{k}", SHARDS) == shard)


def sharded(tmp_path, logs_for: dict[int, list]) -> dict[str, Node]:
    """Three nodes hosting groups 0 (metadata), 1 and 2 (shards 0 and 1); `logs_for[gid]` are
    that group's entries, applied on every node."""
    nodes = {}
    for name in NAMES:
        node = Node(tmp_path, name)
        node.pid += 1
        node.log("starting", pid=node.pid, policy="truncate-to-last-good", join=False, peers="")
        for gid, entries in logs_for.items():
            node.group = node.dir / "data" / f"group-{gid}"
            node.wal(entries)
            node.log("group-starting", group=gid, shard="metadata" if gid == 0 else gid - 1,
                     members=",".join(NAMES), join=False)
            node.log("replay-done", group=gid, entries=0, snapshot_index=0, term=0, commit=0, last_index=0)
            role = "became-leader" if name == "n1" else "became-follower"
            node.log(role, group=gid, term=1, leader="n1", role=role.split("-")[1])
            node.log("applied", group=gid, first=entries[0].index, last=entries[-1].index,
                     entries=",".join(f"{e.term}.{zlib.crc32(e.command):08x}" for e in entries))
        nodes[name] = node
    return nodes


def write(nodes):
    for node in nodes.values():
        node.write_log()


def test_group_events_make_each_group_look_like_an_unsharded_log(tmp_path):
    k0 = key_in(0)
    nodes = sharded(tmp_path, {0: term_entries(1, 1, [NOOP]), 1: term_entries(1, 1, [NOOP, put(f"register/{k0}", 5)])})
    nodes["n2"].log("group-starting", group=2, shard=1, members="", join=True)  # joins shard 1 by a move
    nodes["n2"].log("applied", group=2, first=1, last=1, entries="1.00000000")
    write(nodes)
    events = read_log(tmp_path / "nodes" / "n2" / "node.log")
    g1 = group_events(events, 1)
    assert [e["event"] for e in g1] == ["starting", "replay-done", "became-follower", "applied"]
    assert g1[0]["pid"] == "101" and g1[0]["peers"] == "n1,n2,n3" and g1[0]["join"] == "false"
    g2 = group_events(events, 2)
    assert [e["event"] for e in g2] == ["starting", "applied"] and g2[0]["join"] == "true"
    node = read_node("n2", tmp_path / "nodes" / "n2", group_id=1)
    assert node.has_data and sorted(node.entries) == [1, 2] and len(node.processes) == 1


def test_every_group_is_judged_and_a_broken_one_is_named(tmp_path):
    k0, k1 = key_in(0), key_in(1)
    history = [Op(1, 10, 0, "invoke", "write", k0, 5), Op(2, 15, 0, "ok", "write", k0, 5),
               Op(3, 20, 1, "invoke", "write", k1, 7), Op(4, 25, 1, "ok", "write", k1, 7)]
    logs = {0: term_entries(1, 1, [NOOP]),
            1: term_entries(1, 1, [NOOP, put(f"register/{k0}", 5)]),
            2: term_entries(1, 1, [NOOP, put(f"register/{k1}", 7)])}
    nodes = sharded(tmp_path, logs)
    write(nodes)
    out = check_sharded_nodes(tmp_path, NAMES, history, "register", SHARDS)
    assert {name: r["valid"] for name, r in out.items()} == {name: True for name in out}
    assert out["durability"]["groups"] == {"0": True, "1": True, "2": True}
    # a second leader of term 1 in shard 1's group only
    nodes["n3"].log("became-leader", group=2, term=1, leader="n3", role="leader")
    write(nodes)
    out = check_sharded_nodes(tmp_path, NAMES, history, "register", SHARDS)
    assert out["election-safety"]["valid"] is False
    assert out["election-safety"]["groups"] == {"0": True, "1": True, "2": False}
    assert out["election-safety"]["explanation"].startswith("group 2 (shard 1): ")
    assert out["log-matching"]["valid"] is True


def test_durability_looks_for_a_write_in_its_own_shards_group(tmp_path):
    # The acknowledged write of a shard-0 key is only in shard 1's log: lost for group 1.
    k0 = key_in(0)
    history = [Op(1, 10, 0, "invoke", "write", k0, 5), Op(2, 15, 0, "ok", "write", k0, 5)]
    nodes = sharded(tmp_path, {0: term_entries(1, 1, [NOOP]), 1: term_entries(1, 1, [NOOP]),
                               2: term_entries(1, 1, [NOOP, put(f"register/{k0}", 5)])})
    write(nodes)
    out = check_sharded_nodes(tmp_path, NAMES, history, "register", SHARDS)
    assert out["durability"]["valid"] is False
    assert out["durability"]["groups"] == {"0": True, "1": False, "2": True}
    assert "group 1 (shard 0)" in out["durability"]["explanation"]


def test_node_health_reads_the_whole_log(tmp_path):
    nodes = sharded(tmp_path, {0: term_entries(1, 1, [NOOP])})
    nodes["n2"].log("step-failed", level="error", group=0, type="append", error="KeyError(7)")
    write(nodes)
    out = check_sharded_nodes(tmp_path, NAMES, [], "register", SHARDS)
    assert out["node-health"]["valid"] is False and "step-failed" in out["node-health"]["explanation"]


def test_a_key_written_through_another_shards_group_is_caught(tmp_path):
    k0, k1 = key_in(0), key_in(1)
    logs = {0: term_entries(1, 1, [NOOP]),
            1: term_entries(1, 1, [NOOP, put(f"register/{k0}", 5)]),
            2: term_entries(1, 1, [NOOP, put(f"register/{k1}", 7)])}
    write(sharded(tmp_path, logs))
    out = check_sharded_nodes(tmp_path, NAMES, [], "register", SHARDS)
    assert out["shard-ownership"]["valid"] is True and out["shard-ownership"]["groups"] == 2
    # shard 1's key put through shard 0's group (group 1), as a node without the ownership check does
    logs[1] = term_entries(1, 1, [NOOP, put(f"register/{k0}", 5), put(f"register/{k1}", 9)])
    write(sharded(tmp_path / "b", logs))
    out = check_sharded_nodes(tmp_path / "b", NAMES, [], "register", SHARDS)
    own = out["shard-ownership"]
    assert own["valid"] is False
    assert f"group 1 (shard 0) holds a put of key 'register/{k1}' at index 3" in own["explanation"]
    assert own["violations"][0]["key_shard"] == 1
