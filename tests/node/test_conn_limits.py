"""Idle, slow and flooding connections cannot lock peers and clients out of a node.

Issue 12: 700 idle sockets hit the 512-connection limit, and the wait for a length prefix
never timed out, so peers and clients were refused. Here: the frame and idle timeouts on a
real `NodeServer` socket, the client pool and the peers' reserve on real nodes, and a
3-node TLS cluster whose follower sits under a flood that keeps 2,000 idle sockets open
against it while the cluster loses its leader, re-elects, replicates, and answers
`ukehi kv status`. Loopback only; every loop has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from cluster import REPO

from ukehi import wire
from ukehi.client import UkehiClient
from ukehi.nodelog import NodeLogger
from ukehi.server import NodeServer
from ukehi.tls import ClientTLS, client_context


class _Handler:
    async def handle_request(self, frame: wire.Frame) -> tuple[wire.MsgType, dict[str, Any]]:
        return wire.MsgType.OK, wire.ok_body("pong")

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        pass

    def peer_hello(self, peer: str, address: str) -> None:
        pass


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float | None:
    """Seconds until the server closed the connection, None if it did not within LIMIT."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - t0


def test_frame_and_idle_timeouts_on_a_real_socket():
    async def scenario() -> None:
        server = NodeServer(_Handler(), NodeLogger("t", "debug", stream=open(os.devnull, "w")),
                            frame_timeout=0.6, idle_timeout=1.0, handshake_timeout=0.8)
        host, port = await server.start("127.0.0.1", 0)
        try:
            # One byte of a length prefix, then nothing: closed frame_timeout after that byte
            # (before, the prefix could be awaited forever).
            r1, w1 = await asyncio.open_connection(host, port)
            w1.write(wire.encode_frame("status", 1, {}))  # a complete frame: no longer pending
            w1.write(b"\x00")
            took = await _closed_after(r1, 5.0)
            assert took is not None and 0.4 < took < 2.0, took
            # A connection that never sends a complete frame: closed at the pending deadline.
            r2, w2 = await asyncio.open_connection(host, port)
            took = await _closed_after(r2, 5.0)
            assert took is not None and 0.6 < took < 2.0, took
            # A client that did talk, then went quiet: closed after idle_timeout.
            r3, w3 = await asyncio.open_connection(host, port)
            w3.write(wire.encode_frame("status", 1, {}))
            answer = await wire.read_frame(r3)
            assert answer is not None and answer.body["value"] == "pong"
            took = await _closed_after(r3, 5.0)
            assert took is not None and 0.8 < took < 2.5, took
            # A client that keeps talking is never cut.
            r4, w4 = await asyncio.open_connection(host, port)
            for i in range(6):
                w4.write(wire.encode_frame("status", i + 1, {}))
                assert (await wire.read_frame(r4)) is not None
                await asyncio.sleep(0.4)
            assert server.counters()["idle_closed"] >= 2
            for w in (w1, w2, w3, w4):
                w.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_full_client_pool_leaves_the_peers_reserve(make_cluster):
    """Authenticated clients that hold every client slot cannot keep peers out."""
    cluster = make_cluster(3, extra_args=["--max-connections", "12"])
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        victim = next(n for n in cluster.nodes if n != leader)
        port = cluster.nodes[victim].port
        term0 = (await cluster.wait_until(lambda s: victim in s, 10, "the victim's status", [victim]))[victim]["term"]
        held = []
        for _ in range(12):
            _, w = await cluster.open_connection(port)
            w.write(wire.encode_frame("status", 1, {}))
            held.append(w)
        await asyncio.sleep(0.5)
        # The 13th client is refused...
        r, w = await cluster.open_connection(port)
        w.write(wire.encode_frame("status", 1, {}))
        assert (await _closed_after(r, 5.0)) is not None
        w.close()
        assert "event=connection-refused" in cluster.nodes[victim].log_text()
        # ...but peers still get in: the other two restart, so every Raft message to the
        # victim comes over a new connection opened while the client pool is full.
        others = [n for n in cluster.nodes if n != victim]
        for n in others:
            cluster.nodes[n].kill9()
        for n in others:
            cluster.nodes[n].start()
        # Asked with a node certificate (which also uses the peers' reserve): the victim took
        # part in a new term and applied what the others committed.
        d = cluster.node_tls_dir(others[0])
        as_peer = ClientTLS(client_context(*(os.path.join(d, f) for f in ("ca.pem", "node.pem", "node.key"))))
        deadline = time.monotonic() + 30
        last: Any = None
        async with UkehiClient([cluster.nodes[victim].address], timeout=1.0, tls=as_peer) as c:
            while time.monotonic() < deadline:
                st = await c.status(cluster.nodes[victim].address)
                rest = await cluster.statuses(others)
                last = (st, rest)
                commit = max([s["commit_index"] for s in rest.values()] or [0])
                if st.ok and st.value["term"] > term0 and st.value["leader"] and commit > 0 \
                        and st.value["applied_index"] >= commit and st.value["peer_connections"] >= 2:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"the victim did not rejoin through the reserve: {last}\n{cluster.tails()}")
        assert st.value["client_connections"] == 12 and st.value["refused_connections"] >= 1, st.value
        for w in held:
            w.close()

    asyncio.run(scenario())


