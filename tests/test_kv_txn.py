"""append and txn in the state machine and the wire protocol (issue 14)."""

import msgpack
import pytest

from ukehi import wire
from ukehi.kv import CommandError, KVStateMachine, decode_command, encode_command


def apply(sm, cmd, index=None):
    index = sm.last_applied + 1 if index is None else index
    return sm.apply(index, index, encode_command(cmd))


def txn(*ops):
    return {"op": "txn", "ops": [list(m) for m in ops]}


def test_append_builds_a_list_and_reports_its_log_index():
    sm = KVStateMachine()
    assert apply(sm, {"op": "append", "key": "k", "value": 1}) == {"ok": True, "value": {"index": 1}}
    assert apply(sm, {"op": "append", "key": "k", "value": "two"})["value"] == {"index": 2}
    assert sm.read("k") == [1, "two"]


def test_append_to_a_scalar_is_refused_and_changes_nothing():
    sm = KVStateMachine()
    apply(sm, {"op": "put", "key": "k", "value": 5})
    r = apply(sm, {"op": "append", "key": "k", "value": 1})
    assert r["ok"] is False and r["error"] == "bad_request" and "not a list" in r["message"]
    assert sm.read("k") == 5


def test_txn_reads_see_state_and_own_earlier_writes_in_order():
    sm = KVStateMachine()
    apply(sm, {"op": "append", "key": "x", "value": 1})
    r = apply(sm, txn(("r", "x", None), ("append", "x", 2), ("r", "x", None), ("r", "y", None),
                      ("w", "y", 7), ("r", "y", None)))
    assert r["ok"] is True and r["value"]["index"] == 2
    assert r["value"]["ops"] == [["r", "x", [1]], ["append", "x", 2], ["r", "x", [1, 2]], ["r", "y", None],
                                 ["w", "y", 7], ["r", "y", 7]]
    assert sm.read("x") == [1, 2] and sm.read("y") == 7


def test_txn_is_all_or_nothing():
    sm = KVStateMachine()
    apply(sm, {"op": "put", "key": "s", "value": "scalar"})
    r = apply(sm, txn(("append", "x", 1), ("w", "y", 2), ("append", "s", 3)))
    assert r["ok"] is False and "nothing applied" in r["message"]
    assert sm.read("x") is None and sm.read("y") is None and sm.read("s") == "scalar"
    # a write earlier in the same transaction decides too: w then append is refused
    r = apply(sm, txn(("w", "z", 1), ("append", "z", 2)))
    assert r["ok"] is False and sm.read("z") is None


def test_reads_never_alias_stored_lists():
    sm = KVStateMachine()
    apply(sm, {"op": "append", "key": "x", "value": 1})
    seen = apply(sm, txn(("r", "x", None)))["value"]["ops"][0][2]
    apply(sm, {"op": "append", "key": "x", "value": 2})
    assert seen == [1] and sm.read("x") == [1, 2]


def test_read_txn_and_overlay_do_not_mutate():
    sm = KVStateMachine()
    apply(sm, {"op": "append", "key": "x", "value": 1})
    overlay = {}
    sm.txn_overlay([["append", "x", 2], ["w", "y", 3]], overlay)
    assert sm.read_txn([["r", "x", None], ["r", "y", None]], overlay) == [["r", "x", [1, 2]], ["r", "y", 3]]
    assert sm.read_txn([["r", "x", None], ["r", "y", None]]) == [["r", "x", [1]], ["r", "y", None]]
    assert sm.read("x") == [1] and sm.read("y") is None


def test_snapshot_round_trips_lists_and_replicas_agree():
    a, b = KVStateMachine(), KVStateMachine()
    cmds = [{"op": "append", "key": "x", "value": i} for i in range(3)] + [txn(("w", "y", "v"), ("append", "z", 9))]
    results = [apply(a, c) for c in cmds]
    assert [apply(b, c) for c in cmds] == results
    c = KVStateMachine()
    c.restore(a.snapshot())
    assert c.items() == a.items() == [("x", [0, 1, 2]), ("y", "v"), ("z", [9])]
    assert c.snapshot() == a.snapshot()


@pytest.mark.parametrize("ops, match", [
    ([], "list of 1..64"),
    ([["r", "x", 1]], "list of 1..64"),                 # a read carries no value
    ([["w", "x", [1]]], "list of 1..64|flat map"),      # values are scalars
    ([["inc", "x", 1]], "list of 1..64"),
    ([["w", 3, 1]], "list of 1..64"),                   # keys are strings
    ([["r", "x", None]] * 65, "list of 1..64|not valid msgpack"),
])
def test_bad_transactions_are_refused_by_the_codec(ops, match):
    with pytest.raises(CommandError, match=match):
        encode_command({"op": "txn", "ops": ops})
    with pytest.raises(CommandError, match=match):
        decode_command(msgpack.packb({"op": "txn", "ops": ops}))
    with pytest.raises(wire.ProtocolError):
        wire.encode_frame(wire.MsgType.TXN, 1, {"ops": ops})


def test_only_txn_may_nest():
    with pytest.raises(CommandError, match="flat map"):
        decode_command(msgpack.packb({"op": "append", "key": "x", "value": [1]}))
    ok = decode_command(encode_command(txn(("r", "x", None), ("append", "x", 1))))
    assert ok["ops"] == [["r", "x", None], ["append", "x", 1]]


def test_wire_round_trip_of_append_and_txn():
    body = {"ops": [["r", "k", None], ["append", "k", 4], ["w", "j", "v"]]}
    frame = wire.decode_frame(wire.encode_frame(wire.MsgType.TXN, 7, body))
    assert frame.type is wire.MsgType.TXN and frame.body == body
    assert wire.MsgType.TXN in wire.CLIENT_REQUESTS and wire.MsgType.APPEND in wire.CLIENT_REQUESTS
    assert wire.MsgType.TXN not in wire.ADMIN_REQUESTS
