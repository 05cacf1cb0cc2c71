"""What clients and peers call: request routing, reads, writes, peer frames, status.

A mixin of :class:`ukehi.node.server.UkehiNode` (which provides ``driver``, ``clock``,
``config``, ``log``, ``phase``, ``listener``): the same code answers TCP clients in a real
node and simulated clients in the simulator.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ukehi import wire
from ukehi.config import format_address, parse_address
from ukehi.kv import CommandError, encode_command
from ukehi.raft.messages import Message, MessageError, message_from_dict
from ukehi.raft.types import NotLeader, ProposalDropped
from ukehi.txnserve import serve_append, serve_txn

from .driver import ADDRESS_KEY_PREFIX, GROUP_ID, PROPOSAL_TIMEOUT, ROLE_NAMES
from .inputs import Propose, Step

__all__ = ["ClientAPI", "Reply", "err", "partial"]

Reply = tuple[wire.MsgType, dict[str, Any]]
_PLAIN_WRITES = frozenset({wire.MsgType.PUT, wire.MsgType.CAS, wire.MsgType.DELETE, wire.MsgType.FENCED_PUT})


class _Placed:
    """What the driver tells a proposal answered by callbacks: the future-like ``placed`` of
    :class:`~ukehi.node.inputs.Propose` (``done``, ``set_result``, ``set_exception``)."""

    __slots__ = ("_then", "_done")

    def __init__(self, then: Callable[[Any, BaseException | None], None]) -> None:
        self._then = then
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, waiter: Any) -> None:
        self._done = True
        self._then(waiter, None)

    def set_exception(self, exc: BaseException) -> None:
        self._done = True
        self._then(None, exc)


def _outcome(fut: asyncio.Future[Any]) -> Reply:
    """A proposal waiter's answer (the waiters only ever set results)."""
    if fut.cancelled():
        return err(wire.ErrorCode.TIMEOUT, "node shutting down; outcome unknown")
    exc = fut.exception()
    if exc is not None:
        return err(wire.ErrorCode.TIMEOUT, f"outcome unknown: {exc!r}")
    result: Reply = fut.result()
    return result


def err(code: wire.ErrorCode, message: str, **hint: Any) -> Reply:
    return wire.MsgType.ERROR, wire.error_body(code, message, **hint)


def partial(message: str) -> Reply:
    """An admin change that is half done: the outcome as a whole is unknown, not failed."""
    return err(wire.ErrorCode.TIMEOUT, f"partially done, outcome unknown: {message}")


