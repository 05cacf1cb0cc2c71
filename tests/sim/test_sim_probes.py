"""The bad-input battery at the end of a simulator seed (harness/probes.py, harness/sim/runner.py):
the same probes as a real run's, through the node's codec and request handler."""

from __future__ import annotations

import pytest

from harness.probes import BATTERY, PROBE_PREFIX, RESERVED_KEY
from harness.sim.runner import SimSettings, run_seed
from ukehi import kv
from ukehi.node import api


def test_a_correct_seed_refuses_every_probe_and_the_probes_stay_out_of_the_history():
    result = run_seed(1, SimSettings(duration=4.0))
    verdict = result.checkers["bad-input"]
    assert verdict["valid"] is True, verdict
    nodes = len(verdict["nodes"])
    assert nodes >= 3
    leader_only = sum(1 for p in BATTERY if p.leader_only)
    assert verdict["probes"] == nodes * (len(BATTERY) - leader_only) + leader_only
    assert verdict["refused"] + verdict["inconclusive"] == verdict["probes"] and verdict["refused"] > 0
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
