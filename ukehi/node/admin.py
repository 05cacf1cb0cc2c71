"""Admin calls: add/remove a node (through a learner and joint consensus), transfer
leadership, take a snapshot. A mixin of :class:`ukehi.node.server.UkehiNode`.

Waiting for the cluster to move (a config to leave joint, a learner to catch up, the
leadership to arrive) waits on the driver's progress signal (any Ready that applied
entries or changed the role/leader), with a short timeout as a fallback.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ukehi import wire
from ukehi.config import MAX_NODE_NAME_LEN, parse_address
from ukehi.raft.confchange import ConfChange, ConfChangeType
from ukehi.raft.types import NotLeader, ProposalDropped, Role, check_node_id
from ukehi.storage.errors import StorageError

from .api import Reply, err, partial
from .driver import ADDRESS_KEY_PREFIX, PROPOSAL_TIMEOUT
from .inputs import ProposeConfChange, TakeSnapshot, TransferLeader

__all__ = ["AdminAPI", "node_id_refusal"]

#: what the admin refuses in a node id besides what ``check_node_id`` does (empty, too long):
#: the separators of ``--peers`` and of the status' member lists, and blanks (``ukehi node
#: --id`` refuses the same characters, so a node so named could never start and join)
_ID_FORBIDDEN = "=,: \t\n"
_ID_RULE = "without '=', ',', ':', spaces, tabs or newlines"


def _shown(node: str) -> str:
    """A node id for a message: an over-long one cut short, with its length."""
    return repr(node) if len(node) <= 40 else f"{node[:24]!r}... ({len(node)} chars)"


def node_id_refusal(what: str, node: str, *, new_member: bool = False) -> Reply | None:
    """The ``bad_request`` answer to an admin request (``what``) naming an unusable node id,
    else None. One rule for every admin request, checked before anything is written: the
    Raft core's (``check_node_id``: a non-empty string of bounded length) and the admin's
    own characters (``_ID_FORBIDDEN``). NEW_MEMBER (add_node): also no longer than
    ``ukehi node --id`` accepts (``MAX_NODE_NAME_LEN``), or the member added could never
    start; removals and transfers keep the core's bound, so a member an older build let in
    with a longer id can still be removed."""
    try:
        check_node_id("a node id", node)
    except (TypeError, ValueError) as e:
        shown = _shown(node) if isinstance(node, str) else type(node).__name__
        return err(wire.ErrorCode.BAD_REQUEST, f"{what}: {e}, {_ID_RULE}; got {shown}; nothing was done")
    if any(c in node for c in _ID_FORBIDDEN):
        return err(wire.ErrorCode.BAD_REQUEST, f"{what}: node id {_shown(node)} must be {_ID_RULE}; "
                   "nothing was done")
    if new_member and len(node) > MAX_NODE_NAME_LEN:
        return err(wire.ErrorCode.BAD_REQUEST,
                   f"{what}: node id {_shown(node)} is longer than the {MAX_NODE_NAME_LEN} characters "
                   "`ukehi node --id` accepts, so no node so named could start; nothing was done")
    return None


class AdminAPI:
    driver: Any
    clock: Any
    config: Any
    log: Any

    async def _wait_progress(self, timeout: float) -> None:
        """Until the driver reports progress, or `timeout` seconds."""
        event = self._progress  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel on 3.11
                await event.wait()
        except asyncio.TimeoutError:
            pass

    async def _conf_change(self, changes: list[ConfChange], deadline: float) -> Reply | None:
        """Propose a membership change and wait until it applied and the config left joint."""
        driver = self.driver
        while True:
            placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            driver.push(ProposeConfChange(tuple(changes), placed))
            try:
                waiter = await placed
                break
            except NotLeader:
                return self._not_leader("membership change")  # type: ignore[attr-defined]
            except ProposalDropped as e:
                # Another change still in flight, or our term's no-op not committed yet.
                if self.clock.monotonic() > deadline:
                    return err(wire.ErrorCode.UNAVAILABLE, f"membership change not started: {e}")
                await self._wait_progress(0.05)
            except ValueError as e:
                return err(wire.ErrorCode.BAD_REQUEST, f"membership change refused: {e}")
        msg_type, body = await waiter
        if msg_type is not wire.MsgType.OK:
            return msg_type, body
        while driver.core is not None and driver.core.membership.joint:
            if self.clock.monotonic() > deadline:
                return err(wire.ErrorCode.TIMEOUT, "the change committed but leaving the joint configuration "
                           "has not finished in time; it will complete on its own")
            await self._wait_progress(0.02)
        return None

    async def _add_node(self, node: str, address: str) -> Reply:
        try:
            parse_address(address)
        except ValueError as e:
            return err(wire.ErrorCode.BAD_REQUEST, str(e))
        # Before the address key is written: nothing of a refused request reaches the log.
        refused = node_id_refusal("add_node", node, new_member=True)
        if refused is not None:
            return refused
        async with self._admin_lock:  # type: ignore[attr-defined]
            core = self.driver.core
            assert core is not None
            if core.role is not Role.LEADER:
                return self._not_leader("add_node")  # type: ignore[attr-defined]
            deadline = self.clock.monotonic() + PROPOSAL_TIMEOUT
            # 1. Replicate the address first, so every member can reach the new node.
            answer = await self._write(  # type: ignore[attr-defined]
                {"op": "put", "key": ADDRESS_KEY_PREFIX + node, "value": address})
            if answer[0] is not wire.MsgType.OK:
                return answer
            m = core.membership
            if node in m.voters:
                return wire.MsgType.OK, wire.ok_body({"members": sorted(m.voters), "already": True})
            # 2. As a learner: it catches up (log or snapshot) without counting toward quorum.
            if node not in m.learners:
                bad = await self._conf_change([ConfChange(ConfChangeType.ADD_LEARNER, node)], deadline)
                if bad is not None:
                    return bad
                self.log.info("learner-added", peer=node, address=address)
            # 3. Wait until it has caught up, then promote it through joint consensus. From
            # here on the cluster has changed (a learner), so no failure is "definite".
            while True:
                st = core.status()
                pr = st.progress.get(node)
                if st.role is not Role.LEADER:
                    return partial(f"{node} is a learner; leadership was lost before promoting it")
                if pr is not None and pr.match >= st.commit - 1 and pr.match > 0:
                    break
                if self.clock.monotonic() > deadline:
                    return partial(f"{node} is a learner but did not catch up in time; is it running at {address}?")
                await self._wait_progress(0.05)
            bad = await self._conf_change([ConfChange(ConfChangeType.ADD_VOTER, node)], deadline)
            if bad is not None:
                return partial(f"{node} is a learner; promoting it to voter failed: {bad[1].get('message', '')}")
            members = sorted(core.membership.voters)
            self.log.info("node-added", peer=node, address=address, members=",".join(members))
            return wire.MsgType.OK, wire.ok_body({"members": members})

    async def _remove_node(self, node: str) -> Reply:
        refused = node_id_refusal("remove_node", node)
        core = self.driver.core
        # A member stays removable whatever its name (a learner an older build added with a
        # tab in its id, say); the core keeps every member within check_node_id's bound.
        if refused is not None and (core is None or node not in core.membership.all_nodes()):
            return refused
        async with self._admin_lock:  # type: ignore[attr-defined]
            core = self.driver.core
            assert core is not None
            if core.role is not Role.LEADER:
                return self._not_leader("remove_node")  # type: ignore[attr-defined]
            if node not in core.membership.all_nodes():
                return err(wire.ErrorCode.BAD_REQUEST, f"{node} is not a member; members: "
                           + ",".join(sorted(core.membership.all_nodes())))
            deadline = self.clock.monotonic() + PROPOSAL_TIMEOUT
            bad = await self._conf_change([ConfChange(ConfChangeType.REMOVE, node)], deadline)
            if bad is not None:
                return bad
            members = sorted(core.membership.voters)
            self.log.info("node-removed", peer=node, members=",".join(members))
            return wire.MsgType.OK, wire.ok_body({"members": members})

    async def _transfer(self, target: str | None) -> Reply:
        if target is not None:
            refused = node_id_refusal("transfer_leader", target)
            if refused is not None:
                return refused
        core = self.driver.core
        assert core is not None
        st = core.status()
        if st.role is not Role.LEADER:
            return self._not_leader("transfer_leader")  # type: ignore[attr-defined]
        if target is None:
            candidates = [(pr.match, n) for n, pr in st.progress.items() if n in st.membership.voters]
            if not candidates:
                return err(wire.ErrorCode.UNAVAILABLE, "no other voter to hand leadership to")
            target = max(candidates)[1]
        refused = await self._start_transfer(target, st.term)
        if refused is not None:
            return refused
        deadline = self.clock.monotonic() + 3 * self.config.election_timeout_ms[1] / 1000.0
        term = st.term
        while self.clock.monotonic() < deadline:
            if core.lead == target:
                return wire.MsgType.OK, wire.ok_body({"leader": target})
            if core.role is Role.LEADER and (core.term > term or core.lead_transferee is None):
                # Ask again while time remains, as a client would, when the target's election
                # failed (e.g. a voter's vote never reached it: a node just added has no
                # inbound links yet) and this node won the next term, or when the core gave
                # the transfer up after an election timeout in the same term (its TimeoutNow
                # was lost on a link being reopened, or the target caught up too slowly).
                term = core.term
                refused = await self._start_transfer(target, term)
                if refused is not None:
                    return refused
            await self._wait_progress(0.02)
        # The target may still win a late election: unknown, not failed.
        return err(wire.ErrorCode.TIMEOUT, f"leadership did not move to {target} in time; leader is {core.lead}")

    async def _start_transfer(self, target: str, term: int) -> Reply | None:
        """Hand the core a TransferLeader to ``target``; an error reply if it refused, else None."""
        placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.driver.push(TransferLeader(target, placed))
        try:
            await placed
        except NotLeader:
            return self._not_leader("transfer_leader")  # type: ignore[attr-defined]
        except (ValueError, KeyError) as e:
            return err(wire.ErrorCode.BAD_REQUEST, f"cannot transfer leadership to {target}: {e}")
        self.log.info("transfer-leader", target=target, term=term)
        return None

    async def _manual_snapshot(self) -> Reply:
        assert self.driver.core is not None
        # The Ready loop takes it at a quiet point (the core refuses calls mid-Ready).
        placed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.driver.push(TakeSnapshot(placed))
        try:
            result = await placed
        except (StorageError, OSError, ValueError) as e:
            return err(wire.ErrorCode.INTERNAL, f"snapshot failed: {e}")
        return wire.MsgType.OK, wire.ok_body(result)
