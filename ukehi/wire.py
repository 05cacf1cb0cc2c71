"""Ukehi's wire protocol: length-prefixed msgpack frames with request ids.

Peers and clients use the same framing. One frame on the wire is::

    u32 big-endian length N  ·  N bytes: a msgpack map
        {"t": <message type name>, "id": <request id, u64>, "b": <body map>, "g": <group, u64>?,
         "e": <shard map epoch, u64>?}

* ``t`` names a type from the fixed registry `MsgType`; unknown names are rejected.
* ``id`` lets one connection carry many requests in flight: a response carries the id of
  the request it answers. Ids are chosen by the sender of the request.
* ``b`` is the body, a map checked against the declarative schema for ``t`` (`SCHEMAS`):
  required and optional fields, each with a type; unknown fields are rejected, so a typo in
  a client or a hostile peer is caught at the boundary and never reaches the state machine.
* ``g`` is the Raft group the message belongs to (default 0: the one group of an unsharded
  cluster). In a sharded cluster shard s is group s + 1 (``ukehi.shardmap.group_of``).
* ``e`` is the shard map epoch a client routed a request by (default 0: "no map", what an
  unsharded client sends). A node that does not own the key's shard at that epoch answers
  ``wrong_shard`` with the epoch it knows, and the client refreshes its map (``shard_map``).

Safety against hostile bytes: the length prefix is checked against the maximum frame size
*before* the body is read or buffered; msgpack is unpacked with every container/string
limit bounded by the frame size, a budget of containers and items per frame (bytes alone do
not bound memory: one byte of msgpack can become a 64-byte dict), ext types refused, map
keys restricted to str/bytes, and msgpack's own nesting limit turned into a
`ProtocolError`. Every failure is a
`ProtocolError` whose message says what was wrong; the connection that sent it should be
closed (the stream position is lost after a bad frame, so the decoder refuses further input).
"""

from __future__ import annotations

import asyncio
import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import msgpack

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_CONTAINERS",
    "DEFAULT_MAX_ELEMENTS",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "MsgType",
    "ErrorCode",
    "DEFINITE_ERRORS",
    "CLIENT_REQUESTS",
    "ADMIN_REQUESTS",
    "Frame",
    "SCHEMAS",
    "encode_frame",
    "decode_frame",
    "decode_payload",
    "validate_body",
    "FrameDecoder",
    "read_frame",
    "write_frame",
    "ok_body",
    "error_body",
]

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
# Object budgets per frame. Bytes alone do not bound memory: a 4 MiB frame of empty msgpack
# maps (1 byte each) unpacks into ~290 MB of dicts (measured). The largest legitimate frame is
# a Raft AppendEntries of at most a few hundred entries (one list each), so these are generous.
DEFAULT_MAX_CONTAINERS = 16_384  # arrays + maps in one frame
DEFAULT_MAX_ELEMENTS = 1 << 20  # array items + map pairs in one frame
PROTOCOL_VERSION = 1
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
_LEN = struct.Struct(">I")
# A frame larger than this cannot be described by the u32 prefix at all.
_ABSOLUTE_MAX_FRAME = 0xFFFF_FFFF


class ProtocolError(Exception):
    """A frame violated the protocol. Close the connection; the reason is in the message."""


class MsgType(str, enum.Enum):
    """The fixed registry of message types (the value is what travels in ``t``)."""

    # handshake, either direction, first frame on a connection (optional for clients)
    HELLO = "hello"
    # peer traffic: body is a Raft message dict (ukehi.raft message_to_dict/message_from_dict)
    RAFT = "raft"
    # client requests
    GET = "get"
    PUT = "put"
    CAS = "cas"
    DELETE = "delete"
    FENCED_PUT = "fenced_put"
    ACQUIRE = "acquire"
    RELEASE = "release"
    STATUS = "status"
    ADD_NODE = "add_node"
    REMOVE_NODE = "remove_node"
    TRANSFER_LEADER = "transfer_leader"
    SNAPSHOT = "snapshot"
    # transactions (issue 14): append to a list value; a list of micro-ops applied atomically
    APPEND = "append"
    TXN = "txn"
    # sharding (issue 15): the node's shard map and every member's address (nil map: unsharded)
    SHARD_MAP = "shard_map"
    # admin: move one replica of a shard from one node to another (the shard's leader runs it)
    MOVE_REPLICA = "move_replica"
    # admin: a consistency check; one log entry at which every replica logs its state's digest
    CHECKSUM = "checksum"
    # responses (carry the id of the request they answer)
    OK = "ok"
    ERROR = "error"


