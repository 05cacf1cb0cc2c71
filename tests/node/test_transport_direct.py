"""PeerLink writes straight to the socket while it keeps up, and keeps order when it cannot.

At one write in flight every hand-off costs latency and CPU (issue 17), so a connected link
writes a Ready's frames at once instead of waking its writer task; when the socket's buffer
fills (a slow or stopped reader), frames wait in the link's buffer and the writer task's
drain is the flow control. Either way the peer must see every frame once, in send order.
"""

from __future__ import annotations

import asyncio
import io

from ukehi import wire
from ukehi.nodelog import NodeLogger
from ukehi.transport import PeerTransport


async def _connected_link(port: int) -> tuple[PeerTransport, object]:
    transport = PeerTransport("n1", NodeLogger("n1", stream=io.StringIO()), lambda peer: None)
    link = transport.ensure("n2", ("127.0.0.1", port))
    for _ in range(500):
        if link.connected:
            break
        await asyncio.sleep(0.01)
    assert link.connected, "the link never connected to the local listener"
    return transport, link


async def _collect(reader: asyncio.StreamReader, received: bytearray, want: int, got_all: asyncio.Event) -> None:
    """Read until the peer closes, setting `got_all` once `want` bytes have come."""
    while True:
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        received.extend(chunk)
        if len(received) >= want:
            got_all.set()


def _hello_length() -> int:
    return len(wire.encode_frame(wire.MsgType.HELLO, 0, {"role": "peer", "version": wire.PROTOCOL_VERSION, "node": "n1"}))


def test_a_connected_link_writes_directly_and_the_peer_gets_every_frame_in_order() -> None:
    async def scenario() -> None:
        received = bytearray()
        got_all = asyncio.Event()
        frames = [f"frame-{i:04d};".encode() for i in range(200)]
        expected = b"".join(frames)

        async def on_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _collect(reader, received, _hello_length() + len(expected), got_all)

        server = await asyncio.start_server(on_peer, "127.0.0.1", 0)
        transport, link = await _connected_link(server.sockets[0].getsockname()[1])
        try:
            for i in range(0, len(frames), 4):
                transport.send("n2", ("127.0.0.1", server.sockets[0].getsockname()[1]), frames[i:i + 4])
            await asyncio.wait_for(got_all.wait(), 10)
            assert bytes(received[_hello_length():]) == expected
            assert link.direct_writes == 50, "every send of a keeping-up link should be one direct write"
        finally:
            await transport.close()
            server.close()

    asyncio.run(scenario())


def test_a_link_whose_peer_stops_reading_buffers_and_still_delivers_in_order() -> None:
    async def scenario() -> None:
        received = bytearray()
        reading = asyncio.Event()
        frames = [bytes([65 + i % 26]) * 32_768 + f"#{i:05d}".encode() for i in range(400)]  # ~13 MiB
        expected = b"".join(frames)
        got_all = asyncio.Event()

        async def on_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reading.wait()  # a peer that stops reading: the sender's socket buffer fills
            await _collect(reader, received, _hello_length() + len(expected), got_all)

        server = await asyncio.start_server(on_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, link = await _connected_link(port)
        try:
            for f in frames:
                transport.send("n2", ("127.0.0.1", port), [f])
                await asyncio.sleep(0)
            # The kernel buffers took a few MiB at most: the rest waited in the link's buffer.
            assert link.direct_writes < len(frames)
            reading.set()
            await asyncio.wait_for(got_all.wait(), 30)
            assert bytes(received[_hello_length():]) == expected
            assert link.dropped == 0
        finally:
            await transport.close()
            server.close()

    asyncio.run(scenario())
