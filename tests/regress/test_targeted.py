"""The targeted double-vote schedule: wired into the registry and the regression suite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.registry import NEEDS_NETWORK_FAULTS, NEMESES, parse_nemeses
from harness.regress import BUG_CASES, CORRECT_CASES
from nemeses.targeted import DOUBLE_VOTE, HEAL, double_vote_package


def _ctx(n: int) -> SimpleNamespace:
    return SimpleNamespace(nodes={f"n{i}": SimpleNamespace(name=f"n{i}") for i in range(1, n + 1)})


def test_double_vote_is_a_network_nemesis_of_the_registry() -> None:
    assert parse_nemeses("double-vote") == ("double-vote",)
    assert "double-vote" in NEEDS_NETWORK_FAULTS  # it partitions and shapes links: namespaces


def test_double_vote_needs_three_nodes() -> None:
    for n in (1, 5):
        with pytest.raises(ValueError, match="exactly 3 nodes"):
            NEMESES["double-vote"](_ctx(n))
    package = double_vote_package(_ctx(3))
    assert package.fs == {DOUBLE_VOTE, HEAL}
    assert package.final() == [{"f": HEAL}]


def test_the_generator_alternates_the_schedule_and_the_heal() -> None:
    import random

    package = double_vote_package(_ctx(3))
    rng = random.Random(0)
    assert [package.generator(rng)["f"] for _ in range(4)] == [DOUBLE_VOTE, HEAL, DOUBLE_VOTE, HEAL]


def test_forget_vote_runs_under_double_vote_and_the_correct_build_has_the_same_control() -> None:
    case = next(c for c in BUG_CASES if c.bug == "forget-vote")
    assert case.nemeses == ("double-vote",) and case.node_count == 3
    assert not case.finding  # expected to be detected, not a documented escape
    controls = [c for c in CORRECT_CASES if c.nemeses == ("double-vote",)]
    assert controls and all(c.node_count == 3 for c in controls)
