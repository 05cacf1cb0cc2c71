"""The membership nemesis: the configuration every node reports in `status` follows each change.

A real 4-node cluster (3 founding voters, 1 spare started with --join) goes
through add, remove of the leader, a refused remove, a leadership transfer and
the re-adding of the removed (wiped) node. The tests in the module run in order
and build on each other's cluster state; the first tests need no cluster.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.backends.local import LocalCluster
from harness.db import UkehiDB
from nemeses import membership
from nemeses.membership import ADD, REMOVE, TRANSFER
from ukehi.client import UkehiClient

from test_effects import Harness, needs_netns, open_harness, run, wait_until

FOUNDERS = ["n1", "n2", "n3"]


def test_founding_voters_leave_spares_but_never_fewer_than_three() -> None:
    assert membership.founding_voters(["a", "b", "c"]) == ["a", "b", "c"]
    assert membership.founding_voters(["a", "b", "c", "d"]) == ["a", "b", "c"]
    assert membership.founding_voters(["a", "b", "c", "d", "e"]) == ["a", "b", "c"]
    assert membership.founding_voters([f"n{i}" for i in range(7)]) == [f"n{i}" for i in range(5)]


def test_generator_draws_every_kind_and_rejects_unknown_ones() -> None:
    pkg = membership.package(ctx=None)  # type: ignore[arg-type]  # the generator needs no cluster
    rng = random.Random(0)
    ops = [pkg.generator(rng) for _ in range(60)]
    assert {op["f"] for op in ops} == {ADD, REMOVE, TRANSFER}
    assert {op["value"]["target"] for op in ops if op["f"] == REMOVE} == {"leader", "follower"}
    assert pkg.final() == [{"f": membership.SETTLE}]
    with pytest.raises(ValueError, match="unknown membership op"):
        membership.package(ctx=None, kinds=["explode"])  # type: ignore[arg-type]


def test_db_starts_founders_with_the_founding_config_and_spares_with_join(tmp_path: Path) -> None:
    with LocalCluster(FOUNDERS + ["n4"], results_dir=tmp_path, isolation="loopback") as cluster:
        db = UkehiDB(cluster, founders=FOUNDERS)
        founder, spare = db.argv("n1"), db.argv("n4")
        peers = lambda argv: argv[argv.index("--peers") + 1].split(",")  # noqa: E731
        assert [p.split("=")[0] for p in peers(founder)] == FOUNDERS and "--join" not in founder
        # A spare knows every address (its leader may be a later member) and waits to be added.
        assert [p.split("=")[0] for p in peers(spare)] == FOUNDERS + ["n4"] and "--join" in spare
        assert db.joiners == {"n4"}
        assert "--join" not in UkehiDB(cluster).argv("n4")  # without founders, all found it
        with pytest.raises(ValueError, match="subset"):
            UkehiDB(cluster, founders=["n1", "n9"])


@pytest.fixture(scope="module")
def mh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from open_harness(tmp_path_factory.mktemp("membership"), FOUNDERS + ["n4"], founders=FOUNDERS)


def voters_seen(h: Harness, names: list[str]) -> dict[str, Any]:
    statuses = run(h.db.statuses())
    return {n: (statuses[n] or {}).get("voters") for n in names}


def assert_everyone_reports(h: Harness, voters: list[str]) -> None:
    """Every voter's own status lists exactly VOTERS (followers apply the change a bit later)."""
    wait_until(f"every voter reporting voters {voters}",
               lambda: all(v == voters for v in voters_seen(h, voters).values()))