class ClientAPI:
    # The Raft group this object serves (0 unsharded; a sharded node's groups set their own).
    group_id: int = GROUP_ID
    driver: Any
    clock: Any
    config: Any
    log: Any
    phase: str
    listener: Any
    bug: str | None

    # ------------------------------------------------------------------ peers
    def peer_hello(self, peer: str, address: str) -> None:
        """A peer said where it listens. Used only for peers this node has no address for
        (a joining node learns later members' addresses from the log, which it cannot
        receive before it can answer the leader); replicated addresses always win."""
        addresses = self.driver.addresses
        if peer == self.config.node_id or peer in addresses:
            return
        try:
            addresses[peer] = parse_address(address)
        except ValueError:
            return
        self.log.info("peer-address", peer=peer, address=address, source="hello")
        if self.phase == "running":
            self.driver.network.ensure(peer, addresses[peer])

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        if self.phase != "running":
            return  # not ready for Raft traffic yet; the sender retries
        try:
            msg = message_from_dict(frame.body)
        except MessageError as e:
            raise ValueError(str(e)) from None
        self.handle_peer_message(msg)

    def handle_peer_message(self, msg: Message) -> None:
        """A decoded peer message (the simulator hands most over without the wire codec)."""
        if self.phase != "running":
            return
        if msg.dst != self.config.node_id or msg.group_id != self.group_id:
            self.log.debug("misrouted-message", src=msg.src, dst=msg.dst, msg_group=msg.group_id)
            return
        self.driver.push_peer_message(Step(msg))

    def _leader_hint(self) -> dict[str, Any]:
        return self.driver.leader_hint()

    def _not_leader(self, what: str) -> Reply:
        hint = self._leader_hint()
        where = f"; the leader is {hint['leader']}" if hint.get("leader") else "; no leader is known yet"
        return err(wire.ErrorCode.NOT_LEADER, f"node {self.config.node_id} is not the leader, {what} not done{where}",
                   **hint)

    # ------------------------------------------------------------------ clients
    async def handle_request(self, frame: wire.Frame) -> Reply:
        t = frame.type
        if t is wire.MsgType.STATUS:
            return wire.MsgType.OK, wire.ok_body(self.status())
        if t is wire.MsgType.SHARD_MAP:
            # Unsharded: no map; a client routes everything to group 0 (ukehi.node.groups
            # answers this for a sharded node).
            return wire.MsgType.OK, wire.ok_body({"map": None, "addresses": {}})
        core = self.driver.core
        if self.phase != "running" or core is None:
            return err(wire.ErrorCode.RECOVERING,
                       f"node {self.config.node_id} is {self.phase} (WAL replay); retry shortly or use another node")
        if frame.group != self.group_id:
            if self.group_id == GROUP_ID:
                # A client routing by a shard map it cached from another cluster: this one is
                # unsharded (epoch 0), so it refreshes its map and sends to group 0.
                return err(wire.ErrorCode.WRONG_SHARD, f"node {self.config.node_id} is unsharded: it serves "
                           f"Raft group 0 only, not {frame.group}; nothing was done", epoch=0)
            return err(wire.ErrorCode.BAD_REQUEST, f"this is Raft group {self.group_id}, not {frame.group}")
        if core.recovering:
            return err(wire.ErrorCode.RECOVERING,
                       f"node {self.config.node_id} is catching up after a WAL cut; use another node")
        body = frame.body
        if t is wire.MsgType.GET:
            return await self._read(body["key"])
        if t is wire.MsgType.APPEND:
            return await serve_append(self, body["key"], body["value"], ADDRESS_KEY_PREFIX)
        if t is wire.MsgType.TXN:
            return await serve_txn(self, body["ops"], ADDRESS_KEY_PREFIX)
        if t in (wire.MsgType.PUT, wire.MsgType.CAS, wire.MsgType.DELETE, wire.MsgType.FENCED_PUT):
            if body["key"].startswith(ADDRESS_KEY_PREFIX):
                return err(wire.ErrorCode.BAD_REQUEST, "keys starting with \\x00ukehi/ are reserved for the node")
            return await self._write({"op": t.value, **body})
        if t in (wire.MsgType.ACQUIRE, wire.MsgType.RELEASE):
            # The leader stamps its clock into the command; the state machine never reads one.
            return await self._write({"op": t.value, **body, "now_ms": int(self.clock.time() * 1000)})
        if t is wire.MsgType.ADD_NODE:
            return await self._add_node(body["node"], body["address"])  # type: ignore[attr-defined]
        if t is wire.MsgType.REMOVE_NODE:
            return await self._remove_node(body["node"])  # type: ignore[attr-defined]
        if t is wire.MsgType.TRANSFER_LEADER:
            return await self._transfer(body.get("node"))  # type: ignore[attr-defined]
        if t is wire.MsgType.SNAPSHOT:
            return await self._manual_snapshot()  # type: ignore[attr-defined]
        if t is wire.MsgType.CHECKSUM:
            # Through the log like a write: every replica computes its digest at this index.
            return await self._write({"op": "checksum"})
        return err(wire.ErrorCode.BAD_REQUEST, f"request type {t.value} is not served by a node")

    # ------------------------------------------------------------------ callback path
    def start_request(self, frame: wire.Frame, done: Callable[[wire.MsgType, dict[str, Any]], None]) -> bool:
        """Take a common request (get, put, cas, delete, fenced_put) and answer it through
        ``done(type, body)`` from callbacks, without a Task per request; False: not taken
        (the caller runs ``handle_request`` instead, which answers everything else and
        every refusal below)."""
        t = frame.type
        if t is not wire.MsgType.GET and t not in _PLAIN_WRITES:
            return False
        core = self.driver.core
        if self.phase != "running" or core is None or frame.group != self.group_id or core.recovering:
            return False
        body = frame.body
        if t is wire.MsgType.GET:
            if self.bug == "stale-read":
                return False
            self._read_cb(body["key"], done)
            return True
        if body["key"].startswith(ADDRESS_KEY_PREFIX):
            return False
        command = {"op": t.value, **body}
        try:
            data = encode_command(command)  # validates it: the state machine will not again
        except CommandError as e:
            done(*err(wire.ErrorCode.BAD_REQUEST, str(e)))
            return True
        self._propose_cb(data, t.value, done, command)
        return True

    def _propose_cb(self, data: bytes, what: str, done: Callable[..., None],
                    command: dict[str, Any] | None = None) -> None:
        def placed(waiter: Any, exc: BaseException | None) -> None:
            if exc is not None:
                if isinstance(exc, NotLeader):
                    done(*self._not_leader(what))
                elif isinstance(exc, ProposalDropped):
                    done(*err(wire.ErrorCode.UNAVAILABLE, f"{what} not accepted now: {exc}"))
                else:
                    done(*err(wire.ErrorCode.INTERNAL, f"{what} failed on the node: {exc!r}"))
            elif self.bug == "ack-before-commit":
                done(wire.MsgType.OK, wire.ok_body(None))
            else:
                waiter.add_done_callback(lambda f: done(*_outcome(f)))

        self.driver.push(Propose(data, _Placed(placed), self.clock.monotonic() + PROPOSAL_TIMEOUT, command))

    def _read_cb(self, key: str, done: Callable[..., None]) -> None:
        def confirmed(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                done(*err(wire.ErrorCode.TIMEOUT, "read abandoned (node shutting down)"))
                return
            exc = fut.exception()
            if isinstance(exc, NotLeader):
                done(*self._not_leader("read"))
            elif exc is not None:
                done(*err(wire.ErrorCode.INTERNAL, f"read failed on the node: {exc!r}"))
            elif not fut.result():
                done(*err(wire.ErrorCode.NOT_LEADER,
                          "the read could not be confirmed (leadership lost or timed out); it had no effect",
                          **self._leader_hint()))
            else:
                # Read when the read index is applied (or later): still inside the request.
                done(wire.MsgType.OK, wire.ok_body(self.driver.kv.read(key)))

        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(confirmed)
        self.driver.add_read(fut)

    async def _write(self, command: dict[str, Any]) -> Reply:
        try:
            data = encode_command(command)
        except CommandError as e:
            return err(wire.ErrorCode.BAD_REQUEST, str(e))
        return await self._propose_and_wait(data, command["op"], command)

    async def _propose_and_wait(self, data: bytes, what: str, command: dict[str, Any] | None = None) -> Reply:
        loop = asyncio.get_running_loop()
        placed: asyncio.Future[Any] = loop.create_future()
        deadline = self.clock.monotonic() + PROPOSAL_TIMEOUT
        self.driver.push(Propose(data, placed, deadline, command))
        try:
            waiter = await placed
        except NotLeader:
            return self._not_leader(what)
        except ProposalDropped as e:
            return err(wire.ErrorCode.UNAVAILABLE, f"{what} not accepted now: {e}")
        if self.bug == "ack-before-commit":
            return wire.MsgType.OK, wire.ok_body(None)
        return await waiter

    async def _read(self, key: str) -> Reply:
        if self.bug == "stale-read":
            return wire.MsgType.OK, wire.ok_body(self.driver.kv.read(key))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.driver.add_read(fut)
        try:
            ok = await fut
        except NotLeader:
            return self._not_leader("read")
        if not ok:
            return err(wire.ErrorCode.NOT_LEADER,
                       "the read could not be confirmed (leadership lost or timed out); it had no effect",
                       **self._leader_hint())
        return wire.MsgType.OK, wire.ok_body(self.driver.kv.read(key))

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        driver = self.driver
        core = driver.core
        listener = self.listener
        base: dict[str, Any] = {
            "id": self.config.node_id,
            "address": format_address(self.config.advertise_address),
            "phase": self.phase,
            "clock": self.clock.time(),
            "pid": self.pid,  # type: ignore[attr-defined]
            "read_mode": self.config.read_mode,
            "corruption_policy": self.config.corruption_policy,
            "corruption": self.corruption,  # type: ignore[attr-defined]
            "connections": listener.connection_count,
            "bad_frames": listener.bad_frames,
            **listener.counters(),  # TLS, connection pools, forged/forbidden/refused counts
            "pending_proposals": len(driver.proposals),
            "unsafe_bug": self.bug,
            # Durability: false only with fsync = false in a --config file (needs
            # UKEHI_I_KNOW_THIS_IS_UNSAFE=1); a power cut can then lose acknowledged writes.
            "fsync": self.config.fsync,
            "bad_peer_messages": driver.bad_peer_messages,
            # The timers a fault schedule must stay inside (e.g. a link delay the new
            # leader's check-quorum tolerates).
            "election_timeout_ms": list(self.config.election_timeout_ms),
            "heartbeat_ms": self.config.heartbeat_ms,
            # counters since start (driver.py): how busy the node is when nothing happens
            "readies": driver.readies,
            "messages_sent": driver.messages_sent,
        }
        if core is None:
            base.update(role="follower", term=0, leader=None, leader_address=None, commit_index=0,
                        applied_index=driver.applied, members=[], outgoing=[], learners=[], joint=False,
                        recovering=True, last_index=0, last_term=0, snapshot_index=0,
                        stale_appends_refused=0)
            return base
        st = core.status()
        hint = self._leader_hint()
        base.update(
            role=ROLE_NAMES.get(st.role, st.role.value),
            raft_role=st.role.value,
            term=st.term,
            leader=st.leader,
            leader_address=hint.get("leader_address") or (
                format_address(self.config.advertise_address) if st.leader == self.config.node_id else None),
            commit_index=st.commit,
            applied_index=driver.applied,
            last_index=st.last_index,
            last_term=st.last_term,
            stale_appends_refused=st.stale_appends_refused,
            snapshot_index=st.snapshot_index,
            members=sorted(st.membership.voters | st.membership.outgoing),
            voters=sorted(st.membership.voters),
            outgoing=sorted(st.membership.outgoing),
            learners=sorted(st.membership.learners),
            joint=st.membership.joint,
            recovering=self.phase != "running" or st.recovering,
            refuse_votes_until=core.refuse_votes_until,
            lead_transferee=st.lead_transferee,
            progress={n: {"match": p.match, "next": p.next, "state": p.state} for n, p in st.progress.items()},
        )
        return base
