"""PeerTransport.close ends every link even when the stop lands as a connect completes.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
iteration as the awaited connect finishing: the link then went on to send its hello and
pump forever, ``close()`` awaited it forever, and a node never exited after SIGTERM (seen
in CI as a leader that wrote no ``shutdown`` line and was SIGKILLed).
"""

from __future__ import annotations

import asyncio
import io

import pytest

from ukehi.nodelog import NodeLogger
from ukehi.transport import PeerTransport


def test_close_ends_a_link_cancelled_as_its_connect_completes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def on_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            await reader.read()  # hold the connection open until the link closes it

        server = await asyncio.start_server(on_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        real_open = asyncio.open_connection
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        at_gate = asyncio.Event()

        async def gated_open(*args: object, **kwargs: object) -> object:
            pair = await real_open(*args, **kwargs)
            at_gate.set()
            await gate  # the connect "completes" when the test opens the gate
            return pair

        monkeypatch.setattr(asyncio, "open_connection", gated_open)
        transport = PeerTransport("n1", NodeLogger("n1", stream=io.StringIO()), lambda peer: None)
        link = transport.ensure("n2", ("127.0.0.1", port))
        await asyncio.wait_for(at_gate.wait(), 5)
        # The connect completes and the stop arrives in the same loop iteration.
        gate.set_result(None)
        closing = asyncio.get_running_loop().create_task(transport.close())
        done, _ = await asyncio.wait({closing}, timeout=3)
        try:
            assert closing in done, "transport.close() hung: the link swallowed its cancellation"
            assert link._task.done()
        finally:
            link._task.cancel()
            closing.cancel()
            for w in accepted:
                w.close()
            server.close()

    asyncio.run(scenario())
