"""The node's listening side: accepts connections, reads frames, dispatches, writes answers.

Clients and peers share one port and one framing (`ukehi.wire`). A peer announces itself
with a `hello` frame (role "peer") and then only sends `raft` frames, which get no answer;
a client sends requests and gets one `ok`/`error` frame per request id, in any order.

Hostile input is the normal case here, not an exception:

* every frame is checked by `wire.read_frame` (size limit before the body is read, schema);
  a bad frame closes *that* connection with one logged `bad-frame` line, nothing else;
* once the first byte of a frame arrived, the whole frame (length prefix included) must
  follow within `frame_timeout` seconds, and a connection that sends no complete frame for
  `idle_timeout` seconds is closed (half-open, idle or slow-loris connections cannot pin a
  slot or a buffer forever);
* connections are *pending* until they proved who they are (the TLS handshake, or, with
  --insecure, their first complete frame), which must happen within `handshake_timeout`.
  At most `max_pending` are pending at once; a new connection beyond that evicts the oldest
  pending one, so a flood of idle sockets cannot lock out a real client or peer;
* proven connections go to one of two pools: clients (at most `max_connections`) and
  peers (`peer_reserve` more, usable only by authenticated nodes: a `node` certificate, or
  with --insecure a `hello` as peer); a connection beyond its pool is closed with a log line;
* frames over 64 KiB being received at the same time share a node-wide budget
  (`max_buffered_bytes`); a frame that would exceed it closes its connection;
* each connection has at most `max_in_flight` requests being processed; beyond that the
  reader stops reading (TCP back-pressure), so a client that never reads its answers cannot
  grow the node's memory without bound.

With mutual TLS (`tls` given, see ukehi/tls.py) the handshake runs here, on the accepted
socket, so a refused handshake (no certificate, a foreign CA, an expired certificate, plain
TCP) is one `tls-refused` log line naming the reason. Each connection then carries the
identity of its certificate, and every frame is checked against it: Raft traffic only from
`node` certificates and only with `src` equal to the certificate's node id (anything else
is dropped and counted as `forged_peer_messages`), admin verbs (`wire.ADMIN_REQUESTS`) only
from `admin` certificates, KV operations from `client` and `admin` ones; a refused request
gets a definite `forbidden` error. Log lines about refused connections are rate-limited.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import OrderedDict
from functools import partial
from typing import Any, Protocol

from ukehi import wire
from ukehi.nodelog import NodeLogger
from ukehi.tls import ROLE_ADMIN, ROLE_CLIENT, ROLE_NODE, Identity, identity_of

__all__ = ["FrameHandler", "NodeServer"]

_SMALL_FRAME = 64 * 1024
_READ_CHUNK = 256 * 1024  # bytes asked of the socket per read; many frames per read under load
_WRITE_HIGH = 256 * 1024  # answers buffered for a client beyond this: stop reading from it
_NEVER = float("inf")
_BURST = 20  # log lines per event and second about refused or dropped connections


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
    __slots__ = ("writer", "peer_name", "role", "remote", "in_flight", "tasks", "out", "flush_scheduled",
                 "identity", "pool", "task", "evicted", "deadline", "deadline_kind", "timer", "expired",
                 "reserved")

    def __init__(self, writer: asyncio.StreamWriter, remote: str, max_in_flight: int) -> None:
        self.writer = writer
        self.remote = remote
        self.peer_name: str | None = None
        self.role = "unknown"
        self.identity: Identity | None = None  # from the TLS certificate
        self.pool = "pending"  # pending -> client | peer
        self.task: asyncio.Task[Any] | None = None
        self.evicted = False
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        # Answers ready in one event-loop pass go out in one write (one send syscall):
        # with hundreds of requests in flight, per-answer sends cost more than the work.
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.deadline = _NEVER  # loop.time() by which the remote must have sent more
        self.deadline_kind = "pending"  # pending | idle | frame
        self.timer: asyncio.TimerHandle | None = None
        self.expired: str | None = None  # the deadline kind that expired (the task is cancelled)
        self.reserved = 0  # bytes of the large-frame budget held by the partial frame

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
        peer_reserve: int = 64,
        max_pending: int = 128,
        max_in_flight: int = 4096,
        frame_timeout: float = 30.0,
        idle_timeout: float = 120.0,
        handshake_timeout: float = 5.0,
        max_buffered_bytes: int = 256 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.log = log
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.peer_reserve = peer_reserve
        self.max_pending = max_pending
        self.max_in_flight = max_in_flight
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_buffered_bytes = max_buffered_bytes
        self.tls = tls
        # The node's callback path for common requests (no Task each); None: all via Tasks.
        self._start_request = getattr(handler, "start_request", None)
        self._in_progress_bytes = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._pending: OrderedDict[_Conn, None] = OrderedDict()  # oldest first
        self._pools: dict[str, int] = {"client": 0, "peer": 0}
        self._last_log: dict[str, tuple[float, int, int]] = {}
        self.bad_frames = 0  # counters, reported in status
        self.refused_connections = 0
        self.evicted_connections = 0
        self.idle_closed = 0
        self.tls_refused = 0
        self.forged_peer_messages = 0
        self.forbidden_requests = 0

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def counters(self) -> dict[str, Any]:
        """Connection and security counters, for the node's status."""
        return {
            "tls": self.tls is not None,
            "connections": len(self._conns),
            "pending_connections": len(self._pending),
            "client_connections": self._pools["client"],
            "peer_connections": self._pools["peer"],
            "refused_connections": self.refused_connections,
            "evicted_connections": self.evicted_connections,
            "idle_closed": self.idle_closed,
            "tls_refused": self.tls_refused,
            "forged_peer_messages": self.forged_peer_messages,
            "forbidden_requests": self.forbidden_requests,
        }

    def _limited(self, level: str, event: str, **fields: Any) -> None:
        """Log, but at most `_BURST` lines per event per second (a flood must not flood the
        log); the next line logged says how many were left out."""
        now = time.monotonic()
        start, logged, suppressed = self._last_log.get(event, (0.0, 0, 0))
        if now - start >= 1.0:
            start, logged = now, 0
        if logged >= _BURST:
            self._last_log[event] = (start, logged, suppressed + 1)
            return
        self._last_log[event] = (start, logged + 1, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        self.log.log(level, event, **fields)

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
                async with asyncio.timeout(2.0):  # not wait_for: it can swallow a cancel on 3.11
                    await self._server.wait_closed()
            except (asyncio.TimeoutError, Exception):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        remote = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = _Conn(writer, remote, self.max_in_flight)
        conn.task = asyncio.current_task()
        # A full pending pool makes room by closing its oldest member: a flood of sockets that
        # never prove themselves keeps cycling through the pool, and a real client or peer,
        # which proves itself in milliseconds, gets its turn.
        while len(self._pending) >= self.max_pending:
            oldest, _ = self._pending.popitem(last=False)
            oldest.evicted = True
            self.evicted_connections += 1
            if oldest.task is not None:
                oldest.task.cancel()
            self._limited("warning", "connection-evicted", remote=oldest.remote,
                          reason=f"{self.max_pending} connections pending (no TLS handshake or first frame yet); "
                                 "closed the oldest to admit a new one")
        self._pending[conn] = None
        self._conns.add(conn)
        reason = "closed by remote"
        try:
            reason = await self._run(conn, reader)
        except asyncio.CancelledError:
            reason = "evicted while pending" if conn.evicted else "node shutting down"
        except (ConnectionError, OSError) as e:
            reason = f"connection error: {e}"
        finally:
            self._conns.discard(conn)
            self._pending.pop(conn, None)
            if conn.pool in self._pools:
                self._pools[conn.pool] -= 1
            for t in list(conn.tasks):
                t.cancel()
            try:
                writer.close()
            except Exception:
                pass
            self.log.debug("connection-closed", remote=remote, role=conn.role, reason=reason)

    async def _run(self, conn: _Conn, reader: asyncio.StreamReader) -> str:
        if self.tls is not None:
            refused = await self._handshake(conn)
            if refused is not None:
                return refused
            assert conn.identity is not None
            refused = self._admit(conn, "peer" if conn.identity.role == ROLE_NODE else "client")
            if refused is not None:
                return refused
        return await self._read_loop(conn, reader)

    async def _handshake(self, conn: _Conn) -> str | None:
        """TLS on the accepted socket; the reason when refused (logged), else None."""
        assert self.tls is not None
        plain = conn.writer.transport
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await conn.writer.start_tls(self.tls)
        except AttributeError:
            # CPython 3.11: a peer that finishes the handshake and closes before this task
            # resumes leaves start_tls with no TLS transport (None), and it fails on it. Put
            # the closed plain transport back so close() and the writer's __del__ work.
            conn.writer._transport = plain  # type: ignore[attr-defined]
            reason = "connection lost right after the TLS handshake"
        except TimeoutError:
            reason = f"no TLS handshake within {self.handshake_timeout:g}s"
        except ssl.SSLError as e:
            reason = e.reason or str(e)
            detail = getattr(e, "verify_message", None)  # e.g. "certificate has expired"
            if detail:
                reason = f"{reason}: {detail}"
            if "WRONG_VERSION_NUMBER" in reason.upper() or "HTTP_REQUEST" in reason.upper():
                reason = f"not TLS (plain TCP?): {reason}"
        except (ConnectionError, OSError) as e:
            reason = f"connection lost during the TLS handshake: {e}"
        else:
            ident = identity_of(conn.writer.get_extra_info("peercert"))
            if ident is not None:
                conn.identity = ident
                conn.role = ident.role
                return None
            reason = "the certificate names no Ukehi principal (CN and an OU of node, client or admin)"
        self.tls_refused += 1
        self._limited("warning", "tls-refused", remote=conn.remote, reason=reason[:200])
        return f"TLS refused: {reason}"

    def _admit(self, conn: _Conn, pool: str) -> str | None:
        """Move a proven connection from pending into its pool; the reason when it is full."""
        self._pending.pop(conn, None)
        limit = self.peer_reserve if pool == "peer" else self.max_connections
        if self._pools[pool] >= limit:
            self.refused_connections += 1
            reason = (f"too many {pool} connections (limit {limit}"
                      + (f"; {self.peer_reserve} more are reserved for peers)" if pool == "client" else ")"))
            self._limited("warning", "connection-refused", remote=conn.remote, role=conn.role,
                          who=str(conn.identity) if conn.identity else None, reason=reason)
            conn.pool = "refused"
            return reason
        conn.pool = pool
        self._pools[pool] += 1
        return None

    # ------------------------------------------------------------------ deadlines
    # One deadline per connection instead of an asyncio.timeout around every read: the read
    # loop only moves `conn.deadline` (a float), and one timer per connection fires at the
    # earliest deadline it was armed for, re-arms itself if the deadline moved later, and
    # otherwise cancels the connection's task with the reason in `conn.expired`.
    def _set_deadline(self, conn: _Conn, when: float, kind: str) -> None:
        conn.deadline = when
        conn.deadline_kind = kind
        timer = conn.timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            conn.timer = asyncio.get_running_loop().call_at(when, self._deadline_due, conn)

    def _deadline_due(self, conn: _Conn) -> None:
        conn.timer = None
        loop = asyncio.get_running_loop()
        if conn.deadline == _NEVER:
            return  # waiting on back-pressure, not on the remote
        if loop.time() < conn.deadline:
            conn.timer = loop.call_at(conn.deadline, self._deadline_due, conn)
            return
        conn.expired = conn.deadline_kind
        if conn.task is not None:
            conn.task.cancel()

    def _expired(self, conn: _Conn, partial: int, length: int | None) -> Exception:
        """The exception the read loop raises for the deadline that expired."""
        kind = conn.expired
        conn.expired = None
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if kind == "frame":
            if length is None:
                return wire.ProtocolError(
                    f"length prefix not complete {self.frame_timeout:g}s after its first byte (stalled connection)")
            return wire.ProtocolError(
                f"frame of {length} bytes not complete {self.frame_timeout:g}s after its first byte "
                f"({partial - 4} of {length} bytes received; half-open or stalled connection)")
        wait = self.handshake_timeout if kind == "pending" else self.idle_timeout
        self.idle_closed += 1
        return _Idle(f"no complete frame for {wait:g}s (idle timeout)")

    async def _read_loop(self, conn: _Conn, reader: asyncio.StreamReader) -> str:
        try:
            return await self._read_frames(conn, reader)
        finally:
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            self._in_progress_bytes -= conn.reserved
            conn.reserved = 0

    async def _read_frames(self, conn: _Conn, reader: asyncio.StreamReader) -> str:
        """Read chunks, cut them into frames (the length is checked as soon as its prefix is
        in, before any of the body is waited for), and dispatch each frame."""
        loop = asyncio.get_running_loop()
        writer = conn.writer
        max_frame = self.max_frame
        buf: bytes | bytearray = b""  # the unparsed bytes: at most one partial frame after a pass
        length: int | None = None  # of the partial frame in buf, once its prefix is in
        # Between frames a connection may be quiet for idle_timeout (handshake_timeout while
        # it is still pending); once a frame's first byte arrived, the rest of it, length
        # prefix included, must follow within frame_timeout.
        if conn.pool == "pending":
            self._set_deadline(conn, loop.time() + self.handshake_timeout, "pending")
        else:
            self._set_deadline(conn, loop.time() + self.idle_timeout, "idle")
        while True:
            try:
                data = await reader.read(_READ_CHUNK)
            except asyncio.CancelledError:
                if conn.expired is None:
                    raise
                err = self._expired(conn, len(buf), length)
                if isinstance(err, _Idle):
                    self._limited("info", "connection-idle", remote=conn.remote, role=conn.role, reason=str(err))
                    return str(err)
                self._bad_frame(conn, str(err))
                return f"bad frame: {err}"
            if not data:
                if not buf:
                    return "closed by remote"
                reason = (f"connection closed inside a length prefix ({len(buf)} of 4 bytes)" if len(buf) < 4
                          else f"connection closed mid-frame ({len(buf) - 4} of {length} bytes)")
                self._bad_frame(conn, reason)
                return f"bad frame: {reason}"
            had_partial = bool(buf)
            if had_partial:
                buf += data  # a bytearray: a large frame grows in place, chunk by chunk
                if length is not None and len(buf) < 4 + length:
                    continue  # still inside the same frame (its deadline stands)
            else:
                buf = data
            pos = 0
            end_of_buf = len(buf)
            frames: list[wire.Frame] = []
            try:
                while end_of_buf - pos >= 4:
                    length = int.from_bytes(buf[pos:pos + 4], "big")
                    if length == 0:
                        raise wire.ProtocolError("empty frame (length 0)")
                    if length > max_frame:
                        raise wire.ProtocolError(
                            f"frame length {length} exceeds the maximum frame size {max_frame}")
                    end = pos + 4 + length
                    if end > end_of_buf:
                        break
                    frames.append(wire.decode_payload(buf[pos + 4:end]))
                    pos = end
                    length = None
            except wire.ProtocolError as e:
                await self._dispatch_all(conn, frames)  # the good frames before the bad one count
                self._bad_frame(conn, str(e))
                return f"bad frame: {e}"
            buf = bytearray(buf[pos:]) if pos < end_of_buf else b""
            # Large frames draw on a node-wide budget while they are being received, so many
            # connections each announcing a big frame cannot add up to unbounded memory.
            want = length if (buf and length is not None and length > _SMALL_FRAME) else 0
            if want != conn.reserved:
                if want and self._in_progress_bytes - conn.reserved + want > self.max_buffered_bytes:
                    reason = (f"frame of {length} bytes refused: {self._in_progress_bytes - conn.reserved} bytes "
                              f"of large frames already being received (limit {self.max_buffered_bytes}); retry later")
                    await self._dispatch_all(conn, frames)
                    self._bad_frame(conn, reason)
                    return f"bad frame: {reason}"
                self._in_progress_bytes += want - conn.reserved
                conn.reserved = want
            if frames:
                reason = await self._dispatch_all(conn, frames)
                if reason is not None:
                    return reason
            now = loop.time()
            if buf:
                if frames or not had_partial:  # a new frame started in this chunk
                    self._set_deadline(conn, now + self.frame_timeout, "frame")
            elif conn.pool == "pending":
                conn.deadline_kind = "pending"  # keeps its deadline from the accept
            else:
                # Moving a deadline later is one store; the timer re-arms itself when due.
                conn.deadline = now + self.idle_timeout
                conn.deadline_kind = "idle"
            # Back-pressure: a client that does not read its answers stops being read.
            transport = writer.transport
            if transport is not None and transport.get_write_buffer_size() > _WRITE_HIGH:
                await self._wait_on(conn, writer.drain())

    async def _wait_on(self, conn: _Conn, aw: Any) -> Any:
        """Await back-pressure with the connection's deadline suspended (the remote is not
        the one who is slow)."""
        saved, saved_kind = conn.deadline, conn.deadline_kind
        conn.deadline = _NEVER
        try:
            return await aw
        finally:
            if conn.expired is None:
                self._set_deadline(conn, max(saved, asyncio.get_running_loop().time()), saved_kind)

    async def _dispatch_all(self, conn: _Conn, frames: list[wire.Frame]) -> str | None:
        for frame in frames:
            reason = await self._dispatch(conn, frame)
            if reason is not None:
                return reason
        return None

    async def _dispatch(self, conn: _Conn, frame: wire.Frame) -> str | None:
        """Handle one frame; the reason to close the connection, or None to go on."""
        t = frame.type
        if conn.pool == "pending":
            # --insecure: the first complete frame is all the proof there is.
            is_peer = t is wire.MsgType.RAFT or (t is wire.MsgType.HELLO and frame.body.get("role") == "peer")
            refused = self._admit(conn, "peer" if is_peer else "client")
            if refused is not None:
                return refused
        ident = conn.identity
        if t is wire.MsgType.RAFT:
            if ident is not None and ident.role != ROLE_NODE:
                self.forged_peer_messages += 1
                self._limited("warning", "forged-peer-message", remote=conn.remote, who=str(ident),
                              src=_field(frame.body, "src"), term=_field(frame.body, "term"),
                              reason="Raft traffic from a certificate that is not a node's; connection closed")
                return f"Raft traffic from {ident}"
            # The sender is the certificate's node id (or, with --insecure, the id its hello
            # announced): a message claiming another sender is dropped.
            claimed = ident.name if ident is not None else conn.peer_name
            if claimed is not None and frame.body.get("src") != claimed:
                self.forged_peer_messages += 1
                self._limited("warning", "forged-peer-message", remote=conn.remote,
                              who=str(ident) if ident else f"hello {claimed!r}",
                              src=_field(frame.body, "src"), term=_field(frame.body, "term"),
                              reason="sender is not the connection's authenticated peer; dropped")
                return None
            try:
                self.handler.handle_peer_frame(frame, claimed)
            except (ValueError, TypeError, KeyError) as e:
                self._bad_frame(conn, f"bad raft message: {e}")
                return f"bad raft message: {e}"
            conn.role = "peer" if ident is None else conn.role
            return None
        if t is wire.MsgType.HELLO:
            role, node = frame.body["role"], frame.body.get("node")
            if ident is not None and role == "peer" and (ident.role != ROLE_NODE or node != ident.name):
                self.forged_peer_messages += 1
                self._limited("warning", "forged-peer-message", remote=conn.remote, who=str(ident),
                              src=_field(frame.body, "node"),
                              reason="hello as a peer that is not the certificate's node; connection closed")
                return f"hello as peer {node!r} from {ident}"
            if ident is None:
                conn.role = role
            conn.peer_name = node if ident is None else ident.name
            if role == "peer" and conn.peer_name and frame.body.get("address"):
                self.handler.peer_hello(conn.peer_name, frame.body["address"])
            return None
        if t in wire.CLIENT_REQUESTS:
            conn.role = "client" if conn.role == "unknown" else conn.role
            refusal = self._forbidden(conn, t)
            if refusal is not None:
                self.forbidden_requests += 1
                self._limited("warning", "forbidden", remote=conn.remote, who=str(ident),
                              request=t.value, reason=refusal)
                conn.queue(wire.encode_frame(wire.MsgType.ERROR, frame.id,
                                             wire.error_body(wire.ErrorCode.FORBIDDEN, refusal)))
                return None
            # Back-pressure: stop reading while too many requests are being processed.
            if conn.in_flight.locked():
                await self._wait_on(conn, conn.in_flight.acquire())
            else:
                await conn.in_flight.acquire()  # free: returns without suspending
            # Common requests are answered by callbacks, without a Task each.
            start = self._start_request
            if start is not None:
                try:
                    if start(frame, partial(self._answered, conn, frame)):
                        return None
                except Exception as e:  # a bug in the node must not kill the connection handler
                    self._answered(conn, frame, *self._internal_error(conn, frame, e))
                    return None
            task = asyncio.get_running_loop().create_task(self._answer(conn, frame))
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)
            return None
        # ok/error frames are answers; nobody asked this connection anything.
        self._bad_frame(conn, f"unexpected {t.value} frame: the node only answers requests")
        return f"unexpected {t.value} frame"


    def _internal_error(self, conn: _Conn, frame: wire.Frame, e: BaseException) -> tuple[wire.MsgType, dict[str, Any]]:
        self.log.error("request-failed", remote=conn.remote, type=frame.type.value, error=repr(e))
        return wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.INTERNAL, f"internal error on the node: {e!r}")

    def _answered(self, conn: _Conn, frame: wire.Frame, msg_type: wire.MsgType, body: dict[str, Any]) -> None:
        """Queue the answer to FRAME (sent with the others of this loop pass) and free its
        in-flight slot. Called once per request, by a callback or by `_answer`."""
        try:
            try:
                # Our own answer bodies (ok_body/error_body) need no schema check; the size does.
                data = wire.encode_frame(msg_type, frame.id, body, max_size=self.max_frame, validate=False)
            except wire.ProtocolError as e:
                data = wire.encode_frame(
                    wire.MsgType.ERROR, frame.id,
                    wire.error_body(wire.ErrorCode.INTERNAL, f"answer could not be encoded: {e}"),
                )
            if not conn.writer.is_closing():
                conn.queue(data)
        finally:
            conn.in_flight.release()

    async def _answer(self, conn: _Conn, frame: wire.Frame) -> None:
        try:
            msg_type, body = await self.handler.handle_request(frame)
        except asyncio.CancelledError:
            conn.in_flight.release()
            raise
        except Exception as e:  # a bug in the node must not kill the connection handler
            msg_type, body = self._internal_error(conn, frame, e)
        self._answered(conn, frame, msg_type, body)

    def _forbidden(self, conn: _Conn, t: wire.MsgType) -> str | None:
        """Why this connection's certificate may not make request T (None: it may)."""
        ident = conn.identity
        if ident is None or t is wire.MsgType.STATUS:
            return None  # --insecure trusts everyone; everyone may ask for status
        if t in wire.ADMIN_REQUESTS:
            if ident.role == ROLE_ADMIN:
                return None
            return (f"{t.value} needs an admin certificate; this connection presented {ident}: "
                    "issue one with `ukehi certs issue DIR --admin NAME`; nothing was done")
        if ident.role in (ROLE_CLIENT, ROLE_ADMIN):
            return None
        return f"{t.value} needs a client or admin certificate, not {ident}; nothing was done"

    def _bad_frame(self, conn: _Conn, reason: str) -> None:
        self.bad_frames += 1
        # Only the first 200 characters: a hostile frame must not flood the log either.
        self.log.warning("bad-frame", remote=conn.remote, role=conn.role, reason=reason[:200])



class _Idle(Exception):
    """A connection sent no complete frame for its idle (or pending) timeout."""


def _field(body: Any, key: str) -> Any:
    """A field of an untrusted body, for a log line: short scalars only."""
    value = body.get(key) if isinstance(body, dict) else None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return value if not isinstance(value, str) else value[:64]
    return None