class TestMembershipChanges:
    pytestmark = needs_netns
    state: dict[str, Any] = {}

    def test_add_spare_makes_it_a_voter_everywhere(self, mh: Harness) -> None:
        mh.settled_leader()
        spare = run(mh.db.statuses())["n4"]
        assert spare is not None and spare["voters"] == []  # a joiner waits, outside the config
        pkg = membership.package(mh.ctx)
        value = mh.invoke(pkg, {"f": ADD, "value": {"seed": 1}})
        assert value["node"] == "n4" and value["outcome"] == "ok", value
        assert value["before"]["voters"] == FOUNDERS
        assert value["after"]["voters"] == ["n1", "n2", "n3", "n4"]
        assert_everyone_reports(mh, ["n1", "n2", "n3", "n4"])
        # The accepted change was compacted on every member (the default threshold would
        # never compact in a short run): each snapshot covers the change's config entries.
        compacted = value["compacted"]
        assert sorted(compacted) == ["n1", "n2", "n3", "n4"], compacted
        statuses = run(mh.db.statuses())
        for node, answer in compacted.items():
            assert answer["index"] > 0, compacted
            assert statuses[node]["snapshot_index"] >= answer["index"], (node, statuses[node])
        # Then a follower was restarted from its snapshot, and every member's own view of the
        # configuration was recorded once all had applied the leader's commit index.
        agreement = value["agreement"]
        restarted = agreement["restarted"]["node"]
        assert restarted != agreement["leader"] and agreement["restarted"]["pid"] != agreement["restarted"]["killed_pid"]
        assert sorted(agreement["views"]) == ["n1", "n2", "n3", "n4"], agreement
        for node, seen in agreement["views"].items():
            assert seen["voters"] == ["n1", "n2", "n3", "n4"], (node, seen)
            assert seen["applied_index"] >= agreement["caught_up_to"], (node, seen)

    def test_remove_leader_shrinks_config_and_restarts_it_fresh(self, mh: Harness) -> None:
        leader = mh.settled_leader()
        old_pid = mh.node(leader).pid
        pkg = membership.package(mh.ctx)
        value = mh.invoke(pkg, {"f": REMOVE, "value": {"seed": 2, "target": "leader"}})
        assert value["node"] == leader and value["outcome"] == "ok", value
        rest = sorted({"n1", "n2", "n3", "n4"} - {leader})
        assert value["after"]["voters"] == rest and value["after"]["leader"] in rest
        assert_everyone_reports(mh, rest)
        # The removed node runs again as a fresh spare: new process, empty data, no config.
        pid = value["restarted_fresh_pid"]
        assert pid != old_pid and mh.node(leader).pid == pid
        fresh = wait_until(f"{leader} answering as a fresh spare", lambda: run(mh.db.statuses())[leader])
        assert fresh["pid"] == pid and fresh["voters"] == [] and fresh["commit_index"] == 0
        assert leader in mh.db.joiners
        self.state["removed"], self.state["voters"] = leader, rest

    def test_remove_at_three_voters_is_skipped(self, mh: Harness) -> None:
        voters = self.state["voters"]
        pkg = membership.package(mh.ctx)
        value = mh.invoke(pkg, {"f": REMOVE, "value": {"seed": 3, "target": "follower"}})
        assert "fewer than 3" in value["skipped"]
        assert_everyone_reports(mh, voters)

    def test_transfer_moves_leadership_to_the_chosen_voter(self, mh: Harness) -> None:
        voters = self.state["voters"]
        before = wait_until("a leader among the voters",
                            lambda: next((n for n, s in run(mh.db.statuses()).items()
                                          if n in voters and s and s.get("role") == "leader"), None))
        pkg = membership.package(mh.ctx)
        value = mh.invoke(pkg, {"f": TRANSFER, "value": {"seed": 4}})
        assert value["outcome"] == "ok", value
        target = value["node"]
        assert target != before and target in voters
        assert value["after"]["leader"] == target
        assert run(mh.db.statuses())[target]["role"] == "leader"
        wait_until(f"every voter following {target}",  # followers hear of it with the next append
                   lambda: all((s or {}).get("leader") == target
                               for n, s in run(mh.db.statuses()).items() if n in voters))

    def test_removed_node_can_be_added_back(self, mh: Harness) -> None:
        removed = self.state["removed"]
        pkg = membership.package(mh.ctx)
        value = mh.invoke(pkg, {"f": ADD, "value": {"seed": 5}})
        assert value["node"] == removed and value["outcome"] == "ok", value
        assert_everyone_reports(mh, ["n1", "n2", "n3", "n4"])
        settled = mh.invoke(pkg, {"f": membership.SETTLE})
        assert settled["members"]["voters"] == ["n1", "n2", "n3", "n4"]

    def test_a_removed_node_still_holding_its_log_is_wiped_before_it_is_added(self, mh: Harness) -> None:
        leader = mh.settled_leader()
        voters = ["n1", "n2", "n3", "n4"]
        node = next(v for v in voters if v != leader)
        # Removed behind the nemesis's back: the process keeps running with its old log.
        removed = run(admin(mh, "remove_node", node))
        assert removed.ok, removed
        rest = [v for v in voters if v != node]
        assert_everyone_reports(mh, rest)
        stale = run(mh.db.statuses())[node]
        assert stale["last_index"] > 0
        old_pid = mh.node(node).pid
        value = mh.invoke(membership.package(mh.ctx), {"f": ADD, "value": {"seed": 6}})
        assert value["node"] == node and value["outcome"] == "ok", value
        assert value["restarted_fresh_pid"] != old_pid and mh.node(node).pid == value["restarted_fresh_pid"]
        assert_everyone_reports(mh, voters)


async def admin(h: Harness, call: str, *args: Any) -> Any:
    async with UkehiClient(h.db.addresses(), timeout=15.0) as client:
        return await getattr(client, call)(*args)
