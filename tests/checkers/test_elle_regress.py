"""regress's "first violation" for a failure the Elle checker found: the history time at
which the earliest anomaly became visible (its last transaction completed)."""

from __future__ import annotations

import json
from pathlib import Path

from checkers.history import load_jsonl
from harness.regress import BUG_CASES, judge, violation_indexes
from workloads.txn import elle

S = 1_000_000_000
# txn-not-atomic's shape: T0's two appends applied as separate entries, T2 reads between
# them (x has T0's append, y not yet): G-single, visible when T2 completes at 3.5 s.
# T4 is a later, valid read.
EVENTS = [
    {"index": 0, "time": 1 * S, "process": 0, "type": "invoke", "f": "txn",
     "value": [["append", 1, 1], ["append", 2, 2]]},
    {"index": 1, "time": int(1.5 * S), "process": 1, "type": "invoke", "f": "txn",
     "value": [["r", 1, None], ["r", 2, None]]},
    {"index": 2, "time": 2 * S, "process": 0, "type": "ok", "f": "txn",
     "value": [["append", 1, 1], ["append", 2, 2]]},
    {"index": 3, "time": int(3.5 * S), "process": 1, "type": "ok", "f": "txn",
     "value": [["r", 1, [1]], ["r", 2, []]]},
    {"index": 4, "time": 4 * S, "process": 2, "type": "invoke", "f": "txn", "value": [["r", 1, None]]},
    {"index": 5, "time": 5 * S, "process": 2, "type": "ok", "f": "txn", "value": [["r", 1, [1]]]},
]


def test_a_txn_not_atomic_case_reports_its_first_violation_time(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    history = load_jsonl(str(tmp_path / "history.jsonl"))
    result = elle("list-append")(history, {})
    assert result["valid"] is False and "G-single" in result["anomaly_types"], result["explanation"]
    # the read's completion (3.5 s) is where the cycle became visible
    assert violation_indexes("elle", result) == [3]
    case = next(c for c in BUG_CASES if c.bug == "txn-not-atomic")
    outcome, ok, caught, seconds, _ = judge(case, {"valid": False, "checkers": {"elle": result}}, tmp_path)
    assert (outcome, ok, caught, seconds) == ("detected", True, ["elle"], 3.5)


def test_incompatible_order_names_the_first_read_that_disagrees() -> None:
    """A read of an append that was then lost (read-uncommitted-txn's shape) disagrees first
    with an early read, long before the final read: the anomaly is visible from the early one."""
    from checkers.elle import check
    from checkers.elle.txn import history_of

    A, R = "append", "r"
    specs = [(0, "ok", [(A, "x", 1)], 0, 1),
             (1, "info", [(A, "x", 2)], 0, None),   # a cut-off leader's append, never committed
             (2, "ok", [(R, "x", (2,))], 2, 3),      # read from that leader's log (ops 3, 4)
             (3, "ok", [(R, "x", (1,))], 4, 5),      # the first read that disagrees (ops 5, 6)
             (4, "ok", [(A, "x", 3)], 6, 7),
             (5, "ok", [(R, "x", (1, 3))], 8, 9)]    # the final, longest read (ops 9, 10)
    result = check(history_of(specs), "list-append")
    assert result["anomaly_types"] == ["incompatible-order"], result["explanation"]
    inst = result["anomalies"]["incompatible-order"][0]
    assert inst["reads"] == [[2], [1]] and inst["ops"] == [3, 5]
    assert result["violation_indexes"] == [6]
    # drawn: both reads as rows, the shared (empty) prefix grey, where they part red
    from checkers.elle.page import cycle_page

    svg = inst["svg"]
    assert svg.startswith("<svg") and "T3" in svg and "T5" in svg
    assert svg.count('stroke="#d62728"') == 2 and 'fill="#eee"' not in svg
    assert svg in cycle_page(result, title="t")


def test_a_failing_checker_that_lists_its_nodes_does_not_break_the_first_violation_time() -> None:
    # bad-input's result has "nodes": the nodes it probed (a list), unlike corruption-policy's
    # per-node map of faults; the regress table crashed on it (CI, quick suite, stale-read).
    assert violation_indexes("bad-input", {"valid": False, "nodes": ["n1", "n2"], "probes": 88}) == []
    faults = {"n2": {"faults": [{"op": 7, "valid": False}, {"op": 9, "valid": True}]}}
    assert violation_indexes("corruption-policy", {"valid": False, "nodes": faults}) == [7]