CLIENT_REQUESTS: frozenset[MsgType] = frozenset(
    {
        MsgType.GET, MsgType.PUT, MsgType.CAS, MsgType.DELETE, MsgType.FENCED_PUT,
        MsgType.ACQUIRE, MsgType.RELEASE, MsgType.STATUS, MsgType.ADD_NODE,
        MsgType.REMOVE_NODE, MsgType.TRANSFER_LEADER, MsgType.SNAPSHOT,
        MsgType.APPEND, MsgType.TXN, MsgType.SHARD_MAP, MsgType.MOVE_REPLICA, MsgType.CHECKSUM,
    }
)


# Requests that change the cluster itself rather than data: with mutual TLS only an admin
# certificate may send them (ukehi/tls.py). An unsafe knob added to the protocol goes here.
ADMIN_REQUESTS: frozenset[MsgType] = frozenset(
    {MsgType.ADD_NODE, MsgType.REMOVE_NODE, MsgType.TRANSFER_LEADER, MsgType.SNAPSHOT, MsgType.MOVE_REPLICA,
     MsgType.CHECKSUM}
)


class ErrorCode(str, enum.Enum):
    """Error codes in an ``error`` response body (``code``)."""

    NOT_LEADER = "not_leader"  # this node is not the leader; body may name it in `leader`
    RECOVERING = "recovering"  # WAL replay or catch-up after a cut is still in progress
    TIMEOUT = "timeout"  # proposed but no outcome in time: it MAY still take effect
    BAD_REQUEST = "bad_request"  # malformed or ill-typed request; never proposed
    REFUSED = "refused"  # fenced write with a token below the key's highest accepted token
    UNAVAILABLE = "unavailable"  # cannot serve now (no leader known, no quorum); not proposed
    CAS_FAILED = "cas_failed"  # compare-and-set: current value differs from `expected`
    LOCK_HELD = "lock_held"  # lock acquire: another owner holds an unexpired lease
    NOT_LOCK_HOLDER = "not_lock_holder"  # lock release by someone who does not hold it
    STALE_ENTRY = "stale_entry"  # state machine refused an entry whose token is not above the last
    INTERNAL = "internal"  # a bug on the node; outcome unknown
    FORBIDDEN = "forbidden"  # this connection's certificate may not make this request; never done
    # sharded cluster: this node does not serve the key's shard at the request's epoch (or its
    # map is older than the client's); the body's `epoch` is the node's. Nothing was done.
    WRONG_SHARD = "wrong_shard"


# Errors that mean "certainly did not take effect". TIMEOUT and INTERNAL are not here: the
# request may have been committed. The harness records definite errors as `fail`, the rest
# as `info`, so this set must stay honest.
DEFINITE_ERRORS: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.NOT_LEADER, ErrorCode.RECOVERING, ErrorCode.BAD_REQUEST, ErrorCode.REFUSED,
        ErrorCode.UNAVAILABLE, ErrorCode.CAS_FAILED, ErrorCode.LOCK_HELD,
        ErrorCode.NOT_LOCK_HOLDER, ErrorCode.STALE_ENTRY, ErrorCode.FORBIDDEN, ErrorCode.WRONG_SHARD,
    }
)


# ---------------------------------------------------------------------------- field types
# A field type is (name for error messages, predicate). Kept as plain data so the schema table
# below reads like documentation.
_Check = tuple[str, Callable[[Any], bool]]


def _is_u64(v: Any) -> bool:
    # isinstance, not type(): FencingToken is an int subclass and must pass as a u64.
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _U64_MAX


def _is_scalar_value(v: Any) -> bool:
    # KV values are msgpack scalars; containers are not values (keeps cas equality simple).
    # isinstance, so a FencingToken (an int) can be stored as a value; bool is an int.
    return isinstance(v, (bytes, str, int, float))


