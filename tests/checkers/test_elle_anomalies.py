"""Each anomaly from a tiny hand-written history that has exactly it, and its valid
neighbour that differs from it in one micro-op (or one reported log index)."""

import pytest

from checkers.elle import check, ruled_out
from checkers.elle.bruteforce import serializable
from checkers.elle.txn import history_of

A, R, W = "append", "r", "w"


def conc(*txns, types=None):
    """Every transaction concurrent with every other, each its own process."""
    types = types or {}
    return [(p, types.get(p, "ok"), mops, 0, 100) for p, mops in enumerate(txns)]


def seq(*txns, same_process=False):
    """Each transaction completes before the next begins."""
    return [(0 if same_process else p, "ok", mops, 2 * p, 2 * p + 1) for p, mops in enumerate(txns)]


# name -> (model, anomalous specs, neighbour specs, expected anomaly types, raft of each)
CASES = {
    "G0": ("list-append",
           conc([(A, "x", 1), (A, "y", 1)], [(A, "x", 2), (A, "y", 2)], [(R, "x", (1, 2)), (R, "y", (2, 1))]),
           conc([(A, "x", 1), (A, "y", 1)], [(A, "x", 2), (A, "y", 2)], [(R, "x", (1, 2)), (R, "y", (1, 2))]),
           {"G0"}),
    "G1a": ("list-append",
            conc([(A, "x", 1)], [(R, "x", (1,))], types={0: "fail"}),
            conc([(A, "x", 1)], [(R, "x", ())], types={0: "fail"}),
            {"G1a"}),
    "G1b": ("list-append",
            conc([(A, "x", 1), (A, "x", 2)], [(R, "x", (1,))]),
            conc([(A, "x", 1), (A, "x", 2)], [(R, "x", (1, 2))]),
            {"G1b"}),
    "G1c": ("list-append",
            conc([(A, "x", 1), (R, "y", (1,))], [(A, "y", 1), (R, "x", (1,))]),
            conc([(A, "x", 1), (R, "y", ())], [(A, "y", 1), (R, "x", (1,))]),
            {"G1c"}),
    "G-single": ("list-append",
                 conc([(R, "x", ()), (R, "y", (1,))], [(A, "x", 1), (A, "y", 1)]),
                 conc([(R, "x", ()), (R, "y", ())], [(A, "x", 1), (A, "y", 1)]),
                 {"G-single"}),
    "G-nonadjacent": ("list-append",
                      conc([(R, "x", ()), (R, "y", (1,))], [(A, "x", 1)], [(R, "x", (1,)), (R, "y", ())],
                           [(A, "y", 1)]),
                      conc([(R, "x", ()), (R, "y", (1,))], [(A, "x", 1)], [(R, "x", ()), (R, "y", ())],
                           [(A, "y", 1)]),
                      {"G-nonadjacent"}),
    "G2-item": ("list-append",
                conc([(R, "x", ()), (R, "y", ()), (A, "x", 1)], [(R, "x", ()), (R, "y", ()), (A, "y", 1)]),
                conc([(R, "x", ()), (R, "y", ()), (A, "x", 1)], [(R, "x", (1,)), (R, "y", ()), (A, "y", 1)]),
                {"G2-item"}),
    "lost-update": ("list-append",
                    conc([(R, "x", ()), (A, "x", 1)], [(R, "x", ()), (A, "x", 2)], [(R, "x", (1, 2))]),
                    conc([(R, "x", ()), (A, "x", 1)], [(R, "x", (1,)), (A, "x", 2)], [(R, "x", (1, 2))]),
                    {"lost-update", "G-single"}),  # a lost update that a read shows is also a cycle
    "internal": ("list-append",
                 conc([(A, "x", 1), (R, "x", ())]),
                 conc([(A, "x", 1), (R, "x", (1,))]),
                 {"internal"}),
    "future-read": ("list-append",
                    conc([(R, "x", (1,)), (A, "x", 1)]),
                    conc([(R, "x", ()), (A, "x", 1)]),
                    {"future-read"}),
    "incompatible-order": ("list-append",
                           conc([(A, "x", 1)], [(A, "x", 2)], [(R, "x", (1, 2))], [(R, "x", (2, 1))]),
                           conc([(A, "x", 1)], [(A, "x", 2)], [(R, "x", (1, 2))], [(R, "x", (1, 2))]),
                           {"incompatible-order"}),
    "incompatible-order (torn transaction)": ("list-append",
                                              conc([(A, "x", 1), (A, "x", 2)], [(R, "x", (2,))]),
                                              conc([(A, "x", 1), (A, "x", 2)], [(R, "x", (1, 2))]),
                                              {"incompatible-order"}),
    "duplicate-elements": ("list-append",
                           conc([(A, "x", 1)], [(R, "x", (1, 1))]),
                           conc([(A, "x", 1)], [(R, "x", (1,))]),
                           {"duplicate-elements"}),
    "garbage-read": ("list-append",
                     conc([(A, "x", 1)], [(R, "x", (9,))]),
                     conc([(A, "x", 1)], [(R, "x", (1,))]),
                     {"garbage-read"}),
    "G-single-realtime": ("list-append",
                          seq([(A, "x", 1)], [(R, "x", ())]),
                          [(0, "ok", [(A, "x", 1)], 0, 2), (1, "ok", [(R, "x", ())], 1, 3)],
                          {"G-single-realtime"}),
    "G-single-process": ("list-append",
                         seq([(A, "x", 1)], [(R, "x", ())], same_process=True),
                         seq([(A, "x", 1)], [(R, "x", (1,))], same_process=True),
                         {"G-single-process"}),
    "G0-realtime": ("list-append",
                    seq([(A, "x", 1)], [(A, "x", 2)], [(R, "x", (2, 1))]),
                    seq([(A, "x", 1)], [(A, "x", 2)], [(R, "x", (1, 2))]),
                    {"G0-realtime"}),
    "G1c-realtime": ("list-append",
                     seq([(R, "y", (1,))], [(A, "y", 1)]),
                     seq([(R, "y", ())], [(A, "y", 1)]),
                     {"G1c-realtime"}),
    "G2-item-realtime": ("list-append",
                         [(0, "ok", [(A, "y", 1)], 0, 1), (1, "ok", [(R, "x", ())], 2, 3),
                          (2, "ok", [(R, "y", ()), (A, "x", 1)], 0, 5)],
                         [(0, "ok", [(A, "y", 1)], 0, 1), (1, "ok", [(R, "x", ())], 2, 3),
                          (2, "ok", [(R, "y", (1,)), (A, "x", 1)], 0, 5)],
                         {"G2-item-realtime"}),
    # read-write registers
    "rw G1a": ("rw-register",
               conc([(W, "x", 1)], [(R, "x", 1)], types={0: "fail"}),
               conc([(W, "x", 1)], [(R, "x", None)], types={0: "fail"}),
               {"G1a"}),
    "rw G1b": ("rw-register",
               conc([(W, "x", 1), (W, "x", 2)], [(R, "x", 1)]),
               conc([(W, "x", 1), (W, "x", 2)], [(R, "x", 2)]),
               {"G1b"}),
    "rw internal": ("rw-register",
                    conc([(W, "x", 1), (R, "x", None)]),
                    conc([(W, "x", 1), (R, "x", 1)]),
                    {"internal"}),
    "rw garbage-read": ("rw-register",
                        conc([(W, "x", 1)], [(R, "x", 5)]),
                        conc([(W, "x", 1)], [(R, "x", 1)]),
                        {"garbage-read"}),
    "rw future-read": ("rw-register",
                       conc([(R, "x", 1), (W, "x", 1)]),
                       conc([(R, "x", None), (W, "x", 1)]),
                       {"future-read"}),
    "rw G-single": ("rw-register",
                    conc([(R, "x", None), (R, "y", 1)], [(W, "x", 1), (W, "y", 1)]),
                    conc([(R, "x", None), (R, "y", None)], [(W, "x", 1), (W, "y", 1)]),
                    {"G-single"}),
    "rw lost-update": ("rw-register",
                       conc([(R, "x", None), (W, "x", 1)], [(R, "x", None), (W, "x", 2)]),
                       conc([(R, "x", None), (W, "x", 1)], [(R, "x", 1), (W, "x", 2)]),
                       {"lost-update", "G2-item"}),
}

