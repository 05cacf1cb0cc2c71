"""The bad-input checker's judgement of the answer scenarios (checkers/probes.py,
``answer_matches``): hand-made records of well-formed requests with determined answers."""

from __future__ import annotations

from typing import Any

import pytest

from checkers.probes import answer_matches, check_probes


def ok(value: Any) -> dict[str, Any]:
    return {"outcome": "answered", "type": "ok", "value": value}


def error(code: str, message: str = "why") -> dict[str, Any]:
    return {"outcome": "answered", "type": "error", "code": code, "message": message}


@pytest.mark.parametrize("expected, answer, matches", [
    ({"type": "ok", "value": None}, ok(None), True),
    ({"type": "ok", "value": False}, ok(False), True),
    ({"type": "ok", "value": False}, ok(0), False),  # JSON-exact: false is not 0
    ({"type": "ok", "value": True}, ok(False), False),
    ({"type": "ok", "value": "v2"}, ok("v1"), False),
    ({"type": "ok", "value": None}, error("not_lock_holder"), False),
    ({"type": "ok", "token_above": 7}, ok(8), True),
    ({"type": "ok", "token_above": 7}, ok(7), False),
    ({"type": "ok", "token_above": 0}, ok(True), False),  # a bool is no token
    ({"type": "ok", "token_above": 0}, ok("9"), False),
    ({"type": "ok", "fields": {"ops": [["r", "k", "x"]]}}, ok({"ops": [["r", "k", "x"]], "index": 4}), True),
    ({"type": "ok", "fields": {"ops": [["r", "k", "x"]]}}, ok({"ops": [["r", "k", None]], "index": 4}), False),
    ({"type": "error", "code": "cas_failed"}, error("cas_failed"), True),
    ({"type": "error", "code": "cas_failed"}, error("refused"), False),
    ({"type": "error", "code": "cas_failed"}, ok(None), False),
    ({"type": "error", "code": "cas_failed"}, {"outcome": "closed"}, False),
])
def test_answer_matches(expected, answer, matches):
    assert answer_matches(expected, answer) is matches


def records(*steps: tuple[str, dict[str, Any], dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"kind": "start", "battery": 2, "nodes": ["n1"], "not_running": [], "leader": "n1",
                                  "counts_bad_frames": False, "bad_frames_before": {"n1": None}}]
    for i, (name, expected, answer) in enumerate(steps, 1):
        out.append({"kind": "probe", "probe": name, "level": "answer", "node": "n1", "what": f"step {name}",
                    "expect": "answer", "expected": expected, "leader_only": True, "scenario": name.split("/")[0],
                    "step": i, "answer": answer, "ms": 1.0})
    out.append({"kind": "alive", "node": "n1", "running": True, "status": True, "bad_frames_after": None})
    out.append({"kind": "end", "seconds": 0.1})
    return out


RELEASE_OK = ("lock/release-holder-token", {"type": "ok", "value": None})
FREE = ("lock/release-free", {"type": "error", "code": "not_lock_holder"})


def test_expected_answers_are_valid_and_counted():
    got = check_probes(records((*FREE, error("not_lock_holder")), (*RELEASE_OK, ok(None))))
    assert got["valid"] is True and got["answered"] == 2 and got["probes"] == 2 and got["refused"] == 0


def test_a_holders_release_refused_is_a_wrong_answer_naming_probe_expected_and_got():
    got = check_probes(records((*FREE, error("not_lock_holder")),
                               (*RELEASE_OK, error("not_lock_holder", "not held with that token"))))
    assert got["valid"] is False and got["problem_count"] == 1
    p = got["problems"][0]
    assert p["probe"] == "lock/release-holder-token" and p["node"] == "n1" and p["expected"] == "ok null"
    assert p["problem"] == "wrong answer: expected ok null, got error not_lock_holder: 'not held with that token'"
    assert "lock/release-holder-token" in got["explanation"]


@pytest.mark.parametrize("answer, verdict", [
    (error("not_leader"), "inconclusive"), (error("unavailable"), "inconclusive"), (error("timeout"), "inconclusive"),
    (error("recovering"), "inconclusive"), ({"outcome": "connect-failed", "message": "refused"}, "inconclusive"),
    (error("internal", "KeyError('probe/fresh/1-9/lock')"), "problem"),
    ({"outcome": "closed", "reason": "bad frame"}, "problem"),  # a well-formed request must not be hung up on
    ({"outcome": "no-answer", "detail": "5 s"}, "problem"),
])
def test_an_unexpected_answer_is_inconclusive_only_when_it_says_nothing_was_known_to_be_done(answer, verdict):
    got = check_probes(records((*FREE, error("not_lock_holder")), (*RELEASE_OK, answer)))
    if verdict == "inconclusive":
        assert got["valid"] is True and got["inconclusive"] == 1 and got["answered"] == 1
    else:
        assert got["valid"] is False and got["problems"][0]["probe"] == "lock/release-holder-token"


def test_a_battery_where_every_step_was_inconclusive_is_unknown():
    got = check_probes(records((*FREE, error("not_leader"))))
    assert got["valid"] == "unknown"
