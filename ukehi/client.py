"""Asyncio client for a Ukehi cluster (used by the harness, the `ukehi kv` CLI and people).

    async with UkehiClient(["127.0.0.1:7001", "127.0.0.1:7002"], timeout=2.0) as c:
        r = await c.put("k", "v")
        if r.ok: ...
        elif r.definite: ...   # certainly did not happen
        else: ...              # unknown: may have happened, now or later

Every operation returns a `Result` and never raises for a cluster-side failure. Its
`outcome` is one of three words, and the harness records them as they are:

* ``"ok"``: the operation took effect (for reads: the value is linearizable).
* ``"fail"``: the operation **certainly did not take effect** and never will. Only these
  errors are definite:

  - a node answered one of `ukehi.wire.DEFINITE_ERRORS`: ``not_leader`` (the node did not
    propose it, or the entry it proposed was overwritten by another leader's entry at that
    index, which means it can never commit), ``recovering``, ``unavailable``,
    ``bad_request``, ``refused`` (fenced write with a lower token), ``cas_failed``,
    ``lock_held``, ``not_lock_holder``, ``stale_entry``;
  - ``connect_failed``: no connection could be opened, so nothing was sent;
  - ``invalid_argument``: the client refused the arguments before sending anything.

  Redirects are followed only after a definite error, so a request is never sent twice
  unless the earlier attempt certainly did not happen.
* ``"unknown"``: the request was sent and no definite answer came back: ``timeout``
  (no answer within the request's deadline; the node may still commit it later),
  ``connection_lost`` (the connection closed after the request was written), or an
  ``internal``/``timeout`` error from the node. The operation may take effect at any time
  after it was invoked, or never. Reads have no effect, so an unknown read can be treated as
  a failed one.

One connection per node carries many requests in flight (request ids), so the client can be
shared by many asyncio tasks.

Sharded clusters (``ukehi node --shards S``, ukehi/node/groups.py): the client starts out
knowing no shard map and sends as to an unsharded cluster. A node that does not serve the
key's shard answers ``wrong_shard`` (definite: nothing was done); the client then asks that
node for its map (``shard_map``: shard -> members, epoch, every member's address), caches it,
and from then on sends each keyed request to its shard's members, with the shard's group id
and the map's epoch in the frame, remembering a leader per shard. A later ``wrong_shard``
(the map moved on) refreshes the map again, at most a few times per request. An unsharded
cluster never answers ``wrong_shard``, so it costs nothing there.

TLS (ukehi/tls.py): `tls=` a `ukehi.tls.ClientTLS` (client and/or admin certificate), or
None for plain TCP. By default each address gets what this process registered for it
(`ukehi.tls.register_cluster_tls`, which the harness does per run), else the directory in
`$UKEHI_TLS_DIR`, else plain TCP. Admin verbs go over the admin certificate, everything
else over the client one (two connections to a node when both are used). A node that
refuses the handshake is a definite `connect_failed`: it served nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ukehi import wire
from ukehi.shardmap import ShardMap, ShardMapError, group_of, rebalance_plan, request_keys
from ukehi.tls import ROLE_NODE, ClientTLS, TLSError, client_tls_for, identity_of

__all__ = [
    "Result",
    "UkehiClient",
    "OK",
    "FAIL",
    "UNKNOWN",
    "parse_cluster",
    "DEFINITE_CLIENT_ERRORS",
]

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

# Client-side error codes, in addition to the node's `wire.ErrorCode` values.
CONNECT_FAILED = "connect_failed"  # definite: nothing was sent
INVALID_ARGUMENT = "invalid_argument"  # definite: refused before sending
TIMEOUT = "timeout"  # unknown
CONNECTION_LOST = "connection_lost"  # unknown

DEFINITE_CLIENT_ERRORS = frozenset({CONNECT_FAILED, INVALID_ARGUMENT}) | frozenset(
    c.value for c in wire.DEFINITE_ERRORS
)

# Errors after which another node may succeed; the client moves on (all are definite).
WRONG_SHARD = wire.ErrorCode.WRONG_SHARD.value
# Map refreshes one request may make after wrong_shard answers (a map that keeps moving
# under a request is reported, not chased forever).
_MAX_MAP_REFRESHES = 3

_TRY_ELSEWHERE = frozenset(
    {
        wire.ErrorCode.NOT_LEADER.value,
        wire.ErrorCode.RECOVERING.value,
        wire.ErrorCode.UNAVAILABLE.value,
        CONNECT_FAILED,
    }
)


@dataclass(frozen=True)
class Result:
    """The outcome of one request. See the module docstring for the meaning of `outcome`."""

    outcome: str  # "ok" | "fail" | "unknown"
    value: Any = None
    error: str | None = None  # an error code (wire.ErrorCode value or a client-side code)
    message: str = ""
    node: str | None = None  # address of the node that gave the final answer, if any
    leader_hint: str | None = None  # with not_leader: the leader's address, if the node knew it

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def definite(self) -> bool:
        """True when we know whether it happened (ok, or certainly not)."""
        return self.outcome != UNKNOWN

    @property
    def failed(self) -> bool:
        """Certainly did not take effect."""
        return self.outcome == FAIL

    @property
    def unknown(self) -> bool:
        return self.outcome == UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        return {
            "outcome": self.outcome,
            "value": value,
            "error": self.error,
            "message": self.message,
            "node": self.node,
            "leader_hint": self.leader_hint,
        }


def parse_cluster(cluster: str | Iterable[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """`"h:p,h:p"` or a list of `"h:p"` / `(h, p)` -> [(host, port)]. Raises ValueError."""
    items: list[str | tuple[str, int]]
    if isinstance(cluster, str):
        items = [p.strip() for p in cluster.split(",") if p.strip()]
    else:
        items = list(cluster)
    out: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, tuple):
            host, port = item
        else:
            host, sep, port_text = str(item).rpartition(":")
            if not sep or not host:
                raise ValueError(f"cluster address {item!r} is not HOST:PORT")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"cluster address {item!r} has a non-numeric port") from None
        if not (isinstance(port, int) and 0 < port <= 65535):
            raise ValueError(f"cluster address {item!r} has port outside 1..65535")
        if (host, port) not in out:
            out.append((host, port))
    if not out:
        raise ValueError("the cluster address list is empty; give HOST:PORT[,HOST:PORT...]")
    return out


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ConnectionLost(Exception):
    pass


class _HandshakeRefused(_ConnectionLost):
    """The node rejected our certificate (TLS 1.3 reports it only after the client's side of
    the handshake finished): it accepted no request on this connection."""


_AUTO: Any = object()


class _Connection:
    """One TCP connection to one node, many requests in flight, matched by request id."""

    def __init__(
        self,
        address: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame: int,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._max_frame = max_frame
        self._pending: dict[int, asyncio.Future[wire.Frame]] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.close_reason = ""
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.refused = False  # the node refused our certificate: nothing was served
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(
        cls, address: tuple[str, int], timeout: float, max_frame: int,
        tls: ssl.SSLContext | None = None,
    ) -> "_Connection":
        extra: dict[str, Any] = ({"ssl": tls, "ssl_handshake_timeout": timeout,
                                  "ssl_shutdown_timeout": _CLOSE_WAIT_S} if tls is not None else {})
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands as
        # the connection completes (see ukehi/transport.py).
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address[0], address[1], limit=max_frame + 1024,
                                                           **extra)
        if tls is not None:
            ident = identity_of(writer.get_extra_info("peercert"))
            if ident is None or ident.role != ROLE_NODE:
                writer.close()
                raise ConnectionRefusedError(
                    f"{_fmt(address)} presented {ident or 'no Ukehi certificate'}, not a node certificate")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return cls(address, reader, writer, max_frame)

    async def _read_loop(self) -> None:
        reason = "closed by the node"
        # Chunks cut into frames (many answers per read under load), not two reads a frame.
        decoder = wire.FrameDecoder(self._max_frame)
        pending = self._pending
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    decoder.eof()  # a frame cut off by the close is a protocol error
                    break
                for frame in decoder.feed(data):
                    fut = pending.pop(frame.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    # A response for an id we no longer wait for (timed out) is dropped.
        except wire.ProtocolError as e:
            reason = f"protocol error from the node: {e}"
        except ssl.SSLError as e:
            reason = f"TLS error: {e.reason or e}"
            # An alert before any answer: the node refused the certificate during its half
            # of the handshake, so it served nothing on this connection.
            self.refused = "ALERT" in str(e.reason or e).upper()
        except (OSError, asyncio.IncompleteReadError) as e:
            reason = f"connection error: {e}"
        except asyncio.CancelledError:
            reason = "client closed"
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception((_HandshakeRefused if self.refused else _ConnectionLost)(reason))
        try:
            self._writer.close()
        except Exception:
            pass

    def send(self, msg_type: wire.MsgType, body: Mapping[str, Any], group: int = 0,
             epoch: int = 0) -> asyncio.Future[wire.Frame]:
        """Write one request; the future resolves with the response frame.

        Raises wire.ProtocolError if the request cannot be encoded (nothing is sent), or
        _ConnectionLost if the connection is already closed (nothing is sent).
        """
        if self.closed:
            raise _ConnectionLost(self.close_reason or "connection closed")
        rid = next(self._ids)
        # The body was checked against its schema by UkehiClient.request already.
        data = wire.encode_frame(msg_type, rid, body, group=group, epoch=epoch, max_size=self._max_frame,
                                 validate=False)
        fut: asyncio.Future[wire.Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        # Requests made in one event-loop pass leave in one write (one syscall).
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and not self.closed:
            self._writer.write(b"".join(out))

    def forget(self, fut: asyncio.Future[wire.Frame]) -> None:
        for rid, f in list(self._pending.items()):
            if f is fut:
                del self._pending[rid]
                return

    async def drain(self) -> None:
        await self._writer.drain()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        # A TLS close waits for the node's close_notify (asyncio: up to 30 s by default); a
        # paused or partitioned node never sends it, so give up quickly and drop the socket.
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except Exception:
            pass


_CLOSE_WAIT_S = 0.5
_READ_CHUNK = 256 * 1024


class _Expired(Exception):
    """A request's deadline passed before its answer came."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


