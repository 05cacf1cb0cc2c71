"""White-box durability: acknowledged writes are in the committed log of a majority at the end."""

from __future__ import annotations

from checkers.history import Op
from checkers.whitebox import check_durability, read_cluster
from whitebox_nodes import HISTORY, LOG, Node, acquire, healthy, ok_write, put, term_entries, write_all


def check(tmp_path, history, workload="register"):
    return check_durability(read_cluster(tmp_path / "nodes"), history, workload)


def test_acknowledged_write_held_by_one_node_only_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    # acknowledged before a quorum had it: only n1 committed index 7
    nodes["n1"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7)).hard_state(1, 7)
    write_all(nodes)
    result = check(tmp_path, HISTORY + ok_write(20, 7, 70))
    assert result["valid"] is False
    v = result["violations"][0]
    assert v["acknowledged"] == 1 and v["on_majority"] == 0 and v["op_indexes"] == [21]
    assert "put register/7 70" in result["explanation"] and "index(es) [7]" in result["explanation"]


def test_acknowledged_write_on_a_majority_passes(tmp_path):
    nodes = healthy(tmp_path)
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(1, 7, [put("register/7", 70)], seq=7)).hard_state(1, 7)
    write_all(nodes)
    result = check(tmp_path, HISTORY + ok_write(20, 7, 70))
    assert result["valid"] is True, result
    assert result["acknowledged"] == 6 and result["voters"] == ["n1", "n2", "n3"]


def test_two_acknowledged_writes_of_one_value_need_two_entries(tmp_path):
    write_all(healthy(tmp_path))
    history = HISTORY + ok_write(20, 1, 10, process=9)  # register/1 = 10 acknowledged twice, logged once
    result = check(tmp_path, history)
    assert result["valid"] is False
    assert "1 of 2 acknowledged write op(s) put register/1 10" in result["explanation"]


def test_an_uncommitted_entry_does_not_count(tmp_path):
    nodes = healthy(tmp_path)
    for name in ("n1", "n2", "n3"):  # everyone holds index 7, nobody committed it
        nodes[name].wal(term_entries(1, 7, [put("register/7", 70)], seq=7))
    write_all(nodes)
    assert check(tmp_path, HISTORY + ok_write(20, 7, 70))["valid"] is False


def test_nodes_whose_wal_a_policy_cut_are_excused_but_one_copy_is_needed(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7)).hard_state(1, 7)
    for name in ("n2", "n3"):  # the disk nemesis destroyed their copies; truncate-to-last-good cut them
        nodes[name].start(entries=6, term=1, commit=6).log(
            "corruption-report", level="warning", kind="crc-mismatch", action="cut", index=7)
    write_all(nodes)
    assert check(tmp_path, HISTORY + ok_write(20, 7, 70))["valid"] is True
    assert check(tmp_path, HISTORY + ok_write(20, 8, 80))["valid"] is False  # nobody has this one


def test_acquire_is_matched_by_its_fencing_token(tmp_path):
    nodes = {}
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).wal(term_entries(1, 1, [b"\x01", acquire("lock/0", "w1")])).hard_state(1, 2)
        node.start()
        nodes[name] = node
    write_all(nodes)
    granted = (1 << 32) | 2
    ok = [Op(1, 1, 0, "invoke", "acquire", 0), Op(2, 2, 0, "ok", "acquire", 0, granted)]
    assert check(tmp_path, ok, "fencing")["valid"] is True
    wrong = [Op(1, 1, 0, "invoke", "acquire", 0), Op(2, 2, 0, "ok", "acquire", 0, granted + 1)]
    result = check(tmp_path, wrong, "fencing")
    assert result["valid"] is False and "acquire with token 0x100000003" in result["explanation"]


def test_voters_come_from_the_last_committed_config(tmp_path):
    nodes = healthy(tmp_path)
    config = b'\x02{"learners":[],"outgoing":[],"voters":["n1","n2"]}'
    for name in ("n1", "n2", "n3"):
        nodes[name].wal(term_entries(1, 7, [config], seq=7)).hard_state(1, 7)
    nodes["n1"].wal(term_entries(1, 8, [put("register/8", 80)], seq=8)).hard_state(1, 8)
    write_all(nodes)
    result = check(tmp_path, HISTORY + ok_write(20, 8, 80))
    assert result["voters"] == ["n1", "n2"]
    assert result["valid"] is False  # one of two voters is not a majority


def test_a_follower_holding_the_entry_counts_before_it_learns_the_commit(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7)).hard_state(1, 7)  # the leader committed 7
    nodes["n2"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7))  # n2 holds it, commit still 6
    write_all(nodes)
    assert check(tmp_path, HISTORY + ok_write(20, 7, 70))["valid"] is True


