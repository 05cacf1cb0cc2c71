"""Outbound peer links: one TCP connection per peer, reconnect with exponential back-off.

With mutual TLS each link presents this node's certificate and accepts only the peer's own
node certificate (CN = the peer's id, OU = node; see ukehi/tls.py).

The node hands each Ready's messages for one peer to `PeerTransport.send` in one list.
While the connection keeps up (nothing waiting in the link's buffer, the socket's write
buffer below its high-water mark) they are written to the socket at once, in one `write`:
no task hand-off, which at one write in flight was a pump wake-up, a new waiter Task and an
`asyncio.wait` per peer per Ready (issue 17: a write passes through several such hand-offs
on each node). Otherwise they are appended to the link's buffer and the link's writer task
writes everything buffered in one `write` + `drain` (batching across Readies while a drain
is slow). Order is kept either way: a direct write happens only when the buffer is empty.

Raft tolerates lost messages, so a link never blocks the node: while a peer is unreachable
its buffer is dropped (and `on_unreachable(peer)` tells the core to slow down replication to
it), and the buffer is bounded in bytes, so a dead or slow peer cannot grow memory.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from typing import Callable

from ukehi import wire
from ukehi.nodelog import NodeLogger
from ukehi.tls import ROLE_NODE, identity_of

__all__ = ["PeerTransport", "PeerLink"]

Address = tuple[str, int]

#: Frames go straight to the socket while its write buffer holds less than this (asyncio's
#: default high-water mark); above it they wait in the link's buffer for the writer task,
#: whose `drain` is the flow control (and the bound: `max_buffer_bytes`).
_DIRECT_WRITE_LIMIT = 64 * 1024


class PeerLink:
    """The connection to one peer and its bounded send buffer."""

    def __init__(
        self,
        owner: "PeerTransport",
        peer: str,
        address: Address,
    ) -> None:
        self.owner = owner
        self.peer = peer
        self.address = address
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None  # set while connected: direct writes
        self.direct_writes = 0
        self.connected = False
        self.backing_off = False
        self.dropped = 0
        self.tls_failed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, frames: list[bytes]) -> None:
        if self.backing_off:
            # The peer is known to be unreachable: drop now (Raft retries) rather than
            # hoard stale messages. While a connect is in progress, messages wait in the
            # (bounded) buffer: a candidate's first vote requests must not be lost.
            self.dropped += len(frames)
            return
        if not frames:
            return
        writer = self._writer
        if writer is not None and not self._buf:
            transport = writer.transport
            if not transport.is_closing() and transport.get_write_buffer_size() < _DIRECT_WRITE_LIMIT:
                transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
                self.direct_writes += 1
                return
        for f in frames:
            if self._buf_bytes + len(f) > self.owner.max_buffer_bytes:
                self.dropped += 1
                continue
            self._buf.append(f)
            self._buf_bytes += len(f)
        self._wake.set()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass

    async def _run(self) -> None:
        backoff = self.owner.min_backoff
        rng = random.Random()
        log = self.owner.log
        was_connected_once = False
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                tls = self.owner.tls
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
                # lands as the connection completes, and close() then waited for this link forever
                # (a node that never exited after SIGTERM).
                async with asyncio.timeout(self.owner.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        *self.address, **({"ssl": tls} if tls is not None else {}))
                if tls is not None:
                    # The certificate must be this peer's node certificate, whatever the
                    # address: a node reached at a stale or spoofed address gets nothing.
                    ident = identity_of(writer.get_extra_info("peercert"))
                    if ident is None or ident.role != ROLE_NODE or ident.name != self.peer:
                        log.warning("peer-identity-mismatch", peer=self.peer,
                                    address=f"{self.address[0]}:{self.address[1]}", presented=str(ident),
                                    detail="the node at this address is not the peer it was meant to be")
                        raise ConnectionError(f"{self.peer}'s address answered as {ident}")
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(
                    wire.encode_frame(
                        wire.MsgType.HELLO, 0,
                        {"role": "peer", "version": wire.PROTOCOL_VERSION, "node": self.owner.node_id,
                         **({"address": self.owner.advertise} if self.owner.advertise else {})},
                    )
                )
                await writer.drain()
                self.connected = True
                self.tls_failed = False
                was_connected_once = True
                backoff = self.owner.min_backoff
                log.info("peer-connected", peer=self.peer, address=f"{self.address[0]}:{self.address[1]}")
                self._writer = writer
                await self._pump(reader, writer)
            except asyncio.CancelledError:
                if writer is not None:
                    writer.close()
                raise
            except ssl.SSLError as e:
                # A refused handshake (foreign CA, expired certificate) is worth a warning,
                # once per outage rather than once per retry.
                if not self.tls_failed:
                    log.warning("peer-tls-failed", peer=self.peer, reason=e.reason or str(e))
                self.tls_failed = True
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                if self.connected:
                    log.info("peer-disconnected", peer=self.peer, reason=str(e) or type(e).__name__)
                elif not was_connected_once:
                    log.debug("peer-connect-failed", peer=self.peer, reason=str(e) or type(e).__name__)
            finally:
                self._writer = None
                if self.connected:
                    self.connected = False
                self.dropped += len(self._buf)
                self._buf.clear()
                self._buf_bytes = 0
                if writer is not None:
                    try:
                        writer.close()
                    except Exception:
                        pass
            self.owner.on_unreachable(self.peer)
            # Exponential back-off with jitter, capped: a dead peer costs one connect attempt
            # per `max_backoff`, and a restarted one is found again quickly.
            self.backing_off = True
            try:
                await asyncio.sleep(backoff * (0.5 + rng.random()))
            finally:
                self.backing_off = False
            backoff = min(self.owner.max_backoff, backoff * 2)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The remote never sends on this connection; reading only detects that it closed.
        closed = asyncio.get_running_loop().create_task(reader.read(1))
        try:
            while True:
                if not self._buf:
                    self._wake.clear()
                    waiter = asyncio.get_running_loop().create_task(self._wake.wait())
                    done, _ = await asyncio.wait(
                        {waiter, closed}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if closed in done:
                        waiter.cancel()
                        raise ConnectionError("peer closed the connection")
                    continue
                data = b"".join(self._buf)
                self._buf.clear()
                self._buf_bytes = 0
                writer.write(data)
                await writer.drain()
                if closed.done():
                    raise ConnectionError("peer closed the connection")
        finally:
            closed.cancel()


class PeerTransport:
    """All outbound peer links of one node."""

    def __init__(
        self,
        node_id: str,
        log: NodeLogger,
        on_unreachable: Callable[[str], None],
        *,
        advertise: str | None = None,
        min_backoff: float = 0.02,
        max_backoff: float = 1.0,
        connect_timeout: float = 1.0,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self.tls = tls  # this node's client context (its node certificate); None: plain TCP
        self.advertise = advertise
        self.log = log
        self.on_unreachable = on_unreachable
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.max_buffer_bytes = max_buffer_bytes
        self._links: dict[str, PeerLink] = {}

    def ensure(self, peer: str, address: Address) -> PeerLink:
        link = self._links.get(peer)
        if link is None:
            link = PeerLink(self, peer, address)
            self._links[peer] = link
        elif link.address != address:
            link.address = address
        return link

    def is_connected(self, peer: str) -> bool:
        link = self._links.get(peer)
        return link is not None and link.connected

    def send(self, peer: str, address: Address | None, frames: list[bytes]) -> bool:
        """Queue frames for `peer`; False if its address is unknown (frames dropped)."""
        if address is None:
            return False
        self.ensure(peer, address).enqueue(frames)
        return True

    def linked_peers(self) -> list[str]:
        """The peers a link exists for (connected or reconnecting)."""
        return list(self._links)

    async def drop(self, peer: str) -> None:
        link = self._links.pop(peer, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
