"""The bad-input battery at the end of a simulator seed (harness/probes.py, harness/sim/runner.py):
the same probes as a real run's, through the node's codec and request handler."""

from __future__ import annotations

import pytest

from harness.probes import BATTERY, PROBE_PREFIX, RESERVED_KEY, SCENARIO_STEPS
from harness.sim.runner import SimSettings, run_seed
from ukehi import kv
from ukehi.node import api
from ukehi.wire import ErrorCode


def test_a_correct_seed_refuses_every_probe_and_the_probes_stay_out_of_the_history():
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is True, verdict
    nodes = len(verdict["nodes"])
    assert nodes >= 3
    leader_only = sum(1 for p in BATTERY if p.leader_only)
    assert verdict["probes"] == nodes * (len(BATTERY) - leader_only) + leader_only + SCENARIO_STEPS
    assert verdict["answered"] == SCENARIO_STEPS  # every well-formed step got its determined answer
    assert verdict["refused"] + verdict["answered"] + verdict["inconclusive"] == verdict["probes"]
    assert verdict["refused"] > 0
    assert result.valid is True
    for op in result.history:
        assert not str(op.key).startswith(PROBE_PREFIX) and op.key != RESERVED_KEY


def test_a_state_machine_that_appends_to_a_scalar_is_caught(monkeypatch: pytest.MonkeyPatch):
    # the refusal the unit tests kill, and no register seed reaches: an append to a scalar
    monkeypatch.setattr(kv.KVStateMachine, "_append_refused", lambda self, key: None)
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is False and result.valid is False
    probes = {p.get("probe") for p in verdict["problems"]}
    assert "append-to-scalar" in probes
    assert any("probe/scalar-append" in p["problem"] and "changed data" in p["problem"] for p in verdict["problems"])


def test_a_node_that_lets_a_reserved_key_through_is_caught(monkeypatch: pytest.MonkeyPatch):
    # the reserved-prefix refusal of plain writes, moved out of the node's reach
    monkeypatch.setattr(api, "ADDRESS_KEY_PREFIX", "\x00no-such-prefix/")
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is False
    named = {(p.get("probe"), p.get("node")) for p in verdict["problems"]}
    assert {p for p, _ in named} >= {"put-reserved-key", "delete-reserved-key"}
    # answered ok by the leader, not_leader by the followers: both are named
    answers = {p["answer"].get("type") for p in verdict["problems"] if p.get("probe") == "put-reserved-key"}
    assert "ok" in answers


def test_a_state_machine_that_refuses_the_holders_tokened_release_is_caught(monkeypatch: pytest.MonkeyPatch):
    # the mutant kv.py:441:16:and_or (``"token" in cmd and ...`` -> ``or``): every release
    # with a token is refused; no register seed releases a lock at all
    real = kv.KVStateMachine._execute

    def refuse_tokened_releases(self: kv.KVStateMachine, cmd: dict, token: int) -> dict:
        if cmd["op"] == "release" and "token" in cmd:
            return kv.err(ErrorCode.NOT_LOCK_HOLDER, "not held with that token")
        return real(self, cmd, token)

    monkeypatch.setattr(kv.KVStateMachine, "_execute", refuse_tokened_releases)
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is False and result.valid is False
    (wrong,) = [p for p in verdict["problems"] if p.get("probe") == "lock/release-holder-token"]
    assert "expected ok null, got error not_lock_holder" in wrong["problem"]


def test_a_node_that_takes_an_empty_node_id_is_caught(monkeypatch: pytest.MonkeyPatch):
    # the mutant raft/types.py:53:8:drop_stmt (check_node_id no longer refuses an empty or
    # over-long id), where the admin and the membership change call it; no workload names a
    # node, so only the battery's admin scenario sends one. The over-long id is refused by
    # add_node's own rule too (no longer than `ukehi node --id` takes, ukehi/node/admin.py),
    # so the empty id is what gets through.
    from ukehi.node import admin
    from ukehi.raft import confchange

    monkeypatch.setattr(admin, "check_node_id", lambda name, value: value)
    monkeypatch.setattr(confchange, "check_node_id", lambda name, value: value)
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is False and result.valid is False
    assert not [p for p in verdict["problems"] if p.get("probe") == "admin/add-node-long-id"]
    (wrong,) = [p for p in verdict["problems"] if p.get("probe") == "admin/add-node-empty-id"]
    # taken: it adds a learner that can never join and waits for it past the probe's timeout
    assert wrong["problem"].startswith(("hung: no-answer", "wrong answer: expected error bad_request")), wrong