# rw-register cases whose version order comes from the Raft index each write reports
RAFT_CASES = {
    "rw G0 (raft order)": (conc([(W, "x", 1), (W, "y", 1)], [(W, "x", 2), (W, "y", 2)]),
                           {0: [1, 4], 1: [2, 3]}, {0: [1, 3], 1: [2, 4]}, {"G0"}),
    "rw cyclic-versions": (conc([(W, "x", 1)], [(R, "x", 1), (W, "x", 2)]),
                           {0: 5, 1: 3}, {0: 5, 1: 7}, {"cyclic-versions"}),
    "rw G-single-realtime": (seq([(W, "x", 1)], [(R, "x", None)]), {0: 1}, {0: 1}, None),
}


def types_of(result):
    return set(result["anomaly_types"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_anomaly_and_its_valid_neighbour(name):
    model, bad, good, expected = CASES[name]
    result = check(history_of(bad), model)
    assert types_of(result) == expected, result["explanation"]
    assert result["valid"] is False
    assert result["not"], "an anomaly rules out at least one model"
    neighbour = check(history_of(good), model)
    assert neighbour["anomaly_types"] == [], neighbour["explanation"]
    assert neighbour["valid"] is True
    # the brute-force reference agrees on both (every case here is strict-serializable or not)
    assert serializable(history_of(bad), strict=True) is False
    assert serializable(history_of(good), strict=True) is True


@pytest.mark.parametrize("name", sorted(RAFT_CASES))
def test_raft_index_is_the_version_order(name):
    specs, raft_bad, raft_good, expected = RAFT_CASES[name]
    if expected is None:  # same history: real time makes it invalid, overlap makes it valid
        result = check(history_of(specs, raft_bad), "rw-register")
        assert types_of(result) == {"G-single-realtime"}
        overlapping = [(0, "ok", [(W, "x", 1)], 0, 2), (1, "ok", [(R, "x", None)], 1, 3)]
        assert check(history_of(overlapping, raft_bad), "rw-register")["valid"] is True
        return
    result = check(history_of(specs, raft_bad), "rw-register")
    assert types_of(result) == expected, result["explanation"]
    assert check(history_of(specs, raft_good), "rw-register")["anomaly_types"] == []
    assert serializable(history_of(specs, raft_bad)) is False
    assert serializable(history_of(specs, raft_good)) is True


def test_without_raft_index_the_rw_g0_is_invisible():
    """Blind writes alone give no version order: nothing can be inferred, nothing reported."""
    specs, _, _, _ = RAFT_CASES["rw G0 (raft order)"]
    assert check(history_of(specs), "rw-register")["anomaly_types"] == []


def test_models_ruled_out_and_weakest():
    _, bad, _, _ = CASES["G1c"]
    result = check(history_of(bad), "list-append")
    assert result["not"] == ["read-committed"]
    assert {"serializable", "snapshot-isolation", "strict-serializable"} <= set(result["also_not"])
    assert "read-uncommitted" not in result["also_not"]
    _, bad, _, _ = CASES["G2-item"]
    assert check(history_of(bad), "list-append")["not"] == ["repeatable-read"]
    _, bad, _, _ = CASES["G-single-realtime"]
    result = check(history_of(bad), "list-append")
    assert result["not"] == ["strict-serializable"] and result["also_not"] == []
    # asked only for serializability, a real-time anomaly does not make the history invalid
    assert check(history_of(bad), "list-append", consistency_models=["serializable"])["valid"] is True
    assert ruled_out(["G0"]) >= {"read-uncommitted", "read-committed", "serializable"}


def test_explanations_name_transactions_keys_and_values():
    _, bad, _, _ = CASES["G-single"]
    result = check(history_of(bad), "list-append")
    cycle = result["anomalies"]["G-single"][0]
    texts = [s["explanation"] for s in cycle["steps"]]
    t_read, t_app = cycle["txns"].keys() if "r x" in next(iter(cycle["txns"].values())) else \
        reversed(list(cycle["txns"].keys()))
    assert any(f"{t_read} read {t_app}'s append of 1 to key y" in t for t in texts), texts
    assert any(f"{t_read} read key x as []" in t and f"{t_app}'s" in t for t in texts), texts
    assert {s["type"] for s in cycle["steps"]} == {"rw", "wr"}
    assert cycle["cycle"][0] == cycle["cycle"][-1]
    svg = cycle["svg"]
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "rw k=x" in svg and "wr k=y" in svg
    assert "G-single" in result["explanation"] and "append of 1 to key y" in result["explanation"]


def test_realtime_explanation_names_both_ends():
    _, bad, _, _ = CASES["G-single-realtime"]
    cycle = check(history_of(bad), "list-append")["anomalies"]["G-single-realtime"][0]
    rt = [s for s in cycle["steps"] if s["type"] == "realtime"]
    assert len(rt) == 1 and "completed (history index 1" in rt[0]["explanation"]
    assert "began (index 2" in rt[0]["explanation"]


def test_info_append_counts_when_read_and_its_reads_do_not():
    specs = [(0, "info", [(A, "x", 1), (R, "y", None)], 0, 1), (1, "ok", [(R, "x", (1,))], 2, 3)]
    result = check(history_of(specs), "list-append")
    assert result["valid"] is True and result["txns"]["info"] == 1
    # an info append nobody saw is not lost: it may never have happened
    specs = [(0, "info", [(A, "x", 1)], 0, 1), (1, "ok", [(R, "x", ())], 2, 3)]
    assert check(history_of(specs), "list-append")["valid"] is True


def test_lost_acknowledged_append_is_caught_by_the_final_read():
    """The register workload's blind spot: an acknowledged write that a later read misses."""
    specs = [(0, "ok", [(A, "x", 1)], 0, 1), (1, "ok", [(A, "x", 2)], 2, 3), (2, "ok", [(R, "x", (2,))], 4, 5)]
    result = check(history_of(specs), "list-append")
    assert result["valid"] is False
    assert "G-single-realtime" in result["anomaly_types"] or "G0-realtime" in result["anomaly_types"]


def test_no_ok_transaction_is_unknown():
    specs = [(0, "fail", [(A, "x", 1)], 0, 1)]
    assert check(history_of(specs), "list-append")["valid"] == "unknown"


def test_bad_models_and_histories_are_errors():
    from checkers.elle import TxnError
    from checkers.history import Op
    with pytest.raises(ValueError, match="unknown consistency model"):
        check([], "list-append", consistency_models=["linearizable-ish"])
    with pytest.raises(ValueError, match="list-append or rw-register"):
        check([], "bank")
    with pytest.raises(TxnError, match="op index 0"):
        check([Op(index=0, time=0, process=0, type="invoke", f="read")], "list-append")
    with pytest.raises(TxnError, match="micro-op"):
        check([Op(index=0, time=0, process=0, type="invoke", f="txn", value=(("inc", "x", 1),))])
    with pytest.raises(TxnError, match="--model list-append"):
        check(history_of(conc([(A, "x", 1)])), "rw-register")
