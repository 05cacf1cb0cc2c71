"""The linearizability checker's explanation calls the parts it checks one by one *keys*
("partition" means a network partition everywhere else in a report, issue 16), while the
machine-readable field keeps its name (``partitions``) for the readers of results.json."""

from __future__ import annotations

from typing import Any

from checkers.history import Op
from checkers.linearizability import MAX_EXPLAINED, analyze

MS = 1_000_000


def history(events: list[tuple[int, int, str, str, Any, Any]]) -> list[Op]:
    return [Op(i, t * MS, p, ty, f, key=k, value=v) for i, (t, p, ty, f, k, v) in enumerate(events)]


def write_then_read(key: Any, process: int, written: int, read: int, t0: int = 0) -> list[tuple]:
    return [(t0, process, "invoke", "write", key, written),
            (t0 + 1, process, "ok", "write", key, written),
            (t0 + 2, process + 1, "invoke", "read", key, None),
            (t0 + 3, process + 1, "ok", "read", key, read)]


def test_a_valid_history_counts_its_keys() -> None:
    result = analyze(history(write_then_read("a", 0, 1, 1) + write_then_read("b", 2, 2, 2, 10)),
                     "cas-register").result
    assert result["valid"] is True and result["partitions"] == 2
    assert result["explanation"].startswith(
        "linearizable: 4 operation(s) (0 pending) on 2 key(s), checked in ")
    assert "partition" not in result["explanation"]


def test_more_failing_keys_than_shown_are_counted_as_keys() -> None:
    events: list[tuple] = []
    n = MAX_EXPLAINED + 2
    for k in range(n):  # each key: a read of a value never written
        events += write_then_read(f"k{k}", 2 * k, 1, 99, 10 * k)
    result = analyze(history(events), "cas-register").result
    assert result["valid"] is False and len(result["failures"]) == n and result["partitions"] == n
    text = result["explanation"]
    assert text.startswith("not linearizable:\n")
    assert f"... and {n - MAX_EXPLAINED} more failing key(s) (see failures)" in text
    assert "partition" not in text


def test_an_unknown_verdict_names_the_unfinished_keys_as_keys() -> None:
    # 22 overlapping writes, then a read of a value never written: proving it illegal means
    # trying every subset of the writes, far beyond a 0.2 s budget
    events = [(0, i, "invoke", "write", "hard", i) for i in range(22)]
    events += [(1000 + i, i, "ok", "write", "hard", i) for i in range(22)]
    events += [(2000, 99, "invoke", "read", "hard", None), (2001, 99, "ok", "read", "hard", 999)]
    result = analyze(history(events), "cas-register", time_limit=0.2).result
    assert result["valid"] == "unknown"
    text = result["explanation"]
    assert text.startswith("unknown: the 0.2 s time limit ran out with 1 key(s) unfinished (keys ['hard'])")
    assert "partition" not in text


def test_a_history_without_keys_is_one_independent_part_not_a_key() -> None:
    result = analyze(history(write_then_read(None, 0, 1, 1)), "cas-register").result
    assert result["valid"] is True
    assert " on 1 independent part(s), " in result["explanation"]
    assert "key(s)" not in result["explanation"] and "partition" not in result["explanation"]