def test_entries_compacted_into_snapshots_are_matched_by_what_was_applied(tmp_path):
    nodes = {}
    for name in ("n1", "n2", "n3"):  # every node compacted indexes 1..6; only snapshots and applied lines remain
        node = Node(tmp_path, name).snapshot(6, 1).hard_state(1, 6)
        node.start().applied(LOG)
        nodes[name] = node
    write_all(nodes)
    result = check(tmp_path, HISTORY)
    assert result["valid"] is True and result["unverifiable"] == 0, result
    lost = check(tmp_path, HISTORY + ok_write(20, 9, 90))  # applied nowhere: lost, not unverifiable
    assert lost["valid"] is False and "put register/9 90" in lost["explanation"]


def test_compacted_indexes_nobody_logged_applying_are_unverifiable_not_lost(tmp_path):
    nodes = {}
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).snapshot(6, 1).hard_state(1, 6)
        node.start()  # a log level above info: no applied lines
        nodes[name] = node
    write_all(nodes)
    result = check(tmp_path, HISTORY)
    assert result["valid"] is True and result["unverifiable"] == 5


def test_an_acquire_compacted_into_snapshots_is_unverifiable_not_lost(tmp_path):
    # Its command carries the leader's clock, so its CRC cannot be rebuilt from the history
    # (the simulator's fencing runs with snapshot_threshold=25 compact every acquire).
    log = term_entries(1, 1, [b"\x01", acquire("lock/0", "w1")])
    nodes = {}
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).snapshot(2, 1).hard_state(1, 2)
        node.start().applied(log)
        nodes[name] = node
    write_all(nodes)
    acked = [Op(1, 1, 0, "invoke", "acquire", 0), Op(2, 2, 0, "ok", "acquire", 0, (1 << 32) | 2)]
    result = check(tmp_path, acked, "fencing")
    assert result["valid"] is True and result["unverifiable"] == 1, result
    more = acked + [op for seq in (3, 4) for op in (Op(seq * 2 - 1, seq * 2 - 1, seq, "invoke", "acquire", 0),
                                                    Op(seq * 2, seq * 2, seq, "ok", "acquire", 0, (1 << 32) | seq))]
    lost = check(tmp_path, more, "fencing")  # two compacted entries cannot hold three acquires
    assert lost["valid"] is False and "acquire with token" in lost["explanation"]


def txn(ops) -> bytes:
    from ukehi.kv import encode_command

    return b"\x00" + encode_command({"op": "txn", "ops": ops})


def ok_txn(index: int, sent: list, seen: list, process: int = 0) -> list[Op]:
    return [Op(index, index * 10, process, "invoke", "txn", None, sent),
            Op(index + 1, index * 10 + 5, process, "ok", "txn", None, seen)]


def test_acknowledged_list_append_transactions_are_matched_to_txn_entries(tmp_path):
    # The txn entry holds the micro-ops as sent (a read's value None); the history holds
    # what the read saw. Keys are under the workload's prefix (la/).
    entry = txn([["r", "la/3", None], ["append", "la/3", 7], ["append", "la/4", 8]])
    nodes = healthy(tmp_path)
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(1, 7, [entry], seq=7)).hard_state(1, 7)
    write_all(nodes)
    sent = [["r", 3, None], ["append", 3, 7], ["append", 4, 8]]
    seen = [["r", 3, [1, 2]], ["append", 3, 7], ["append", 4, 8]]
    result = check(tmp_path, ok_txn(20, sent, seen), "list-append")
    assert result["valid"] is True and result["acknowledged"] == 1, result
    # An acknowledged append that no committed entry holds is lost.
    lost = ok_txn(30, [["append", 5, 9]], [["append", 5, 9]], process=2)
    result = check(tmp_path, ok_txn(20, sent, seen) + lost, "list-append")
    assert result["valid"] is False and "txn [append la/5 9]" in result["explanation"], result
    # Read-only transactions write nothing and are not counted.
    ro = ok_txn(40, [["r", 3, None]], [["r", 3, [7]]], process=3)
    assert check(tmp_path, ok_txn(20, sent, seen) + ro, "list-append")["acknowledged"] == 1


def test_txn_signature_rebuilds_the_command_crc():
    import zlib

    from checkers.whitebox.durability import op_signature, signature_crc

    entry = txn([["w", "rw/1", 5], ["r", "rw/2", None]])
    op = Op(2, 5, 0, "ok", "txn", None, [["w", 1, 5], ["r", 2, 4]])
    assert signature_crc(op_signature(op, "rw/")) == zlib.crc32(entry)
