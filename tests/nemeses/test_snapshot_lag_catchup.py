"""The snapshot-lag op's ``catch_up`` record (nemeses/snapshot_lag.py), which the catch-up
checker judges: over a fake cluster whose statuses the test scripts, so each outcome (never
caught up, caught up by install, caught up from the log of a new leader) is exact and fast."""

from __future__ import annotations

import asyncio
from typing import Any

from nemeses.snapshot_lag import LAG, snapshot_lag_package


class FakeNode:
    def __init__(self, name: str) -> None:
        self.name, self.address = name, f"127.0.0.1:{7000 + int(name[1:])}"
        self.running, self._pid = True, 100 + int(name[1:])

    @property
    def pid(self) -> int:
        return self._pid

    def kill(self) -> int:
        self.running = False
        return self._pid

    def is_running(self) -> bool:
        return self.running

    def process_state(self) -> str:
        return "S" if self.running else "X"


class FakeCluster:
    """n1 leads and compacts to 150 once n3 is down; n3 after its restart reports whatever
    ``follower_after`` says (its snapshot and applied index)."""

    def __init__(self, follower_after: dict[str, int]) -> None:
        self.nodes = {n: FakeNode(n) for n in ("n1", "n2", "n3")}
        self.follower_after = follower_after
        self.restarts = 0

    def status(self, name: str) -> dict[str, Any] | None:
        node = self.nodes[name]
        if not node.running:
            return None
        if name == "n1":
            down = not self.nodes["n3"].running or self.restarts
            return {"role": "leader", "term": 1, "voters": ["n1", "n2", "n3"], "last_index": 160,
                    "applied_index": 160, "snapshot_index": 150 if down else 100,
                    "progress": {"n3": {"match": 101, "next": 102}}}
        if name == "n3" and self.restarts:
            return {"role": "follower", "term": 1, "voters": ["n1", "n2", "n3"], "last_index": 101,
                    **self.follower_after}
        return {"role": "follower", "term": 1, "voters": ["n1", "n2", "n3"], "last_index": 101,
                "applied_index": 101, "snapshot_index": 100}

    async def statuses(self, names: Any = None) -> dict[str, Any]:
        return {n: self.status(n) for n in (names or self.nodes)}

    async def start_node(self, name: str) -> int:
        node = self.nodes[name]
        node.running, node._pid = True, node._pid + 1000
        self.restarts += 1
        return node._pid


def lag(cluster: FakeCluster, install_wait_s: float = 0.3) -> dict[str, Any]:
    package = snapshot_lag_package(cluster, compaction_wait_s=5.0, lag_limit_s=2.0, install_wait_s=install_wait_s,
                                   poll_s=0.01)
    # seed 5 picks n3 (of the two followers): random.Random(5).choice(["n2", "n3"])
    return asyncio.run(package.invoke({"f": LAG, "value": {"seed": 5}}))


def test_a_follower_that_never_catches_up_is_recorded_with_the_index_it_was_stuck_at():
    value = lag(FakeCluster({"applied_index": 101, "snapshot_index": 100}))
    assert value["follower"] == "n3" and value["compacted_to"] == 150 and value["installed"] is False
    record = value["catch_up"]
    assert record["node"] == "n3" and record["pid"] == 1103 and record["target"] == 150
    assert record["reached"] is False and record["wait_s"] == 0.3 and record["waited_ms"] >= 300
    assert (record["applied_index"], record["snapshot_index"]) == (101, 100)
    assert "n1 compacted its log to 150 while n3 held at most 101" == record["why"]


def test_an_installed_snapshot_is_caught_up_and_installed():
    value = lag(FakeCluster({"applied_index": 150, "snapshot_index": 150}), install_wait_s=5.0)
    assert value["installed"] is True and value["catch_up"]["reached"] is True
    assert value["catch_up"]["waited_ms"] < 5000  # it stopped waiting as soon as it saw it


def test_catching_up_from_the_log_counts_as_caught_up_though_no_snapshot_was_installed():
    # e.g. a new leader that had not compacted sent the entries: the follower holds them
    value = lag(FakeCluster({"applied_index": 155, "snapshot_index": 100}), install_wait_s=5.0)
    assert value["installed"] is False and value["catch_up"]["reached"] is True
