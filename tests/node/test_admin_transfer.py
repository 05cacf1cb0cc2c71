"""transfer_leader asks again when the target's election failed and this node leads again,
or when the core gave the transfer up in the same term.

CI saw a transfer to a node just added fail: the voters' vote responses travel on links
they open to the new node only then, the target's election timed out, the old leader won
the next term, and the call waited out its deadline with leadership where it started.
"""

from __future__ import annotations

import asyncio
import io
import time
from types import SimpleNamespace
from typing import Any

from ukehi import wire
from ukehi.node.admin import AdminAPI
from ukehi.node.inputs import TransferLeader
from ukehi.nodelog import NodeLogger
from ukehi.raft.types import Role


class _Core:
    """Leader n1 of term 5; a transfer's first election fails (n1 wins term 7), the second one
    makes ``target`` the leader."""

    def __init__(self) -> None:
        self.id, self.term, self.role, self.lead = "n1", 5, Role.LEADER, "n1"
        self.transfers = 0
        self.lead_transferee: str | None = None

    def status(self) -> Any:
        return SimpleNamespace(role=self.role, term=self.term, progress={}, membership=None)


class _Driver:
    def __init__(self, core: _Core, loop: asyncio.AbstractEventLoop) -> None:
        self.core, self.loop, self.pushed = core, loop, []

    def push(self, item: Any) -> None:
        assert isinstance(item, TransferLeader)
        self.pushed.append((item.target, self.core.term))
        item.placed.set_result(None)
        core = self.core
        core.lead_transferee = item.target
        core.transfers += 1
        if core.transfers == 1:  # the target campaigns in term 6 and loses; n1 wins term 7
            def lost() -> None:
                core.role, core.lead, core.term, core.lead_transferee = Role.FOLLOWER, None, 6, None

            def won_again() -> None:
                core.role, core.lead, core.term = Role.LEADER, "n1", 7
            self.loop.call_later(0.05, lost)
            self.loop.call_later(0.15, won_again)
        else:
            def moved() -> None:
                core.role, core.lead, core.term, core.lead_transferee = Role.FOLLOWER, item.target, 8, None
            self.loop.call_later(0.05, moved)


class _LostTimeoutNowDriver(_Driver):
    """The first TimeoutNow never reaches the target: after an election timeout the core
    drops the transfer and leads on in the same term. The second one gets through."""

    def push(self, item: Any) -> None:
        assert isinstance(item, TransferLeader)
        core = self.core
        if core.transfers:
            return super().push(item)
        self.pushed.append((item.target, core.term))
        item.placed.set_result(None)
        core.lead_transferee, core.transfers = item.target, 1

        def abandoned() -> None:
            core.lead_transferee = None
        self.loop.call_later(0.15, abandoned)


class _Node(AdminAPI):
    def __init__(self, driver: _Driver) -> None:
        self.driver = driver
        self.clock = SimpleNamespace(monotonic=time.monotonic)
        self.config = SimpleNamespace(election_timeout_ms=(150, 300))
        self.log = NodeLogger("n1", stream=io.StringIO())
        self._progress = asyncio.Event()

    def _not_leader(self, what: str) -> Any:
        return wire.MsgType.ERROR, {"code": "not_leader"}


def test_a_failed_transfer_is_asked_again_once_this_node_leads_a_newer_term() -> None:
    async def scenario() -> tuple[Any, list[tuple[str, int]], str]:
        driver = _Driver(_Core(), asyncio.get_running_loop())
        node = _Node(driver)
        reply = await node._transfer("n4")
        return reply, driver.pushed, node.log.stream.getvalue()

    (msg_type, body), pushed, log = asyncio.run(scenario())
    assert pushed == [("n4", 5), ("n4", 7)]  # asked again in the term it won back, once
    assert msg_type == wire.MsgType.OK and body == {"value": {"leader": "n4"}}, body
    assert "event=transfer-leader target=n4 term=7" in log


def test_a_transfer_the_core_gave_up_in_the_same_term_is_asked_again() -> None:
    async def scenario() -> tuple[Any, list[tuple[str, int]]]:
        driver = _LostTimeoutNowDriver(_Core(), asyncio.get_running_loop())
        node = _Node(driver)
        reply = await node._transfer("n3")
        return reply, driver.pushed

    (msg_type, body), pushed = asyncio.run(scenario())
    # Waiting out the deadline left leadership where it was (CI: "leadership did not move
    # to n1 in time; leader is n2"); asking again in the same term moves it.
    assert pushed == [("n3", 5), ("n3", 5)]
    assert msg_type == wire.MsgType.OK and body == {"value": {"leader": "n3"}}, body
