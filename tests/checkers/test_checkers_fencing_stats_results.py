"""Fencing and stats checkers, and how verdicts combine."""

from pathlib import Path

import pytest

from checkers.fencing import check_fencing
from checkers.history import HistoryError, Op, load_jsonl
from checkers.results import exit_code, merge_results, merge_valid
from checkers.stats import check_stats

DATA = Path(__file__).parent / "data"


def ops(*rows):
    """rows: (process, type, f, key, value)"""
    return [Op(i, i, p, t, f, key=k, value=v) for i, (p, t, f, k, v) in enumerate(rows)]


def test_fenced_history_that_refuses_the_stale_write_is_valid():
    result = check_fencing(load_jsonl(str(DATA / "fencing-ok.jsonl")))
    assert result["valid"] is True, result["explanation"]


def test_stale_write_accepted_after_a_newer_token_is_invalid():
    result = check_fencing(load_jsonl(str(DATA / "fencing-stale.jsonl")))
    assert result["valid"] is False
    assert result["stale_write_count"] == 1
    assert result["stale_writes"][0]["token"] == 5 and result["stale_writes"][0]["newer_token"] == 6
    # the fenced-register model also refuses a lower token after a higher one
    assert result["linearizability"]["valid"] is False
    assert "stale write" in result["explanation"]


def test_duplicate_tokens_are_invalid():
    h = ops((0, "invoke", "acquire", None, None), (1, "invoke", "acquire", None, None),
            (0, "ok", "acquire", None, 3), (1, "ok", "acquire", None, 3))
    result = check_fencing(h)
    assert result["valid"] is False and result["duplicate_token_count"] == 1
    assert result["token_order_count"] == 0  # they overlapped: no order required


def test_a_later_acquire_must_get_a_larger_token():
    h = ops((0, "invoke", "acquire", None, None), (0, "ok", "acquire", None, 7),
            (1, "invoke", "acquire", None, None), (1, "ok", "acquire", None, 4))
    result = check_fencing(h)
    assert result["valid"] is False and result["token_order_count"] == 1
    assert result["token_order"][0] == {"token": 4, "index": 3, "process": 1, "earlier_token": 7,
                                        "earlier_index": 1}
    # overlapping acquires may complete in either order
    h = ops((0, "invoke", "acquire", None, None), (1, "invoke", "acquire", None, None),
            (0, "ok", "acquire", None, 7), (1, "ok", "acquire", None, 4))
    assert check_fencing(h)["valid"] is True


def test_concurrent_fenced_puts_may_land_in_either_order():
    h = ops((0, "invoke", "fenced-put", "x", ("a", 5)), (1, "invoke", "fenced-put", "x", ("b", 6)),
            (1, "ok", "fenced-put", "x", ("b", 6)), (0, "ok", "fenced-put", "x", ("a", 5)),
            (2, "invoke", "read", "x", None), (2, "ok", "read", "x", "b"))
    assert check_fencing(h)["valid"] is True


def test_bad_token_values_are_named():
    with pytest.raises(HistoryError, match="integer token"):
        check_fencing(ops((0, "invoke", "acquire", None, None), (0, "ok", "acquire", None, "t1")))


def test_stats_counts_and_never_succeeded_is_unknown():
    h = ops((0, "invoke", "read", None, None), (0, "ok", "read", None, 1),
            (1, "invoke", "write", None, 2), (1, "info", "write", None, 2),
            (2, "invoke", "write", None, 3), (2, "fail", "write", None, 3),
            ("nemesis", "info", "kill", None, None))
    result = check_stats(h)
    assert result["valid"] == "unknown"
    assert result["never_succeeded"] == ["write"]
    assert result["by_f"]["write"] == {"ok": 0, "fail": 1, "info": 1, "open": 0}
    assert (result["ok_count"], result["fail_count"], result["info_count"]) == (1, 1, 1)
    h += ops((3, "invoke", "write", None, 4), (3, "ok", "write", None, 4))
    assert check_stats(h)["valid"] is True
    assert check_stats([])["valid"] == "unknown"


@pytest.mark.parametrize("values, expected", [
    ([True, True], True), ([True, "unknown"], "unknown"), (["unknown", False, True], False),
    ([], True), ([False], False),
])
def test_false_beats_unknown_beats_true(values, expected):
    assert merge_valid(values) == expected


def test_merge_results_keeps_each_checker():
    merged = merge_results({"linear": {"valid": True}, "stats": {"valid": "unknown", "count": 3}})
    assert merged == {"valid": "unknown", "linear": {"valid": True}, "stats": {"valid": "unknown", "count": 3}}
    with pytest.raises(ValueError, match="no 'valid'"):
        merge_results({"x": {}})
    with pytest.raises(ValueError, match="must be true, false"):
        merge_valid(["yes"])


def test_exit_codes():
    assert [exit_code(True), exit_code(False), exit_code("unknown")] == [0, 1, 2]


def test_tokens_can_be_checked_per_lock():
    # two locks each starting at token 1: fine per lock, a duplicate across locks
    h = ops((0, "invoke", "acquire", "a", None), (0, "ok", "acquire", "a", 1),
            (1, "invoke", "acquire", "b", None), (1, "ok", "acquire", "b", 1))
    assert check_fencing(h, per_key_tokens=True)["valid"] is True
    result = check_fencing(h)
    assert result["valid"] is False and result["duplicate_token_count"] == 1
    assert result["token_order_count"] == 1  # b's acquire began after a's completed
