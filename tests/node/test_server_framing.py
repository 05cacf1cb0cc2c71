"""The node server's read loop: many frames in one chunk, one frame over many chunks, good
frames before a bad one still answered, and common requests answered by callbacks."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from ukehi import wire
from ukehi.nodelog import NodeLogger
from ukehi.server import NodeServer


class _Handler:
    def __init__(self) -> None:
        self.via_callback = 0
        self.via_task = 0

    def start_request(self, frame: wire.Frame, done: Callable[[wire.MsgType, dict[str, Any]], None]) -> bool:
        if frame.type is not wire.MsgType.GET:
            return False
        self.via_callback += 1
        # Answer later, from a callback, as the node does once the read is confirmed.
        asyncio.get_running_loop().call_soon(done, wire.MsgType.OK, wire.ok_body(frame.body["key"]))
        return True

    async def handle_request(self, frame: wire.Frame) -> tuple[wire.MsgType, dict[str, Any]]:
        self.via_task += 1
        return wire.MsgType.OK, wire.ok_body("status")

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        pass

    def peer_hello(self, peer: str, address: str) -> None:
        pass


async def _answers(reader: asyncio.StreamReader, n: int) -> dict[int, Any]:
    out = {}
    async with asyncio.timeout(10):
        for _ in range(n):
            f = await wire.read_frame(reader)
            assert f is not None
            out[f.id] = f.body.get("value")
    return out


def test_frames_are_cut_from_chunks_whatever_their_boundaries():
    async def scenario() -> None:
        handler = _Handler()
        server = NodeServer(handler, NodeLogger("t", "error", stream=open(os.devnull, "w")))
        host, port = await server.start("127.0.0.1", 0)
        try:
            r, w = await asyncio.open_connection(host, port)
            # 200 requests in one write: read in a few chunks, each holding many frames.
            w.write(b"".join(wire.encode_frame("get", i, {"key": f"k{i}"}) for i in range(1, 201)))
            w.write(wire.encode_frame("status", 500, {}))
            got = await _answers(r, 201)
            assert got == {**{i: f"k{i}" for i in range(1, 201)}, 500: "status"}
            assert handler.via_callback == 200 and handler.via_task == 1
            # One frame dribbled a byte at a time: answered once it is whole.
            frame = wire.encode_frame("get", 777, {"key": "x" * 300})
            for k in range(len(frame)):
                w.write(frame[k:k + 1])
                await w.drain()
                if k % 50 == 0:
                    await asyncio.sleep(0.01)
            assert await _answers(r, 1) == {777: "x" * 300}
            # Good frames, then a bad one in the same chunk: the good ones still reach the
            # node (as they did when frames were read one by one), the bad one closes the
            # connection and is counted.
            w.write(wire.encode_frame("get", 901, {"key": "a"}) + wire.encode_frame("get", 902, {"key": "b"})
                    + b"\x00\x00\x00\x03abc")
            async with asyncio.timeout(5):
                while await r.read(4096):
                    pass
            assert handler.via_callback == 203
            assert server.bad_frames == 1
            w.close()
        finally:
            await server.stop()

    asyncio.run(scenario())
