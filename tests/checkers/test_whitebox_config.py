"""config-agreement (checkers/whitebox/config.py): members that applied the same log report
the same configuration, from the membership nemesis's per-member views after each change."""

from __future__ import annotations

from checkers.history import Op
from checkers.whitebox import NAMES, check_config_agreement

S = 1_000_000_000
AFTER = {"voters": ["n1", "n2", "n3", "n5"], "outgoing": [], "learners": [], "joint": False}


def change(views: dict, index: int = 100, restarted: str = "n3") -> list[Op]:
    value = {"node": "n5", "outcome": "ok", "after": {"leader": "n1", **AFTER},
             "agreement": {"restarted": {"node": restarted, "pid": 9}, "leader": "n1", "caught_up_to": index,
                           "views": views}}
    return [Op(index=0, time=1 * S, process="nemesis", type="invoke", f="add-node", value={"seed": 1}),
            Op(index=1, time=2 * S, process="nemesis", type="info", f="add-node", value=value)]


def view(applied: int, voters: list[str] = AFTER["voters"]) -> dict:
    return {"applied_index": applied, "voters": voters, "outgoing": [], "learners": [], "joint": False}


def test_members_that_applied_the_leaders_commit_agree():
    result = check_config_agreement(change({"n1": view(101), "n2": view(100), "n3": view(104), "n5": view(100)}))
    assert result["valid"] is True and result["compared"] == 1, result


def test_a_caught_up_member_with_another_configuration_is_a_violation_naming_it():
    stale = ["n1", "n2", "n3"]  # the configuration before the add, e.g. from a stale snapshot
    result = check_config_agreement(change({"n1": view(101), "n2": view(100), "n3": view(100, stale)}))
    assert result["valid"] is False
    (violation,) = result["violations"]
    assert violation["node"] == "n3" and violation["leader"] == "n1"
    assert "restarted from its snapshot just before" in violation["what"]
    assert "reports voters ['n1', 'n2', 'n3']" in violation["what"]
    assert "leader n1 reports voters ['n1', 'n2', 'n3', 'n5']" in violation["what"]


def test_a_member_that_had_not_caught_up_is_listed_not_judged():
    result = check_config_agreement(change({"n1": view(101), "n3": view(90, ["n1", "n2", "n3"])}))
    assert result["valid"] is True and "not caught up in time, not judged: n3" in result["explanation"]


def test_a_run_without_membership_views_has_nothing_to_disagree_about_and_the_checker_runs_everywhere():
    plain = [Op(index=0, time=S, process=0, type="invoke", f="read", key=1),
             Op(index=1, time=S, process=0, type="ok", f="read", key=1)]
    assert check_config_agreement(plain)["valid"] is True
    assert "config-agreement" in NAMES  # every run's white-box set (and the sim's) has it