U64: _Check = ("u64", _is_u64)
POS_U64: _Check = ("u64 > 0", lambda v: _is_u64(v) and v > 0)
STR: _Check = ("str", lambda v: isinstance(v, str))
ANY: _Check = ("any", lambda v: True)
VALUE: _Check = ("value (bytes, str, int, float or bool)", _is_scalar_value)
OPT_VALUE: _Check = ("value or nil", lambda v: v is None or _is_scalar_value(v))
OPT_STR: _Check = ("str or nil", lambda v: v is None or isinstance(v, str))
ERROR_CODE: _Check = (
    "error code (" + ", ".join(c.value for c in ErrorCode) + ")",
    lambda v: type(v) is str and v in ErrorCode._value2member_map_,
)
ROLE: _Check = ("'peer' or 'client'", lambda v: v in ("peer", "client"))

# A transaction: up to MAX_TXN_OPS micro-ops [f, key, value], f one of TXN_MICRO_OPS; a
# read's value is nil (the reply fills it in), a write's or append's a scalar value.
MAX_TXN_OPS = 64
TXN_MICRO_OPS = ("r", "w", "append")


def _is_txn_ops(v: Any) -> bool:
    if type(v) is not list or not 0 < len(v) <= MAX_TXN_OPS:
        return False
    for m in v:
        if type(m) is not list or len(m) != 3 or m[0] not in TXN_MICRO_OPS or not isinstance(m[1], str):
            return False
        if m[0] == "r" and m[2] is not None:
            return False
        if m[0] != "r" and not _is_scalar_value(m[2]):
            return False
    return True


TXN_OPS: _Check = (f"list of 1..{MAX_TXN_OPS} [r|w|append, key, value] micro-ops (a read's value nil)",
                   _is_txn_ops)


@dataclass(frozen=True)
class Schema:
    """Body schema for one message type: field -> check; `open_body` skips field checks."""

    required: Mapping[str, _Check] = field(default_factory=dict)
    optional: Mapping[str, _Check] = field(default_factory=dict)
    open_body: bool = False


