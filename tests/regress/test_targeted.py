"""The targeted schedules (double-vote, figure-8, stale-append): wired into the registry and the
regression suite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.registry import NEEDS_NETWORK_FAULTS, NEMESES, parse_nemeses
from harness.regress import BUG_CASES, CORRECT_CASES
from nemeses.figure_eight import FIGURE_8, figure_eight_package
from nemeses.figure_eight import HEAL as FIGURE_8_HEAL
from nemeses.stale_append import HEAL as STALE_APPEND_HEAL
from nemeses.stale_append import STALE_APPEND, stale_append_package
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


def test_figure_8_is_a_three_node_network_nemesis() -> None:
    assert parse_nemeses("figure-8") == ("figure-8",)
    assert "figure-8" in NEEDS_NETWORK_FAULTS
    for n in (1, 5):
        with pytest.raises(ValueError, match="exactly 3 nodes"):
            NEMESES["figure-8"](_ctx(n))
    package = figure_eight_package(_ctx(3))
    assert package.fs == {FIGURE_8, FIGURE_8_HEAL}
    assert package.final() == [{"f": FIGURE_8_HEAL}]


def test_commit_old_term_and_its_control_share_the_figure_8_settings(tmp_path) -> None:
    case = next(c for c in BUG_CASES if c.bug == "commit-old-term")
    assert case.nemeses == ("figure-8",) and case.node_count == 3 and not case.finding
    controls = [c for c in CORRECT_CASES if c.nemeses == ("figure-8",)]
    assert len(controls) == 1
    control = controls[0]
    assert (control.node_options, control.workload_options) == (case.node_options, case.workload_options)
    spec = case.spec(str(tmp_path), quick=True)
    # stop-and-wait replication reaches the nodes, and the planted bug rides along
    assert spec.node_options == {"max_inflight": 1, "max_entries_per_message": 1, "unsafe_bug": "commit-old-term"}
    assert control.spec(str(tmp_path), quick=True).node_options == {"max_inflight": 1, "max_entries_per_message": 1}
    assert spec.workload_options["ops"] == ("read:3", "write") and spec.workload_options["threads_per_key"] == 1


def test_stale_append_is_a_three_node_network_nemesis() -> None:
    assert parse_nemeses("stale-append") == ("stale-append",)
    assert "stale-append" in NEEDS_NETWORK_FAULTS
    for n in (1, 5):
        with pytest.raises(ValueError, match="exactly 3 nodes"):
            NEMESES["stale-append"](_ctx(n))
    package = stale_append_package(_ctx(3))
    assert package.fs == {STALE_APPEND, STALE_APPEND_HEAL}
    assert package.final() == [{"f": STALE_APPEND_HEAL}]


def test_accept_stale_term_and_its_control_share_the_stale_append_settings(tmp_path) -> None:
    case = next(c for c in BUG_CASES if c.bug == "accept-stale-term")
    assert case.nemeses == ("stale-append",) and case.node_count == 3
    assert case.finding == ""  # caught in every quick run: an escape fails CI
    controls = [c for c in CORRECT_CASES if c.nemeses == ("stale-append",)]
    assert len(controls) == 1
    control = controls[0]
    assert (control.workload_options, control.concurrency, control.rate) == (
        case.workload_options, case.concurrency, case.rate)
    # slower timers, so the nemesis can delay the links between the next leader and the
    # follower (0.4 of the election timeout each way) without check-quorum deposing it
    timers = {"election_timeout": "1000:2000", "heartbeat": 100, "max_entries_per_message": 1}
    assert case.spec(str(tmp_path), quick=True).node_options == {**timers, "unsafe_bug": "accept-stale-term"}
    assert control.spec(str(tmp_path), quick=True).node_options == timers
