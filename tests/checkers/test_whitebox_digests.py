"""replica-agreement: replicas that applied the same consistency-check entry hold the same state."""

from __future__ import annotations

from checkers.whitebox import check_replica_agreement, check_whitebox, read_cluster, replica_agreement_checker
from checkers.whitebox.nodedata import read_log
from ukehi.kv import CHECKSUM_COMMAND, KVStateMachine, decode_command, encode_command
from whitebox_nodes import HISTORY, healthy, write_all


def _digest_after(commands: list[dict]) -> str:
    kv = KVStateMachine()
    for i, cmd in enumerate(commands, start=1):
        kv.apply(i, i, encode_command(cmd))
    return kv.apply(len(commands) + 1, len(commands) + 1, CHECKSUM_COMMAND)["value"]["digest"]


def test_the_digest_follows_the_state_not_the_path():
    puts = [{"op": "put", "key": f"k{i}", "value": i} for i in range(5)]
    assert _digest_after(puts) == _digest_after(puts)
    # one value different -> another digest; the same values reached by a snapshot -> the same
    assert _digest_after(puts) != _digest_after(puts[:4] + [{"op": "put", "key": "k4", "value": 5}])
    a = KVStateMachine()
    for i, cmd in enumerate(puts, start=1):
        a.apply(i, i, encode_command(cmd))
    b = KVStateMachine()
    b.restore(a.snapshot())
    assert a.digest() == b.digest()
    b.apply(6, 6, encode_command({"op": "delete", "key": "k0"}))
    a.apply(6, 6, b"")  # a no-op at the same index: same position, other state
    assert a.digest() != b.digest()


def test_the_checksum_command_is_a_fixed_known_command():
    assert decode_command(CHECKSUM_COMMAND) == {"op": "checksum"}
    kv = KVStateMachine()
    kv.apply(1, 1, encode_command({"op": "put", "key": "x", "value": 1}))
    r = kv.apply(2, 2, CHECKSUM_COMMAND)
    assert r["ok"] and r["value"]["index"] == 2 and r["value"]["keys"] == 1
    assert r["value"]["digest"] == kv.digest() and kv.read("x") == 1


def _with_digests(tmp_path, digests: dict[str, str], group: int | None = None, index: int = 7):
    nodes = healthy(tmp_path)
    for name, digest in digests.items():
        fields = {"index": index, "term": 1, "digest": digest, "keys": 5}
        if group is not None:
            fields["group"] = group
        nodes[name].log("state-digest", **fields)
    return nodes


def test_replicas_that_agree_are_valid_and_counted(tmp_path):
    write_all(_with_digests(tmp_path, {"n1": "aa", "n2": "aa", "n3": "aa"}))
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is True and result["compared"] == 1 and result["digests"] == 3


def test_a_replica_with_another_state_is_caught_and_named(tmp_path):
    write_all(_with_digests(tmp_path, {"n1": "aa", "n2": "aa", "n3": "bb"}))
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is False
    assert "Raft group 0" in result["explanation"] and "index 7" in result["explanation"]
    assert "n3 (pid 101) digest bb" in result["explanation"]
    assert result["disagreements"][0]["index"] == 7


def test_groups_are_compared_apart(tmp_path):
    # A sharded node logs group=G: the same index in two groups is two checkpoints.
    nodes = _with_digests(tmp_path, {"n1": "aa", "n2": "aa"}, group=3)
    nodes["n3"].log("state-digest", group=4, index=7, term=1, digest="cc", keys=1)
    write_all(nodes)
    check = replica_agreement_checker(tmp_path, ["n1", "n2", "n3"])
    result = check()
    assert result["valid"] is True and result["checkpoints"] == 2 and result["compared"] == 1
    nodes["n3"].log("state-digest", group=3, index=7, term=1, digest="dd", keys=1)
    write_all(nodes)
    result = check()
    assert result["valid"] is False and "Raft group 3" in result["explanation"]


def test_a_node_whose_replay_left_a_hole_is_excused_until_it_is_wiped(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n3"].start(policy="alert-and-continue")
    nodes["n3"].log("log-hole", level="warning", missing_from=4)
    for name, digest in (("n1", "aa"), ("n2", "aa"), ("n3", "bb")):
        nodes[name].log("state-digest", index=9, term=1, digest=digest, keys=5)
    write_all(nodes)
    logs = {n: read_log(tmp_path / "nodes" / n / "node.log") for n in nodes}
    result = check_replica_agreement(logs)
    assert result["valid"] is True and result["excused"][0]["node"] == "n3"
    assert "log-hole" in result["excused"][0]["excused"]
    # wiped and rejoined (a fresh replay with join=true): judged again
    nodes["n3"].start(join=True)
    nodes["n3"].log("state-digest", index=12, term=1, digest="cc", keys=5)
    nodes["n1"].log("state-digest", index=12, term=1, digest="dd", keys=5)
    write_all(nodes)
    logs = {n: read_log(tmp_path / "nodes" / n / "node.log") for n in nodes}
    assert check_replica_agreement(logs)["valid"] is False


def test_no_digest_is_valid_with_a_note(tmp_path):
    write_all(healthy(tmp_path))
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is True and result["compared"] == 0 and "nothing compared" in result["note"]


def test_a_lossy_snapshot_restore_is_caught_at_the_snapshot_index(tmp_path):
    # n1 made a snapshot at 40 holding a lock; n3 installed it but its restore read the
    # lock's owner from the wrong field: the two digests at index 40 differ, even though
    # no consistency-check entry was ever applied.
    kv = KVStateMachine()
    kv.apply(1, 1, encode_command({"op": "acquire", "lock": "L", "owner": "c1", "ttl_ms": 60_000, "now_ms": 5}))
    data = kv.snapshot()
    from ukehi.kv import digest_of

    restored = KVStateMachine()
    restored.restore(data)
    assert restored.digest() == digest_of(data)  # a faithful restore: the maker's digest
    from ukehi.kv import LockInfo

    held = restored._locks["L"]
    restored._locks["L"] = LockInfo(str(held.token), held.token, held.expires_at_ms)
    nodes = healthy(tmp_path)
    nodes["n1"].log("snapshot-created", index=40, term=2, bytes=len(data), reason="threshold", digest=digest_of(data))
    nodes["n3"].log("snapshot-installed", index=40, term=2, bytes=len(data), members="n1,n2,n3",
                    digest=restored.digest())
    write_all(nodes)
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is False, result
    assert "after applying the same log up to index 40" in result["explanation"]
    assert "n1 (pid" in result["explanation"] and "snapshot-created" in result["explanation"]
    assert "n3 (pid" in result["explanation"] and "snapshot-installed" in result["explanation"]


def test_a_snapshot_restored_from_disk_is_compared_too(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].log("snapshot-created", index=40, term=2, bytes=10, reason="threshold", digest="aa")
    nodes["n2"].log("snapshot-restored", index=40, term=2, bytes=10, digest="aa")
    write_all(nodes)
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is True and result["compared"] == 1, result
    nodes["n2"].log("snapshot-restored", index=40, term=2, bytes=10, digest="ab")
    write_all(nodes)
    result = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")["replica-agreement"]
    assert result["valid"] is False and "snapshot-restored" in result["explanation"], result