SCHEMAS: dict[MsgType, Schema] = {
    MsgType.HELLO: Schema(
        required={"role": ROLE, "version": U64},
        # "address": where the sending peer listens, so a node that joined with only the
        # founders' addresses can still answer a leader it was never told about.
        optional={"node": STR, "address": STR},
    ),
    # Raft message dicts are validated by ukehi.raft's message_from_dict; here only "a map".
    MsgType.RAFT: Schema(open_body=True),
    MsgType.GET: Schema(required={"key": STR}),
    MsgType.PUT: Schema(required={"key": STR, "value": VALUE}),
    # expected=nil means "the key must be absent".
    MsgType.CAS: Schema(required={"key": STR, "expected": OPT_VALUE, "new": VALUE}),
    MsgType.DELETE: Schema(required={"key": STR}),
    MsgType.FENCED_PUT: Schema(required={"key": STR, "value": VALUE, "token": U64}),
    # ttl_ms > 0: a lease that is expired when granted is a client bug.
    MsgType.ACQUIRE: Schema(required={"lock": STR, "owner": STR, "ttl_ms": POS_U64}),
    MsgType.RELEASE: Schema(required={"lock": STR, "owner": STR}, optional={"token": U64}),
    MsgType.STATUS: Schema(),
    MsgType.ADD_NODE: Schema(required={"node": STR, "address": STR}),
    MsgType.REMOVE_NODE: Schema(required={"node": STR}),
    # Without `node` the leader picks the most up-to-date follower.
    MsgType.TRANSFER_LEADER: Schema(optional={"node": STR}),
    MsgType.SNAPSHOT: Schema(),
    MsgType.APPEND: Schema(required={"key": STR, "value": VALUE}),
    MsgType.TXN: Schema(required={"ops": TXN_OPS}),
    MsgType.SHARD_MAP: Schema(),
    MsgType.MOVE_REPLICA: Schema(required={"shard": U64, "from": STR, "to": STR}),
    MsgType.CHECKSUM: Schema(),
    MsgType.OK: Schema(optional={"value": ANY}),
    MsgType.ERROR: Schema(
        required={"code": ERROR_CODE},
        optional={"message": STR, "leader": OPT_STR, "leader_address": OPT_STR, "epoch": U64},
    ),
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: MsgType
    id: int
    body: dict[str, Any]
    group: int = 0
    epoch: int = 0


def validate_body(msg_type: MsgType, body: Any) -> None:
    """Raise ProtocolError unless `body` fits the schema of `msg_type`."""
    if type(body) is not dict:
        raise ProtocolError(f"{msg_type.value}: body must be a map, got {type(body).__name__}")
    schema = SCHEMAS[msg_type]
    if schema.open_body:
        return
    for name, (tname, ok) in schema.required.items():
        if name not in body:
            raise ProtocolError(f"{msg_type.value}: missing required field {name!r}")
        if not ok(body[name]):
            raise ProtocolError(
                f"{msg_type.value}: field {name!r} must be {tname}, "
                f"got {type(body[name]).__name__}"
            )
    for name, value in body.items():
        if name in schema.required:
            continue
        spec = schema.optional.get(name) if type(name) is str else None
        if spec is None:
            raise ProtocolError(f"{msg_type.value}: unknown field {name!r}")
        tname, ok = spec
        if not ok(value):
            raise ProtocolError(
                f"{msg_type.value}: field {name!r} must be {tname}, got {type(value).__name__}"
            )


# value -> member: MsgType(value) goes through Enum's metaclass call, a few microseconds on
# every frame encoded or decoded; this lookup gives the same member.
_TYPE_BY_VALUE: dict[str, MsgType] = {t.value: t for t in MsgType}


def _coerce_type(msg_type: MsgType | str) -> MsgType:
    if type(msg_type) is MsgType:
        return msg_type
    mt = _TYPE_BY_VALUE.get(msg_type) if type(msg_type) is str else None
    if mt is not None:
        return mt
    try:
        return MsgType(msg_type)
    except ValueError:
        raise ProtocolError(
            f"unknown message type {msg_type!r}; known: "
            + ", ".join(t.value for t in MsgType)
        ) from None


# ---------------------------------------------------------------------------- encoding
def encode_frame(
    msg_type: MsgType | str,
    request_id: int,
    body: Mapping[str, Any] | None = None,
    *,
    group: int = 0,
    epoch: int = 0,
    max_size: int = DEFAULT_MAX_FRAME_SIZE,
    validate: bool = True,
) -> bytes:
    """Encode one frame (length prefix included).

    Raises ProtocolError if the type is unknown, the id/group are not u64, the body does
    not fit its schema (skip with validate=False only for tests of the decoder), or the
    encoded frame exceeds `max_size` (the receiver would refuse it).
    """
    mt = _coerce_type(msg_type)
    if not _is_u64(request_id):
        raise ProtocolError(f"request id must be a u64 int, got {request_id!r}")
    if not _is_u64(group):
        raise ProtocolError(f"group id must be a u64 int, got {group!r}")
    if not _is_u64(epoch):
        raise ProtocolError(f"shard map epoch must be a u64 int, got {epoch!r}")
    # A fresh dict is only needed for other mappings: packing never changes a plain dict.
    body_dict = {} if body is None else (body if type(body) is dict else dict(body))
    if validate:
        validate_body(mt, body_dict)
    msg: dict[str, Any] = {"t": mt.value, "id": request_id, "b": body_dict}
    if group:
        msg["g"] = group
    if epoch:
        msg["e"] = epoch
    try:
        payload = msgpack.packb(msg, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"{mt.value}: body cannot be encoded as msgpack: {exc}") from exc
    if len(payload) > max_size:
        raise ProtocolError(
            f"{mt.value}: encoded frame is {len(payload)} bytes, over the {max_size}-byte "
            "limit; split the request or raise max_frame_size on both ends"
        )
    return _LEN.pack(len(payload)) + payload


def ok_body(value: Any = None) -> dict[str, Any]:
    """Body of an ``ok`` response (``value`` omitted when None)."""
    return {} if value is None else {"value": value}


def error_body(
    code: ErrorCode | str,
    message: str | None = None,
    *,
    leader: str | None = None,
    leader_address: str | None = None,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Body of an ``error`` response; `leader`/`leader_address` are the redirect hint,
    `epoch` the node's shard map epoch (with ``wrong_shard``)."""
    body: dict[str, Any] = {"code": ErrorCode(code).value}
    if message is not None:
        body["message"] = message
    if leader is not None:
        body["leader"] = leader
    if leader_address is not None:
        body["leader_address"] = leader_address
    if epoch is not None:
        body["epoch"] = epoch
    return body


# ---------------------------------------------------------------------------- decoding
def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack ext type {code} is not allowed")


class _ObjectBudget:
    """msgpack list/object hooks that count containers and their items as they are built.

    The hooks run as each container is completed, so a frame over budget is refused after at
    most `max_containers` containers and `max_elements` items exist, not after all of them.
    """

    __slots__ = ("containers", "elements")

    def __init__(self, max_containers: int, max_elements: int) -> None:
        self.containers = max_containers
        self.elements = max_elements

    def _spend(self, size: int) -> None:
        self.containers -= 1
        self.elements -= size
        if self.containers < 0:
            raise ProtocolError(
                "frame has too many arrays/maps (raise max_containers if legitimate)"
            )
        if self.elements < 0:
            raise ProtocolError(
                "frame has too many array items/map pairs (raise max_elements if legitimate)"
            )

    def on_list(self, value: list[Any]) -> list[Any]:
        self._spend(len(value))
        return value

    def on_map(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self._spend(len(value))
        return value


def _check_limit(name: str, value: int) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def decode_payload(
    payload: bytes,
    *,
    max_containers: int = DEFAULT_MAX_CONTAINERS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Frame:
    """Decode and check the msgpack part of one frame (the bytes after the length prefix)."""
    n = len(payload)
    if n == 0:
        raise ProtocolError("empty frame (length 0)")
    # The object budget can only be exceeded by a payload longer than it: every array or map
    # takes at least one byte of msgpack, and every array item or map pair at least one more.
    # A smaller payload (every Raft ack, every client request) is unpacked without the two
    # Python hooks per container; the frames accepted and refused are the same.
    hooks: dict[str, Any] = {}
    if n > max_containers or n > max_elements:
        budget = _ObjectBudget(max_containers, max_elements)
        hooks = {"list_hook": budget.on_list, "object_hook": budget.on_map}
    try:
        # Every length limit is bounded by the payload size (and arrays/maps also by the item
        # budget), so a hostile header cannot make the unpacker allocate more than the frame
        # could fill. A map entry takes at least two bytes, hence n // 2.
        msg = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=n,
            max_str_len=n,
            max_array_len=min(n, max_elements),
            max_map_len=min(n // 2, max_elements),
            max_ext_len=0,
            ext_hook=_refuse_ext,
            **hooks,
        )
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise ProtocolError("msgpack nesting too deep") from None
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the msgpack map in the frame") from None
    except UnicodeDecodeError:
        raise ProtocolError("invalid UTF-8 in a msgpack string") from None
    except Exception as exc:  # msgpack raises ValueError/FormatError/TypeError variants
        raise ProtocolError(f"bad msgpack: {str(exc) or type(exc).__name__}") from None
    if type(msg) is not dict:
        raise ProtocolError(f"frame must be a msgpack map, got {type(msg).__name__}")
    for key in msg:
        if key not in ("t", "id", "b", "g", "e"):
            raise ProtocolError(f"unknown frame field {key!r}")
    if "t" not in msg:
        raise ProtocolError("frame has no message type field 't'")
    if type(msg["t"]) is not str:
        raise ProtocolError(f"message type 't' must be a str, got {type(msg['t']).__name__}")
    mt = _coerce_type(msg["t"])
    if "id" not in msg:
        raise ProtocolError(f"{mt.value}: frame has no request id field 'id'")
    rid = msg["id"]
    if not _is_u64(rid):
        raise ProtocolError(f"{mt.value}: request id must be a u64, got {type(rid).__name__}")
    group = msg.get("g", 0)
    if not _is_u64(group):
        raise ProtocolError(f"{mt.value}: group id 'g' must be a u64, got {type(group).__name__}")
    epoch = msg.get("e", 0)
    if not _is_u64(epoch):
        raise ProtocolError(f"{mt.value}: shard map epoch 'e' must be a u64, got {type(epoch).__name__}")
    if "b" not in msg:
        raise ProtocolError(f"{mt.value}: frame has no body field 'b'")
    body = msg["b"]
    validate_body(mt, body)
    return Frame(mt, rid, body, group, epoch)


def _check_max_size(max_size: int) -> int:
    if type(max_size) is not int or not 1 <= max_size <= _ABSOLUTE_MAX_FRAME:
        raise ValueError(
            f"max frame size must be an int in 1 .. {_ABSOLUTE_MAX_FRAME}, got {max_size!r}"
        )
    return max_size


def _check_length(length: int, max_size: int) -> None:
    if length > max_size:
        raise ProtocolError(
            f"frame length {length} exceeds the maximum frame size {max_size}"
        )
    if length == 0:
        raise ProtocolError("empty frame (length 0)")


def decode_frame(
    data: bytes,
    max_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
    max_containers: int = DEFAULT_MAX_CONTAINERS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Frame:
    """Decode exactly one complete frame (prefix included); no bytes may be left over."""
    _check_max_size(max_size)
    _check_limit("max_containers", max_containers)
    _check_limit("max_elements", max_elements)
    if len(data) < 4:
        raise ProtocolError(f"truncated frame: {len(data)} bytes, the length prefix needs 4")
    (length,) = _LEN.unpack_from(data)
    _check_length(length, max_size)
    if len(data) - 4 != length:
        raise ProtocolError(
            f"frame length prefix says {length} bytes but {len(data) - 4} follow"
        )
    return decode_payload(
        bytes(data[4:]), max_containers=max_containers, max_elements=max_elements
    )


class FrameDecoder:
    """Incremental decoder for a byte stream: ``feed(chunk)`` returns the complete frames.

    Holds at most one partial frame (bounded by `max_size` + 4) plus the unparsed part of the
    last chunk. After it raises ProtocolError it is *poisoned* (the stream's frame boundaries
    are lost): later calls raise again, and the caller should close the connection.
    """

    __slots__ = ("_buf", "_max", "_error", "_containers", "_elements")

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> None:
        self._max = _check_max_size(max_size)
        self._containers = _check_limit("max_containers", max_containers)
        self._elements = _check_limit("max_elements", max_elements)
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (a partial frame)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise ProtocolError(f"decoder already failed: {self._error}")
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= 4:
                (length,) = _LEN.unpack_from(buf, pos)
                # Checked as soon as the prefix is in, before any of the body is waited for.
                _check_length(length, self._max)
                end = pos + 4 + length
                if end > len(buf):
                    break
                frames.append(
                    decode_payload(
                        bytes(buf[pos + 4 : end]),
                        max_containers=self._containers,
                        max_elements=self._elements,
                    )
                )
                pos = end
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if pos:
            del buf[:pos]
        return frames

    def eof(self) -> None:
        """Call at end of stream: raises ProtocolError if a partial frame is pending."""
        if self._buf:
            raise ProtocolError(
                f"connection closed mid-frame with {len(self._buf)} bytes of a frame pending"
            )


# ---------------------------------------------------------------------------- asyncio
async def read_frame(
    reader: asyncio.StreamReader,
    max_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
    max_containers: int = DEFAULT_MAX_CONTAINERS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Frame | None:
    """Read one frame; None on a clean end of stream between frames.

    Raises ProtocolError on a bad frame or a stream that ends inside a frame. The length is
    checked before the body is read, so an oversize prefix never allocates its body.
    """
    _check_max_size(max_size)
    _check_limit("max_containers", max_containers)
    _check_limit("max_elements", max_elements)
    try:
        prefix = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError(
            f"connection closed inside a length prefix ({len(exc.partial)} of 4 bytes)"
        ) from None
    (length,) = _LEN.unpack(prefix)
    _check_length(length, max_size)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(
            f"connection closed mid-frame ({len(exc.partial)} of {length} bytes)"
        ) from None
    return decode_payload(payload, max_containers=max_containers, max_elements=max_elements)


async def write_frame(
    writer: asyncio.StreamWriter,
    msg_type: MsgType | str,
    request_id: int,
    body: Mapping[str, Any] | None = None,
    *,
    group: int = 0,
    epoch: int = 0,
    max_size: int = DEFAULT_MAX_FRAME_SIZE,
    drain: bool = True,
) -> None:
    """Encode and write one frame; awaits `drain()` unless drain=False (batching writers)."""
    writer.write(encode_frame(msg_type, request_id, body, group=group, epoch=epoch, max_size=max_size))
    if drain:
        await writer.drain()