@dataclass(frozen=True)
class _Route:
    """Where a keyed request goes in a sharded cluster: its shard's group, the map epoch it
    was routed by, and the members' addresses."""

    group: int
    epoch: int
    candidates: list[tuple[str, int]]


class UkehiClient:
    """A client for one cluster: leader discovery, redirects, deadlines, honest results.

    `cluster`: addresses of any of the nodes ("HOST:PORT,..." or a list). `timeout`: the
    default deadline of one operation in seconds, redirects included. `connect_timeout`: how
    long to wait for one TCP connect before trying the next node.
    """

    def __init__(
        self,
        cluster: str | Iterable[str | tuple[str, int]],
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        max_frame: int = wire.DEFAULT_MAX_FRAME_SIZE,
        retry_backoff: float = 0.05,
        pinned: bool = False,
        tls: ClientTLS | None = _AUTO,
    ) -> None:
        self.addresses = parse_cluster(cluster)
        self.tls = tls  # _AUTO: per address, see the module doc
        # Pinned: every request starts at the first address (redirects still followed per
        # request), like a Jepsen client bound to one node. The harness pins its workers so
        # followers' code paths (redirects, reads) are exercised, not only the leader's.
        self.pinned = pinned
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_frame = max_frame
        self.retry_backoff = retry_backoff
        # Keyed by (address, admin): admin verbs may travel over another certificate.
        self._conns: dict[tuple[tuple[str, int], bool], _Connection] = {}
        self._connecting: dict[tuple[tuple[str, int], bool], asyncio.Future[_Connection]] = {}
        self._leader: tuple[str, int] | None = None
        self._rng = random.Random()
        # Sharded clusters: the cached map, its members' addresses, a leader guess per group.
        self._shard_map: ShardMap | None = None
        self._member_addresses: dict[str, tuple[str, int]] = {}
        self._shard_leaders: dict[int, tuple[str, int]] = {}
        self._meta_members: list[str] = []

    async def __aenter__(self) -> "UkehiClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()

    @property
    def leader(self) -> str | None:
        """The address this client currently believes is the leader (a guess)."""
        return _fmt(self._leader) if self._leader else None

    @property
    def shard_map(self) -> ShardMap | None:
        """The shard map this client routes by (None: unsharded, or not learned yet)."""
        return self._shard_map

    async def shard_map_of(self, node: str | None = None, *, timeout: float | None = None) -> Result:
        """Ask a node (default: the first reachable) for its shard map; `value` is
        ``{"map": ShardMap.to_dict() or None, "addresses": {node: "HOST:PORT"}}``."""
        return await self.request(wire.MsgType.SHARD_MAP, {}, timeout=timeout, target=node,
                                  follow_redirects=False)

    # ------------------------------------------------------------------ operations
    async def get(self, key: str, *, timeout: float | None = None) -> Result:
        """Linearizable read. `value` is None when the key is absent."""
        return await self.request(wire.MsgType.GET, {"key": key}, timeout=timeout)

    async def put(self, key: str, value: Any, *, timeout: float | None = None) -> Result:
        return await self.request(wire.MsgType.PUT, {"key": key, "value": value}, timeout=timeout)

    async def cas(
        self, key: str, expected: Any, new: Any, *, timeout: float | None = None
    ) -> Result:
        """Set `key` to `new` if its value is `expected` (None: the key must be absent).

        A compare that does not match is a definite failure with error ``cas_failed``.
        """
        return await self.request(
            wire.MsgType.CAS, {"key": key, "expected": expected, "new": new}, timeout=timeout
        )

    async def append(self, key: str, value: Any, *, timeout: float | None = None) -> Result:
        """Append `value` to the list at `key` (absent: a new list); the result's value is
        ``{"index": log index}``. A key holding a scalar refuses it (``bad_request``)."""
        return await self.request(wire.MsgType.APPEND, {"key": key, "value": value}, timeout=timeout)

    async def txn(self, ops: Iterable[Iterable[Any]], *, timeout: float | None = None) -> Result:
        """Run micro-ops ``[f, key, value]`` (f: ``r``, ``w``, ``append``; a read's value
        None) atomically. The result's value is ``{"ops": [...], "index": log index}``, the
        reads filled in with what they saw; a read-only transaction has no index."""
        body = {"ops": [[f, k, v] for f, k, v in ops]}
        return await self.request(wire.MsgType.TXN, body, timeout=timeout)

    async def delete(self, key: str, *, timeout: float | None = None) -> Result:
        return await self.request(wire.MsgType.DELETE, {"key": key}, timeout=timeout)

    async def fenced_put(
        self, key: str, value: Any, token: int, *, timeout: float | None = None
    ) -> Result:
        """Put that is refused (``refused``, definite) if `token` is below the key's highest."""
        return await self.request(
            wire.MsgType.FENCED_PUT, {"key": key, "value": value, "token": token}, timeout=timeout
        )

    async def acquire(
        self, lock: str, owner: str, ttl_ms: int, *, timeout: float | None = None
    ) -> Result:
        """Acquire `lock` for `owner` for `ttl_ms`; `value` is the fencing token (an int)."""
        return await self.request(
            wire.MsgType.ACQUIRE, {"lock": lock, "owner": owner, "ttl_ms": ttl_ms}, timeout=timeout
        )

    async def release(
        self, lock: str, owner: str, token: int | None = None, *, timeout: float | None = None
    ) -> Result:
        body: dict[str, Any] = {"lock": lock, "owner": owner}
        if token is not None:
            body["token"] = token
        return await self.request(wire.MsgType.RELEASE, body, timeout=timeout)

    async def status(self, node: str | None = None, *, timeout: float | None = None) -> Result:
        """One node's status (`node` = its address; default: the first reachable one).

        `value` is a dict: id, role, term, leader, leader_address, commit_index,
        applied_index, members, learners, recovering, clock, pid, ...
        """
        return await self.request(
            wire.MsgType.STATUS, {}, timeout=timeout, target=node, follow_redirects=False
        )

    async def cluster_status(self, *, timeout: float | None = None) -> dict[str, Result]:
        """Status of every address in the cluster list, asked concurrently."""
        addrs = [_fmt(a) for a in self.addresses]
        results = await asyncio.gather(*(self.status(a, timeout=timeout) for a in addrs))
        return dict(zip(addrs, results))

    async def add_node(
        self, node: str, address: str, *, timeout: float | None = None
    ) -> Result:
        """Admin: add `node` (reachable at `address`) as a voter (via joint consensus)."""
        return await self.request(
            wire.MsgType.ADD_NODE, {"node": node, "address": address}, timeout=timeout
        )

    async def remove_node(self, node: str, *, timeout: float | None = None) -> Result:
        """Admin: remove `node` from the voters (the leader itself may be removed)."""
        return await self.request(wire.MsgType.REMOVE_NODE, {"node": node}, timeout=timeout)

    async def transfer_leader(
        self, node: str | None = None, *, shard: int | None = None, timeout: float | None = None
    ) -> Result:
        """Admin: hand leadership to `node` (default: the most up-to-date follower); in a
        sharded cluster, of `shard`'s group."""
        body = {} if node is None else {"node": node}
        return await self.request(wire.MsgType.TRANSFER_LEADER, body, timeout=timeout, shard=shard)

    async def snapshot(self, node: str | None = None, *, shard: int | None = None,
                       timeout: float | None = None) -> Result:
        """Admin: make `node` (default: the leader) take a snapshot now; value = its index. In
        a sharded cluster, of `shard`'s group."""
        return await self.request(
            wire.MsgType.SNAPSHOT, {}, timeout=timeout, target=node, follow_redirects=node is None, shard=shard
        )

    async def checksum(self, *, shard: int | None = None, timeout: float | None = None) -> Result:
        """Admin: a consistency check. The leader (of `shard`'s group in a sharded cluster)
        commits one entry; every replica that applies it logs ``state-digest`` with its
        state's digest at that index. `value`: ``{"index", "digest", "keys"}``, the leader's."""
        return await self.request(wire.MsgType.CHECKSUM, {}, timeout=timeout, shard=shard)

    async def move_replica(self, shard: int, src: str, dst: str, *, timeout: float | None = 60.0) -> Result:
        """Admin, sharded cluster: move `shard`'s replica from node `src` to node `dst` (the
        shard's leader runs it: learner, catch-up, joint change, map epoch bump). `value`:
        ``{"shard", "epoch", "members"}``. The map is refreshed first, so the request goes to
        the shard's current members."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        for addr in self.addresses:  # the newest map any of them knows
            await self._refresh_map_from(addr, min(1.0, max(0.0, deadline - loop.time())))
        return await self.request(wire.MsgType.MOVE_REPLICA, {"shard": shard, "from": src, "to": dst},
                                  timeout=max(0.001, deadline - loop.time()), shard=shard)

    async def rebalance_status(self, *, timeout: float | None = None) -> Result:
        """Admin, sharded cluster: the node set and the rebalance that `add_node`/`remove_node`
        started, from the newest map any address knows. `value`: ``{"epoch", "nodes",
        "leaving", "rebalancing", "moves": [[shard, from, to]], "planned": [[shard, [from],
        [to]]], "replicas_to_move"}``; done when ``rebalancing`` is false."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        for addr in self.addresses:
            await self._refresh_map_from(addr, min(1.0, max(0.0, deadline - loop.time())))
        # The metadata members hold the newest map (the others learn it within a second).
        for name in list(self._meta_members):
            addr = self._member_addresses.get(name)
            if addr is not None and addr not in self.addresses:
                await self._refresh_map_from(addr, min(1.0, max(0.0, deadline - loop.time())))
        smap = self._shard_map
        if smap is None:
            return Result(FAIL, error=INVALID_ARGUMENT,
                          message="no node answered with a shard map: the cluster is not sharded (or not reachable)")
        pending = rebalance_plan(smap)
        return Result(OK, value={"epoch": smap.epoch, "nodes": list(smap.nodes), "leaving": list(smap.leaving),
                                 "rebalancing": smap.rebalancing, "moves": [list(m) for m in smap.moves],
                                 "planned": [[m.shard, list(m.remove), list(m.add)] for m in pending],
                                 "replicas_to_move": sum(len(m.add) for m in pending)})

    async def wait_rebalanced(self, timeout: float, *, poll: float = 0.5) -> Result:
        """Admin, sharded cluster: `rebalance_status` until the rebalance is done (`ok`) or
        `timeout` seconds pass (a definite failure naming what is still to move)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = await self.rebalance_status(timeout=min(5.0, max(0.5, deadline - loop.time())))
            if result.ok and not result.value["rebalancing"]:
                return result
            if loop.time() >= deadline:
                if not result.ok:
                    return result
                return Result(FAIL, value=result.value, error=TIMEOUT,
                              message=f"the rebalance is not done after {timeout:g} s: "
                                      f"{result.value['replicas_to_move']} replicas still to move, "
                                      f"{len(result.value['moves'])} moves in flight (it goes on)")
            await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))

    # ------------------------------------------------------------------ machinery
    async def request(
        self,
        msg_type: wire.MsgType | str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = None,
        target: str | tuple[str, int] | None = None,
        follow_redirects: bool = True,
        shard: int | None = None,
    ) -> Result:
        """Send one request, following redirects after definite errors, within a deadline.
        `shard`: a request about one shard's group (admin verbs of a sharded cluster), sent to
        that shard's members with its group id."""
        try:
            mt = wire.MsgType(msg_type)
            wire.validate_body(mt, dict(body))
        except (ValueError, wire.ProtocolError) as e:
            return Result(FAIL, error=INVALID_ARGUMENT, message=str(e))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        if target is not None:
            try:
                fixed: tuple[str, int] | None = parse_cluster([target])[0] if isinstance(
                    target, str
                ) else target
            except ValueError as e:
                return Result(FAIL, error=INVALID_ARGUMENT, message=str(e))
        else:
            fixed = None
        keys = request_keys(mt.value, body) if fixed is None else None
        route = self._route(keys)
        if shard is not None:
            route = await self._shard_route(shard, deadline - loop.time())
            if isinstance(route, Result):
                return route
        last: Result | None = None
        tried_without_hint = 0
        redirects = 0
        refreshes = 0
        attempt = 0
        next_addr = self._first_address(route, fixed)
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            addr = next_addr
            group, epoch = (route.group, route.epoch) if route is not None else (0, 0)
            result = await self._attempt(addr, mt, body, remaining, group, epoch)
            if result.error == WRONG_SHARD and result.outcome == FAIL and keys is not None:
                # Not this node's shard (or our map is stale): nothing was done. Learn the map
                # from the node that refused, then route again.
                last = result
                if refreshes >= _MAX_MAP_REFRESHES:
                    return result
                refreshes += 1
                await self._refresh_map(addr, deadline - loop.time())
                route = self._route(keys)
                next_addr = self._first_address(route, None)
                continue
            if result.outcome != FAIL or result.error not in _TRY_ELSEWHERE:
                if result.ok and fixed is None and mt is not wire.MsgType.STATUS:
                    self._remember_leader(route, addr)
                return result
            # Definite failure that another node may not have: move on (nothing happened).
            last = result
            if fixed is not None or not follow_redirects:
                return result
            candidates = route.candidates if route is not None and route.candidates else self.addresses
            hint: tuple[str, int] | None = None
            if result.leader_hint:
                try:
                    hint = parse_cluster([result.leader_hint])[0]
                except ValueError:
                    hint = None
            if hint is not None and hint != addr:
                next_addr = hint
                self._remember_leader(route, hint)
                redirects += 1
                if redirects > len(candidates):
                    # Nodes pointing at each other with stale hints: slow down until an
                    # election settles it.
                    await asyncio.sleep(max(0.0, min(self.retry_backoff, deadline - loop.time())))
                continue  # a redirect: go at once
            # No usable hint: rotate through the candidates, backing off a little each round.
            self._remember_leader(route, None)
            tried_without_hint += 1
            idx = candidates.index(addr) if addr in candidates else -1
            next_addr = candidates[(idx + 1) % len(candidates)]
            if tried_without_hint % len(candidates) == 0 or result.error != CONNECT_FAILED:
                pause = min(0.5, self.retry_backoff * (1 + tried_without_hint // len(candidates)))
                pause *= 0.5 + self._rng.random()
                await asyncio.sleep(max(0.0, min(pause, deadline - loop.time())))
        if last is not None:
            # Every attempt failed definitely: the operation certainly did not happen.
            return Result(
                FAIL,
                error=last.error,
                message=f"gave up after {attempt - 1} attempt(s) before the deadline: {last.message}",
                node=last.node,
            )
        return Result(FAIL, error=TIMEOUT, message="deadline passed before anything was sent")

    # ------------------------------------------------------------------ shard routing
    def _route(self, keys: list[str] | None) -> _Route | None:
        """Where keyed requests go by the cached map; None: as to an unsharded cluster (no
        map, a request about no key, or keys in several shards, which the node refuses)."""
        smap = self._shard_map
        if smap is None or not keys:
            return None
        shards = {smap.shard_for(k) for k in keys}
        if len(shards) != 1:
            return None
        shard = shards.pop()
        members = [self._member_addresses[n] for n in smap.members[shard] if n in self._member_addresses]
        return _Route(group_of(shard), smap.epoch, members)

    async def _shard_route(self, shard: int, timeout: float) -> "_Route | Result":
        """The route to `shard`'s group, learning the map first if need be; a definite
        failure when the cluster is not sharded or has no such shard (nothing was sent)."""
        if self._shard_map is None:
            for addr in self.addresses:
                await self._refresh_map(addr, timeout)
                if self._shard_map is not None:
                    break
        smap = self._shard_map
        if smap is None:
            return Result(FAIL, error=INVALID_ARGUMENT,
                          message="no node answered with a shard map: the cluster is not sharded (or not "
                                  "reachable); a shard applies to sharded clusters only")
        if not isinstance(shard, int) or not 0 <= shard < smap.shards:
            return Result(FAIL, error=INVALID_ARGUMENT,
                          message=f"shard {shard!r}: the cluster has shards 0 .. {smap.shards - 1}")
        members = [self._member_addresses[n] for n in smap.members[shard] if n in self._member_addresses]
        return _Route(group_of(shard), smap.epoch, members)

    def _first_address(self, route: _Route | None, fixed: tuple[str, int] | None) -> tuple[str, int]:
        if fixed is not None:
            return fixed
        if route is None or not route.candidates:
            return (None if self.pinned else self._leader) or self.addresses[0]
        if self.pinned and self.addresses[0] in route.candidates:
            return self.addresses[0]
        return self._shard_leaders.get(route.group) or route.candidates[0]

    def _remember_leader(self, route: _Route | None, addr: tuple[str, int] | None) -> None:
        if route is None:
            self._leader = addr
        elif addr is None:
            self._shard_leaders.pop(route.group, None)
        else:
            self._shard_leaders[route.group] = addr

    async def _refresh_map(self, addr: tuple[str, int], timeout: float) -> None:
        """Learn a newer map: from `addr` (the node that refused) first; when it knows none
        newer than ours (it may be the one behind), from the other nodes, the metadata
        group's members first. A map never goes back to an older epoch of the same cluster."""
        before = self._shard_map.epoch if self._shard_map is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._refresh_map_from(addr, timeout)
        if before is None or self._shard_map is None or self._shard_map.epoch > before:
            return
        names = list(self._meta_members) + [n for n in self._member_addresses if n not in self._meta_members]
        for name in names:
            other = self._member_addresses.get(name)
            remaining = deadline - loop.time()
            if other is None or other == addr or remaining <= 0:
                continue
            await self._refresh_map_from(other, min(remaining, 1.0))
            if self._shard_map is None or self._shard_map.epoch > before:
                return
        # Nobody knows a newer map yet (it is being committed): a short pause before retrying.
        await asyncio.sleep(max(0.0, min(0.1, deadline - loop.time())))

    async def _refresh_map_from(self, addr: tuple[str, int], timeout: float) -> None:
        """Take the map `addr` holds if it is newer than ours, or of another cluster (kept as
        it was if the node cannot tell)."""
        if timeout <= 0:
            return
        result = await self._attempt(addr, wire.MsgType.SHARD_MAP, {}, timeout)
        value = result.value if result.ok else None
        if not isinstance(value, dict):
            return
        try:
            smap = ShardMap.from_dict(value["map"]) if value.get("map") is not None else None
            addresses = {str(n): parse_cluster([a])[0] for n, a in (value.get("addresses") or {}).items()}
            meta = [str(n) for n in (value.get("metadata_members") or [])]
        except (ShardMapError, ValueError, TypeError, AttributeError):
            return
        cached = self._shard_map
        if smap is not None and cached is not None and smap.same_cluster(cached) and smap.epoch < cached.epoch:
            return  # that node is behind: keep the newer map
        if smap is None or cached is None or smap.epoch != cached.epoch:
            self._shard_leaders.clear()
        self._shard_map = smap
        self._member_addresses = addresses
        self._meta_members = meta

    def _tls_context(self, addr: tuple[str, int], admin: bool) -> ssl.SSLContext | None:
        tls = client_tls_for(addr) if self.tls is _AUTO else self.tls
        return None if tls is None else tls.context(admin)

    async def _connection(self, addr: tuple[str, int], timeout: float, admin: bool = False) -> _Connection:
        key = (addr, admin)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                _Connection.open(addr, min(timeout, self.connect_timeout), self.max_frame,
                                 self._tls_context(addr, admin))
            )
            self._connecting[key] = pending
            try:
                conn = await asyncio.shield(pending)
            finally:
                self._connecting.pop(key, None)
        else:
            conn = await asyncio.shield(pending)
        self._conns[key] = conn
        return conn

    async def _attempt(
        self, addr: tuple[str, int], mt: wire.MsgType, body: Mapping[str, Any], timeout: float,
        group: int = 0, epoch: int = 0,
    ) -> Result:
        node = _fmt(addr)
        key = (addr, mt in wire.ADMIN_REQUESTS)
        try:
            conn = await self._connection(addr, timeout, key[1])
        except TLSError as e:  # e.g. $UKEHI_TLS_DIR without certificates: nothing was sent
            return Result(FAIL, error=INVALID_ARGUMENT, message=f"TLS settings: {e}", node=node)
        except (OSError, asyncio.TimeoutError) as e:
            return Result(FAIL, error=CONNECT_FAILED, message=f"cannot connect to {node}: {e}", node=node)
        try:
            fut = conn.send(mt, body, group, epoch)
        except _ConnectionLost as e:
            # Nothing was written on this closed connection.
            self._conns.pop(key, None)
            return Result(FAIL, error=CONNECT_FAILED, message=f"connection to {node} closed: {e}", node=node)
        except wire.ProtocolError as e:
            return Result(FAIL, error=INVALID_ARGUMENT, message=str(e), node=node)
        # From here on the request may have reached the node: failures are unknown.
        # The deadline is a timer on the answer's future (cheaper than a timeout scope).
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            frame = await fut
        except _Expired:
            conn.forget(fut)
            return Result(
                UNKNOWN, error=TIMEOUT, message=f"no answer from {node} within {timeout:.3f}s", node=node
            )
        except _HandshakeRefused as e:
            self._conns.pop(key, None)
            return Result(FAIL, error=CONNECT_FAILED,
                          message=f"{node} refused this client's TLS certificate ({e}); nothing was served",
                          node=node)
        except _ConnectionLost as e:
            self._conns.pop(key, None)
            return Result(UNKNOWN, error=CONNECTION_LOST, message=f"{node}: {e}", node=node)
        finally:
            timer.cancel()
        return self._interpret(frame, node)

    def _interpret(self, frame: wire.Frame, node: str) -> Result:
        if frame.type is wire.MsgType.OK:
            return Result(OK, value=frame.body.get("value"), node=node)
        if frame.type is wire.MsgType.ERROR:
            code = frame.body["code"]
            message = frame.body.get("message", "")
            definite = wire.ErrorCode(code) in wire.DEFINITE_ERRORS
            hint = None
            if code == wire.ErrorCode.NOT_LEADER.value:
                hint = frame.body.get("leader_address") or None
            leader = frame.body.get("leader")
            if leader and code == wire.ErrorCode.NOT_LEADER.value:
                message = f"{message} (leader is {leader})".strip()
            return Result(
                FAIL if definite else UNKNOWN,
                error=code,
                message=message,
                node=node,
                leader_hint=hint,
            )
        return Result(
            UNKNOWN,
            error=wire.ErrorCode.INTERNAL.value,
            message=f"unexpected response type {frame.type.value} from {node}",
            node=node,
        )
