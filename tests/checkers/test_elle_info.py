"""Transactions whose outcome is unknown (``info``) and ones that failed, as Elle treats them.

An ``info`` transaction may or may not have taken effect: its writes are real when a
read shows them (no aborted or garbage read), and nothing when none does (no lost write,
no lost update, no order after it). A ``fail`` one certainly did not take effect: a read
of its write is an aborted read (G1a). Each history is also judged by the brute-force
reference, which tries every ``info`` transaction both ways.
"""

import pytest

from checkers.elle import check
from checkers.elle.bruteforce import serializable
from checkers.elle.txn import history_of

A, R, W = "append", "r", "w"


def judged(specs, model="list-append"):
    history = history_of(specs)
    return check(history, model), serializable(history, strict=True)


# name -> (model, specs (process, type, mops, start, end), anomaly types expected)
CASES = {
    # an info append that a later read shows: it took effect, and that is fine
    "info append read later": ("list-append", [
        (0, "info", [(A, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", (1,))], 2, 3)], set()),
    # ... also read by the final read after other appends
    "info append inside a longer list": ("list-append", [
        (0, "ok", [(A, "x", 1)], 0, 1),
        (1, "info", [(A, "x", 2)], 2, 3),
        (2, "ok", [(A, "x", 3)], 4, 5),
        (3, "ok", [(R, "x", (1, 2, 3))], 6, 7)], set()),
    # an info append that no read ever shows: it did not take effect; not a lost write
    "info append never read": ("list-append", [
        (0, "info", [(A, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", ())], 2, 3)], set()),
    # the same with the append acknowledged: a lost write (the final read misses it)
    "ok append never read": ("list-append", [
        (0, "ok", [(A, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", ())], 2, 3)], {"G-single-realtime"}),
    # what a leader that answers reads from its uncommitted log (read-uncommitted-txn) leaves
    # behind when it is cut off: an info append that one read shows and a later read lacks
    # (it was read before it committed, then lost with the leader's log tail)
    "info append read, then gone from a later read": ("list-append", [
        (0, "info", [(A, "x", 1)], 0, 10),
        (1, "ok", [(R, "x", (1,))], 2, 3),
        (2, "ok", [(R, "x", ())], 4, 12)], {"G-single-realtime"}),
    # ... its valid neighbour: the two reads overlap, so the empty one may come first
    "info append read, and missed by an overlapping read": ("list-append", [
        (0, "info", [(A, "x", 1)], 0, 10),
        (1, "ok", [(R, "x", (1,))], 2, 5),
        (2, "ok", [(R, "x", ())], 4, 12)], set()),
    # ... and when the new leader appends to the key: two lists that are no prefixes
    "info append read, then another append in its place": ("list-append", [
        (0, "ok", [(A, "x", 9)], 0, 1),
        (1, "info", [(A, "x", 1)], 1, 10),
        (2, "ok", [(R, "x", (9, 1))], 2, 3),
        (3, "ok", [(A, "x", 2)], 4, 5),
        (4, "ok", [(R, "x", (9, 2))], 11, 12)], {"incompatible-order"}),
    # a failed append that a read shows: an aborted read
    "fail append read": ("list-append", [
        (0, "fail", [(A, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", (1,))], 2, 3)], {"G1a"}),
    # a process that goes on after an info (Jepsen retires it; other histories may not):
    # the info append may take effect after the process's next transaction, which missed it
    "info append applied after the process's next txn": ("list-append", [
        (0, "info", [(A, "x", 1)], 0, 1),
        (0, "ok", [(R, "x", ())], 2, 3),
        (1, "ok", [(R, "x", (1,))], 4, 5)], set()),
    # the same with an ok append: the process's own read missed its acknowledged append
    "ok append missed by its process's next txn": ("list-append", [
        (0, "ok", [(A, "x", 1)], 0, 1),
        (0, "ok", [(R, "x", ())], 2, 3),
        (1, "ok", [(R, "x", (1,))], 4, 5)], {"G-single-process"}),
    # read-then-append by two transactions from the same state: only ok ones are lost updates
    "info read-modify-write is no lost update": ("list-append", [
        (0, "ok", [(R, "x", ()), (A, "x", 1)], 0, 10),
        (1, "info", [(R, "x", ()), (A, "x", 2)], 0, 10),
        (2, "ok", [(R, "x", (1,))], 11, 12)], set()),
    # read-write registers
    "rw info write read later": ("rw-register", [
        (0, "info", [(W, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", 1)], 2, 3)], set()),
    "rw info write never read": ("rw-register", [
        (0, "info", [(W, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", None)], 2, 3)], set()),
    "rw fail write read": ("rw-register", [
        (0, "fail", [(W, "x", 1)], 0, 1),
        (1, "ok", [(R, "x", 1)], 2, 3)], {"G1a"}),
    "rw info write applied after the process's next txn": ("rw-register", [
        (0, "info", [(W, "x", 1)], 0, 1),
        (0, "ok", [(R, "x", None)], 2, 3),
        (1, "ok", [(R, "x", 1)], 4, 5)], set()),
    "rw info write read, then the initial state read later": ("rw-register", [
        (0, "info", [(W, "x", 1)], 0, 10),
        (1, "ok", [(R, "x", 1)], 2, 3),
        (2, "ok", [(R, "x", None)], 4, 12)], {"G-single-realtime"}),
    "rw info write, two readers of nil": ("rw-register", [
        (0, "info", [(W, "x", 1), (W, "y", 1)], 0, 1),
        (1, "ok", [(R, "x", None), (R, "y", None)], 2, 3),
        (2, "ok", [(R, "x", None)], 2, 3)], set()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_info_and_fail_transactions(name):
    model, specs, expected = CASES[name]
    result, reference = judged(specs, model)
    assert set(result["anomaly_types"]) == expected, result["explanation"]
    assert result["valid"] is (not expected)
    # the brute-force reference (info transactions tried both ways) agrees
    assert reference is (not expected)


def test_info_writes_are_in_the_version_order_only_when_read():
    result, _ = judged(CASES["info append inside a longer list"][1])
    assert result["txns"] == {"ok": 3, "info": 1, "fail": 0}
    # every element read has a writer: the info one's append is no garbage
    assert "garbage-read" not in result["anomaly_types"] and "G1a" not in result["anomaly_types"]


def test_an_anomaly_names_its_ops_and_when_it_became_visible():
    """Each anomaly lists the invocation indexes of its transactions (``ops``) and the
    result the history index at which the earliest became visible (regress's first
    violation)."""
    # T0 fails (ops 0, 1); T2 reads its append (ops 2, 3)
    specs = [(0, "fail", [(A, "x", 1)], 0, 1), (1, "ok", [(R, "x", (1,))], 2, 3)]
    result, _ = judged(specs)
    g1a = result["anomalies"]["G1a"][0]
    assert g1a["ops"] == [0, 2]
    assert result["violation_indexes"] == [3]  # the read's completion
    # a cycle: both transactions' invocations, visible when the later one completed
    specs = [(0, "ok", [(A, "x", 1)], 0, 1), (1, "ok", [(R, "x", ())], 2, 5),
             (2, "ok", [(A, "y", 1)], 3, 4)]
    result, _ = judged(specs)
    cycle = result["anomalies"]["G-single-realtime"][0]
    assert cycle["ops"] == [0, 2]
    assert result["violation_indexes"] == [5]
    # a valid history has none
    result, _ = judged([(0, "ok", [(A, "x", 1)], 0, 1), (1, "ok", [(R, "x", (1,))], 2, 3)])
    assert result["violation_indexes"] == []
