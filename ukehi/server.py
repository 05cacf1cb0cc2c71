"""The node's listening side: accepts connections, reads frames, dispatches, writes answers.

Clients and peers share one port and one framing (`ukehi.wire`). A peer announces itself
with a `hello` frame (role "peer") and then only sends `raft` frames, which get no answer;
a client sends requests and gets one `ok`/`error` frame per request id, in any order.

Hostile input is the normal case here, not an exception:

* every frame is checked by `wire.read_frame` (size limit before the body is read, schema);
  a bad frame closes *that* connection with one logged `bad-frame` line, nothing else;
* a connection that stalls in the middle of a frame for `frame_timeout` seconds is closed
  (half-open or slow-loris connections cannot pin a buffer forever);
* at most `max_connections` connections are served at once; more are closed at accept;
* frames over 64 KiB being received at the same time share a node-wide budget
  (`max_buffered_bytes`); a frame that would exceed it closes its connection;
* each connection has at most `max_in_flight` requests being processed; beyond that the
  reader stops reading (TCP back-pressure), so a client that never reads its answers cannot
  grow the node's memory without bound.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from ukehi import wire
from ukehi.nodelog import NodeLogger

__all__ = ["FrameHandler", "NodeServer"]

_SMALL_FRAME = 64 * 1024


class FrameHandler(Protocol):
    """What the server needs from the node."""

    async def handle_request(self, frame: wire.Frame) -> tuple[wire.MsgType, dict[str, Any]]:
        """Answer one client request: (OK or ERROR, body). Must not raise."""
        ...

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        """Take one `raft` frame from a peer (no answer). May raise ValueError if bad."""
        ...

    def peer_hello(self, peer: str, address: str) -> None:
        """A peer's hello named the address it listens on."""
        ...


class _Conn:
    __slots__ = ("writer", "peer_name", "role", "remote", "in_flight", "tasks", "out", "flush_scheduled")

    def __init__(self, writer: asyncio.StreamWriter, remote: str, max_in_flight: int) -> None:
        self.writer = writer
        self.remote = remote
        self.peer_name: str | None = None
        self.role = "unknown"
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        # Answers ready in one event-loop pass go out in one write (one send syscall):
        # with hundreds of requests in flight, per-answer sends cost more than the work.
        self.out: list[bytes] = []
        self.flush_scheduled = False

    def queue(self, data: bytes) -> None:
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        if out and not self.writer.is_closing():
            self.writer.write(b"".join(out))


