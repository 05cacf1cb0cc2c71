"""The fencing workload's releases in the simulator (workloads/fencing.py, checkers/locks.py):
what a release records, and that a holder's refused release is caught by the workload's own
lock-exclusion checker, besides the bad-input battery's lock scenario."""

from __future__ import annotations

import pytest

from harness.sim.runner import SimSettings, run_seed
from ukehi import kv
from ukehi.wire import ErrorCode

SEED = 6  # a fencing seed whose workers release often (11 releases in 4 virtual seconds)


def test_releases_record_owner_and_the_workers_current_token_or_none():
    result = run_seed(SEED, SimSettings(workload="fencing", duration=4.0))
    assert result.valid is True, result.failing_checkers()
    held: dict[tuple, int] = {}  # (owner, key) -> the token of its last ok acquire
    owner_of: dict[int, str] = {}
    forms = set()
    for op in result.history:
        if not op.is_client:
            continue
        if op.f == "acquire" and op.type == "invoke":
            owner_of[op.process] = op.value["owner"]
        elif op.f == "acquire" and op.type == "ok":
            held[(owner_of[op.process], op.key)] = op.value
        elif op.f == "release" and op.type == "invoke":
            assert set(op.value) <= {"owner", "token"} and (op.value["owner"], op.key) in held
            if "token" in op.value:
                assert op.value["token"] == held[(op.value["owner"], op.key)]
            forms.add("token" in op.value)
    assert forms == {True, False}
    lock = result.checkers["lock-exclusion"]
    assert lock["valid"] is True and lock["releases"] > 0


def test_a_holders_tokened_release_refused_fails_lock_exclusion(monkeypatch: pytest.MonkeyPatch):
    real = kv.KVStateMachine._execute

    def refuse_tokened_releases(self: kv.KVStateMachine, cmd: dict, token: int) -> dict:
        if cmd["op"] == "release" and "token" in cmd:  # the mutant kv.py:441:16:and_or
            return kv.err(ErrorCode.NOT_LOCK_HOLDER, "not held with that token")
        return real(self, cmd, token)

    monkeypatch.setattr(kv.KVStateMachine, "_execute", refuse_tokened_releases)
    result = run_seed(SEED, SimSettings(workload="fencing", duration=4.0))
    lock = result.checkers["lock-exclusion"]
    assert lock["valid"] is False and lock["holder_refused_count"] > 0
    v = lock["holder_refused"][0]
    assert v["token"] == v["held_token"] and v["refused_ms"] < v["lease_until_ms"]
    assert "refused as not_lock_holder" in lock["explanation"] and repr(v["lock"]) in lock["explanation"]
