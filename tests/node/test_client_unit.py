"""The client library against scripted fake nodes: redirects, request ids, and the honest
split between definite failures and unknown outcomes."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from ukehi import wire
from ukehi.client import FAIL, UNKNOWN, UkehiClient

Behaviour = Callable[[wire.Frame, asyncio.StreamWriter], Awaitable[bool]]


class FakeNode:
    """A TCP server that answers each request frame with `behaviour` (False: close)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.received: list[wire.Frame] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frame = await wire.read_frame(reader)
                if frame is None:
                    break
                self.received.append(frame)
                if not await self.behaviour(frame, writer):
                    break
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def answer(msg_type: wire.MsgType, body: dict) -> Behaviour:
    async def behave(frame: wire.Frame, writer: asyncio.StreamWriter) -> bool:
        writer.write(wire.encode_frame(msg_type, frame.id, body))
        await writer.drain()
        return True

    return behave


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_connect_refused_is_a_definite_failure():
    async def go():
        node = FakeNode(answer(wire.MsgType.OK, {}))
        addr = await node.start()
        await node.stop()
        await asyncio.sleep(0.05)
        async with UkehiClient([addr], timeout=0.5, connect_timeout=0.2) as c:
            return await c.put("k", "v")

    r = run(go())
    assert r.outcome == FAIL and r.error == "connect_failed" and r.definite


def test_not_leader_redirect_is_followed_once():
    async def go():
        leader = FakeNode(answer(wire.MsgType.OK, {"value": "from-leader"}))
        leader_addr = await leader.start()
        follower = FakeNode(answer(wire.MsgType.ERROR, wire.error_body(
            wire.ErrorCode.NOT_LEADER, "not me", leader="n2", leader_address=leader_addr)))
        follower_addr = await follower.start()
        async with UkehiClient([follower_addr], timeout=2.0) as c:
            r = await c.get("k")
            again = await c.get("k")  # the client now goes straight to the leader
        return r, again, follower, leader, leader_addr

    r, again, follower, leader, leader_addr = run(go())
    assert r.ok and r.value == "from-leader" and r.node == leader_addr
    assert again.ok
    assert len(follower.received) == 1 and len(leader.received) == 2


def test_connection_closed_after_sending_is_unknown():
    async def close(frame, writer):
        return False

    async def go():
        node = FakeNode(close)
        addr = await node.start()
        async with UkehiClient([addr], timeout=2.0) as c:
            r = await c.put("k", "v")
        return r, node

    r, node = run(go())
    assert r.outcome == UNKNOWN and r.error == "connection_lost"
    assert len(node.received) == 1  # never retried after an unknown outcome


def test_no_answer_is_unknown_timeout():
    async def silent(frame, writer):
        return True

    async def go():
        node = FakeNode(silent)
        addr = await node.start()
        async with UkehiClient([addr], timeout=0.3) as c:
            return await c.cas("k", 1, 2)

    r = run(go())
    assert r.outcome == UNKNOWN and r.error == "timeout" and not r.definite


def test_error_codes_map_to_definite_or_unknown():
    async def go(code):
        node = FakeNode(answer(wire.MsgType.ERROR, wire.error_body(code, "scripted")))
        addr = await node.start()
        async with UkehiClient([addr], timeout=0.5) as c:
            return await c.request("put", {"key": "k", "value": 1}, target=addr)

    for code in wire.ErrorCode:
        r = run(go(code))
        expected = FAIL if code in wire.DEFINITE_ERRORS else UNKNOWN
        assert r.outcome == expected and r.error == code.value, (code, r)


def test_many_requests_in_flight_on_one_connection_are_matched_by_id():
    pending: list[tuple[wire.Frame, asyncio.StreamWriter]] = []

    async def collect_then_answer_backwards(frame, writer):
        pending.append((frame, writer))
        if len(pending) == 50:
            for f, w in reversed(pending):
                w.write(wire.encode_frame(wire.MsgType.OK, f.id, {"value": f.body["key"]}))
            await writer.drain()
        return True

    async def go():
        node = FakeNode(collect_then_answer_backwards)
        addr = await node.start()
        async with UkehiClient([addr], timeout=5.0) as c:
            results = await asyncio.gather(*(c.get(f"key-{i}") for i in range(50)))
        return results, node

    results, node = run(go())
    assert [r.value for r in results] == [f"key-{i}" for i in range(50)]
    assert len({f.id for f in node.received}) == 50


def test_invalid_arguments_fail_before_sending():
    async def go():
        node = FakeNode(answer(wire.MsgType.OK, {}))
        addr = await node.start()
        async with UkehiClient([addr], timeout=1.0) as c:
            r = await c.put(123, "v")  # type: ignore[arg-type]
        return r, node

    r, node = run(go())
    assert r.outcome == FAIL and r.error == "invalid_argument"
    assert node.received == []