class NodeServer:
    def __init__(
        self,
        handler: FrameHandler,
        log: NodeLogger,
        *,
        max_frame: int = wire.DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = 512,
        max_in_flight: int = 4096,
        frame_timeout: float = 30.0,
        max_buffered_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.handler = handler
        self.log = log
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.frame_timeout = frame_timeout
        self.max_buffered_bytes = max_buffered_bytes
        self._in_progress_bytes = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self.bad_frames = 0  # counters, reported in status
        self.refused_connections = 0

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port; returns the bound address (port 0 picks a free one)."""
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=self.max_frame + 1024, reuse_address=True,
            backlog=512,
        )
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            for t in list(conn.tasks):
                t.cancel()
            try:
                conn.writer.close()
            except Exception:
                pass
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        remote = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if len(self._conns) >= self.max_connections:
            self.refused_connections += 1
            self.log.warning(
                "connection-refused", remote=remote,
                reason=f"too many connections (limit {self.max_connections})",
            )
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = _Conn(writer, remote, self.max_in_flight)
        self._conns.add(conn)
        reason = "closed by remote"
        try:
            reason = await self._read_loop(conn, reader)
        except asyncio.CancelledError:
            reason = "node shutting down"
        except (ConnectionError, OSError) as e:
            reason = f"connection error: {e}"
        finally:
            self._conns.discard(conn)
            for t in list(conn.tasks):
                t.cancel()
            try:
                writer.close()
            except Exception:
                pass
            self.log.debug("connection-closed", remote=remote, role=conn.role, reason=reason)

    async def _read_frame(self, reader: asyncio.StreamReader) -> wire.Frame | None:
        # The 4-byte prefix may wait forever (an idle client is fine); the body must follow
        # within frame_timeout, or the connection is half-open / hostile.
        try:
            head = await reader.readexactly(4)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise wire.ProtocolError(
                f"connection closed inside a length prefix ({len(e.partial)} of 4 bytes)"
            ) from None
        length = int.from_bytes(head, "big")
        if length == 0:
            raise wire.ProtocolError("empty frame (length 0)")
        if length > self.max_frame:
            raise wire.ProtocolError(
                f"frame length {length} exceeds the maximum frame size {self.max_frame}"
            )
        # Large frames draw on a node-wide budget while they are being received, so many
        # connections each announcing a big frame cannot add up to unbounded memory.
        reserved = length if length > _SMALL_FRAME else 0
        if reserved and self._in_progress_bytes + reserved > self.max_buffered_bytes:
            raise wire.ProtocolError(
                f"frame of {length} bytes refused: {self._in_progress_bytes} bytes of large frames "
                f"already being received (limit {self.max_buffered_bytes}); retry later"
            )
        self._in_progress_bytes += reserved
        try:
            async with asyncio.timeout(self.frame_timeout):
                payload = await reader.readexactly(length)
        except TimeoutError:
            raise wire.ProtocolError(
                f"frame of {length} bytes not complete after {self.frame_timeout:.0f}s "
                "(half-open or stalled connection)"
            ) from None
        except asyncio.IncompleteReadError as e:
            raise wire.ProtocolError(
                f"connection closed mid-frame ({len(e.partial)} of {length} bytes)"
            ) from None
        finally:
            self._in_progress_bytes -= reserved
        return wire.decode_payload(payload)

    async def _read_loop(self, conn: _Conn, reader: asyncio.StreamReader) -> str:
        while True:
            try:
                frame = await self._read_frame(reader)
            except wire.ProtocolError as e:
                self._bad_frame(conn, str(e))
                return f"bad frame: {e}"
            if frame is None:
                return "closed by remote"
            t = frame.type
            if t is wire.MsgType.RAFT:
                try:
                    self.handler.handle_peer_frame(frame, conn.peer_name)
                except (ValueError, TypeError, KeyError) as e:
                    self._bad_frame(conn, f"bad raft message: {e}")
                    return f"bad raft message: {e}"
                conn.role = "peer"
                continue
            if t is wire.MsgType.HELLO:
                conn.role = frame.body["role"]
                conn.peer_name = frame.body.get("node")
                if conn.role == "peer" and conn.peer_name and frame.body.get("address"):
                    self.handler.peer_hello(conn.peer_name, frame.body["address"])
                continue
            if t in wire.CLIENT_REQUESTS:
                conn.role = "client" if conn.role == "unknown" else conn.role
                # Back-pressure: stop reading while too many requests are being processed.
                await conn.in_flight.acquire()
                task = asyncio.get_running_loop().create_task(self._answer(conn, frame))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
                continue
            # ok/error frames are answers; nobody asked this connection anything.
            self._bad_frame(conn, f"unexpected {t.value} frame: the node only answers requests")
            return f"unexpected {t.value} frame"

    async def _answer(self, conn: _Conn, frame: wire.Frame) -> None:
        try:
            try:
                msg_type, body = await self.handler.handle_request(frame)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug in the node must not kill the connection handler
                self.log.error("request-failed", remote=conn.remote, type=frame.type.value, error=repr(e))
                msg_type, body = wire.MsgType.ERROR, wire.error_body(
                    wire.ErrorCode.INTERNAL, f"internal error on the node: {e!r}"
                )
            try:
                data = wire.encode_frame(msg_type, frame.id, body, max_size=self.max_frame)
            except wire.ProtocolError as e:
                data = wire.encode_frame(
                    wire.MsgType.ERROR, frame.id,
                    wire.error_body(wire.ErrorCode.INTERNAL, f"answer could not be encoded: {e}"),
                )
            if conn.writer.is_closing():
                return
            conn.queue(data)
            # Back-pressure: a client that does not read its answers stops being served.
            await conn.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            conn.in_flight.release()

    def _bad_frame(self, conn: _Conn, reason: str) -> None:
        self.bad_frames += 1
        # Only the first 200 characters: a hostile frame must not flood the log either.
        self.log.warning("bad-frame", remote=conn.remote, role=conn.role, reason=reason[:200])