class _Flood:
    """Keeps COUNT idle TCP connections open to a port from a thread: whatever the node
    closes is reopened, at most RATE per second. Connections only; never a byte sent."""

    def __init__(self, port: int, count: int, rate: float) -> None:
        self.port, self.count, self.rate = port, count, rate
        self.opened = 0
        self.closed_by_node = 0
        self.peak_open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_Flood":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        live: set[socket.socket] = set()
        start = time.monotonic()
        deadline = start + 600  # bounded even if the test forgets to stop it
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                allowed = int((time.monotonic() - start) * self.rate) + self.count - self.opened
                while len(live) < self.count and allowed > 0:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", self.port))
                    sel.register(s, selectors.EVENT_READ)
                    live.add(s)
                    self.opened += 1
                    allowed -= 1
                self.peak_open = max(self.peak_open, len(live))
                for key, _ in sel.select(timeout=0.05):
                    s = key.fileobj  # type: ignore[assignment]
                    try:
                        data = s.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(s)
                        s.close()  # type: ignore[union-attr]
                        live.discard(s)  # type: ignore[arg-type]
                        self.closed_by_node += 1
        finally:
            for s in live:
                s.close()
            sel.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "insecure"])
def test_a_node_under_2000_idle_sockets_elects_replicates_and_answers_status(make_cluster, tls):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))  # the nodes inherit it
    cluster = make_cluster(3, tls=tls)
    cluster.start()

    async def scenario() -> None:
        leader = await cluster.wait_for_leader()
        victim = next(n for n in sorted(cluster.nodes) if n != leader)
        other = next(n for n in cluster.nodes if n not in (leader, victim))
        with _Flood(cluster.nodes[victim].port, 2000, rate=400) as flood:
            t0 = time.monotonic()
            while flood.opened < 2000 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)
            assert flood.peak_open >= 2000, (flood.peak_open, flood.opened)
            # The leader dies and the other follower restarts: electing a new leader and
            # replicating to the victim needs fresh peer connections into the flood.
            cluster.nodes[leader].kill9()
            cluster.nodes[other].kill9()
            cluster.nodes[other].start()
            new_leader = await cluster.wait_for_leader(timeout=30, among=[victim, other])
            async with cluster.client(addresses=[cluster.nodes[new_leader].address], timeout=10) as c:
                for i in range(20):
                    r = await c.put(f"k{i}", i)
                    assert r.ok, r
            await cluster.wait_until(
                lambda s: victim in s and s[victim]["applied_index"] >= s[new_leader]["commit_index"] > 0,
                20, "the victim to apply the writes", [victim, new_leader])
            # `ukehi kv status` from a terminal, through the flood, within its timeout.
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "ukehi.cli", "kv", "status", "--json", "--timeout", "5",
                 "--cluster", cluster.nodes[victim].address],
                capture_output=True, text=True, cwd=REPO, timeout=60,
                env={**{k: v for k, v in os.environ.items() if k != "UKEHI_TLS_DIR"},
                     **({"UKEHI_TLS_DIR": cluster.certs_dir} if tls else {})})
            assert done.returncode == 0, done.stderr
            st = json.loads(done.stdout)
            assert st["id"] == victim and st["commit_index"] > 0
            # The flood was real and the node shed it: idle sockets were evicted or timed out.
            assert flood.opened >= 2000 and flood.closed_by_node > 0
        status = (await cluster.wait_until(lambda s: victim in s, 10, "the victim's status", [victim]))[victim]
        print(f"flood: opened {flood.opened}, peak open {flood.peak_open}, closed by the node "
              f"{flood.closed_by_node}; node: {status['evicted_connections']} evicted, "
              f"{status['tls_refused']} refused handshakes")
        assert status["evicted_connections"] + status["tls_refused"] > 0, status
        assert status["pending_connections"] <= 128

    asyncio.run(scenario())


def test_a_peer_gone_right_after_the_tls_handshake_is_a_lost_connection_not_a_traceback():
    """CPython 3.11's StreamWriter.start_tls raises AttributeError when the peer closes
    between the end of the handshake and the task resuming (seen under leader-churn's
    client bursts); the server must treat it as a lost connection."""
    from ukehi.server import _Conn

    class Writer:
        def __init__(self) -> None:
            self._transport = self.transport = object()

        async def start_tls(self, ctx: Any) -> None:
            self._transport = None  # what asyncio leaves behind
            raise AttributeError("'NoneType' object has no attribute 'get_extra_info'")

    async def scenario() -> None:
        server = NodeServer(_Handler(), NodeLogger("t", "debug", stream=open(os.devnull, "w")))
        server.tls = object()  # only its presence matters to _handshake
        writer = Writer()
        conn = _Conn(writer, "127.0.0.1:1", 4)  # type: ignore[arg-type]
        refused = await server._handshake(conn)
        assert refused == "TLS refused: connection lost right after the TLS handshake"
        assert writer._transport is writer.transport  # close() and __del__ have a transport again
        assert server.tls_refused == 1

    asyncio.run(scenario())
