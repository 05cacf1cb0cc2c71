"""Raft peer messages and their plain-data form for the wire.

Every message is a frozen dataclass with the common fields `group_id` (the Raft group, for
sharding), `term`, `src` and `dst`, a class-level `type` string, and fields per type.
`message_to_dict` turns one into a dict of ints, bools, bytes, strs and lists (what msgpack
carries); `message_from_dict` validates such a dict completely (exact keys, types, ranges,
entry contiguity) and raises `MessageError` naming the first thing that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Union

from .confchange import decode_membership, membership_from_lists
from .errors import BadPeerMessage
from .types import (
    Entry,
    EntryKind,
    U64_MAX,
    MAX_NODE_ID_LEN,
    Membership,
    check_node_id,
    check_u64,
)

__all__ = [
    "MessageError",
    "VoteRequest",
    "VoteResponse",
    "AppendEntries",
    "AppendResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "SnapshotResponse",
    "TimeoutNow",
    "Message",
    "MESSAGE_TYPES",
    "message_to_dict",
    "message_from_dict",
    "entry_to_list",
    "entry_from_list",
]

# Bounds on what one message may carry; the frame size limit bounds total bytes, these keep
# a hostile peer from making us build millions of tiny objects.
MAX_ENTRIES_PER_MESSAGE = 65_536
MAX_CTX_BYTES = 4096


class MessageError(BadPeerMessage):
    """A message (usually from the wire) is malformed; the text names the field.

    A BadPeerMessage (and so still a ValueError): the driver drops it and keeps serving."""


@dataclass(frozen=True, slots=True)
class VoteRequest:
    type: ClassVar[str] = "vote_request"
    group_id: int
    term: int
    src: str
    dst: str
    pre_vote: bool
    last_log_index: int
    last_log_term: int
    # Sent because of a leadership transfer: voters skip the check-quorum lease.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    type: ClassVar[str] = "vote_response"
    group_id: int
    term: int
    src: str
    dst: str
    pre_vote: bool
    granted: bool


@dataclass(frozen=True, slots=True)
class AppendEntries:
    type: ClassVar[str] = "append_entries"
    group_id: int
    term: int
    src: str
    dst: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """`success`: the follower's log matches the leader's up to `index`.

    Rejection: `index` is the rejected prev_index; (`hint_index`, `hint_term`) is the
    follower's last entry at or below it whose term is <= the leader's prev_term, so the
    leader can skip a whole term of mismatching entries in one round trip.
    """

    type: ClassVar[str] = "append_response"
    group_id: int
    term: int
    src: str
    dst: str
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    type: ClassVar[str] = "heartbeat"
    group_id: int
    term: int
    src: str
    dst: str
    commit: int
    ctx: bytes = b""  # the newest pending ReadIndex context, echoed back
    lease_tick: int = 0  # the leader's tick at send time, echoed back (lease reads)


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    type: ClassVar[str] = "heartbeat_response"
    group_id: int
    term: int
    src: str
    dst: str
    ctx: bytes = b""
    lease_tick: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of a snapshot: bytes [offset, offset + len(data)) of `total_size`."""

    type: ClassVar[str] = "install_snapshot"
    group_id: int
    term: int
    src: str
    dst: str
    snap_index: int
    snap_term: int
    membership: Membership
    offset: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """The follower holds the first `next_offset` bytes of snapshot `snap_index`."""

    type: ClassVar[str] = "snapshot_response"
    group_id: int
    term: int
    src: str
    dst: str
    snap_index: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: campaign now, without waiting for an election timeout."""

    type: ClassVar[str] = "timeout_now"
    group_id: int
    term: int
    src: str
    dst: str


Message = Union[
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
]

MESSAGE_TYPES: dict[str, type] = {
    cls.type: cls
    for cls in (
        VoteRequest,
        VoteResponse,
        AppendEntries,
        AppendResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        SnapshotResponse,
        TimeoutNow,
    )
}

# Field kinds, per type, after the common fields.
_COMMON = (("group_id", "u64"), ("term", "u64"), ("src", "node"), ("dst", "node"))
_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {
    VoteRequest: (
        ("pre_vote", "bool"),
        ("last_log_index", "u64"),
        ("last_log_term", "u64"),
        ("transfer", "bool"),
    ),
    VoteResponse: (("pre_vote", "bool"), ("granted", "bool")),
    AppendEntries: (
        ("prev_index", "u64"),
        ("prev_term", "u64"),
        ("entries", "entries"),
        ("commit", "u64"),
    ),
    AppendResponse: (
        ("success", "bool"),
        ("index", "u64"),
        ("hint_index", "u64"),
        ("hint_term", "u64"),
    ),
    Heartbeat: (("commit", "u64"), ("ctx", "ctx"), ("lease_tick", "u64")),
    HeartbeatResponse: (("ctx", "ctx"), ("lease_tick", "u64")),
    InstallSnapshot: (
        ("snap_index", "u64"),
        ("snap_term", "u64"),
        ("membership", "membership"),
        ("offset", "u64"),
        ("total_size", "u64"),
        ("data", "bytes"),
    ),
    SnapshotResponse: (("snap_index", "u64"), ("next_offset", "u64")),
    TimeoutNow: (),
}


# Per type: every field in order (common ones first), and the exact key set of its dict form.
_ALL_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {cls: _COMMON + f for cls, f in _FIELDS.items()}
_KEYS: dict[type, frozenset[str]] = {cls: frozenset({"type"} | {name for name, _ in f})
                                     for cls, f in _ALL_FIELDS.items()}


def entry_to_list(e: Entry) -> list:
    return [e.term, e.index, int(e.kind), e.data, int(e.fencing_token)]


_KIND_BY_INT = (EntryKind.NORMAL, EntryKind.NOOP)


def _entry_fast(obj: Any) -> Entry | None:
    """The common case of :func:`entry_from_list` in one test: a normal or no-op entry whose
    fields are exactly ints and bytes in range (what every node sends). None: let the full
    check judge it and name what is wrong (config entries always go there, to decode their
    membership). Same entries accepted, same Entry built; no error text built per entry."""
    if type(obj) is list and len(obj) == 5:
        term, index, kind, data, token = obj
        if (type(term) is int and type(index) is int and type(token) is int and type(kind) is int
                and type(data) is bytes and 0 <= term <= U64_MAX and 0 <= index <= U64_MAX
                and 0 <= token <= U64_MAX and 0 <= kind <= 1):
            return Entry(term, index, _KIND_BY_INT[kind], data, token)
    return None


def entry_from_list(obj: Any, where: str = "entry") -> Entry:
    if not isinstance(obj, (list, tuple)) or len(obj) != 5:
        raise MessageError(f"{where} must be a list [term, index, kind, data, fencing_token]")
    term, index, kind, data, token = obj
    try:
        term = check_u64(f"{where} term", term)
        index = check_u64(f"{where} index", index)
        token = check_u64(f"{where} fencing_token", token)
    except (TypeError, ValueError) as exc:
        raise MessageError(str(exc)) from None
    if type(kind) is not int or kind not in (0, 1, 2):
        raise MessageError(f"{where} kind must be 0 (normal), 1 (noop) or 2 (config)")
    if not isinstance(data, bytes):
        raise MessageError(f"{where} data must be bytes, got {type(data).__name__}")
    entry = Entry(term, index, EntryKind(kind), data, token)
    if entry.kind is EntryKind.CONFIG:
        try:
            decode_membership(data)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"{where} is a bad config entry: {exc}") from None
    return entry


def _membership_to_dict(m: Membership) -> dict:
    return {
        "voters": sorted(m.voters),
        "outgoing": sorted(m.outgoing),
        "learners": sorted(m.learners),
    }


def _membership_from_obj(obj: Any) -> Membership:
    if not isinstance(obj, dict) or set(obj) != {"voters", "outgoing", "learners"}:
        raise MessageError("membership must be a dict with exactly voters, outgoing, learners")
    sets = []
    for key in ("voters", "outgoing", "learners"):
        value = obj[key]
        if not isinstance(value, (list, tuple)) or len(value) > 10_000:
            raise MessageError(f"membership {key} must be a list of node ids")
        try:
            sets.append(frozenset(check_node_id(f"membership {key} item", v) for v in value))
        except (TypeError, ValueError) as exc:
            raise MessageError(str(exc)) from None
    try:
        return membership_from_lists(*sets)
    except ValueError as exc:
        raise MessageError(f"membership: {exc}") from None


def message_to_dict(msg: Message) -> dict:
    """Plain-data form of `msg` (for msgpack): only ints, bools, bytes, strs, lists, dicts."""
    cls = type(msg)
    fields = _FIELDS.get(cls)
    if fields is None:
        raise TypeError(f"not a Raft message: {cls.__name__}")
    out: dict[str, Any] = {"type": cls.type}
    for name, _ in _COMMON:
        out[name] = getattr(msg, name)
    for name, kind in fields:
        value = getattr(msg, name)
        if kind == "entries":
            value = [entry_to_list(e) for e in value]
        elif kind == "membership":
            value = _membership_to_dict(value)
        out[name] = value
    return out


def _check_field(type_name: str, name: str, kind: str, value: Any) -> Any:
    # The values every node sends, accepted in one test each; anything else takes the full
    # check below, which accepts exactly the same values and names what is wrong (the error
    # text is built only there: it was an f-string per field of every message).
    if kind == "u64":
        if type(value) is int and 0 <= value <= U64_MAX:
            return value
    elif kind == "node":
        if type(value) is str and 0 < len(value) <= MAX_NODE_ID_LEN:
            return value
    elif kind == "bool":
        if type(value) is bool:
            return value
    where = f"{type_name}.{name}"
    try:
        if kind == "u64":
            return check_u64(where, value)
        if kind == "node":
            return check_node_id(where, value)
    except (TypeError, ValueError) as exc:
        raise MessageError(str(exc)) from None
    if kind == "bool":
        if not isinstance(value, bool):
            raise MessageError(f"{where} must be a bool, got {type(value).__name__}")
        return value
    if kind in ("bytes", "ctx"):
        if not isinstance(value, bytes):
            raise MessageError(f"{where} must be bytes, got {type(value).__name__}")
        if kind == "ctx" and len(value) > MAX_CTX_BYTES:
            raise MessageError(f"{where} is {len(value)} bytes, more than {MAX_CTX_BYTES}")
        return value
    if kind == "membership":
        return _membership_from_obj(value)
    if kind == "entries":
        if not isinstance(value, (list, tuple)):
            raise MessageError(f"{where} must be a list of entries")
        if len(value) > MAX_ENTRIES_PER_MESSAGE:
            raise MessageError(f"{where} has {len(value)} entries, more than {MAX_ENTRIES_PER_MESSAGE}")
        out = []
        for k, e in enumerate(value):
            entry = _entry_fast(e)
            out.append(entry if entry is not None else entry_from_list(e, f"{where}[{k}]"))
        return tuple(out)
    raise AssertionError(f"unknown field kind {kind}")


def message_from_dict(obj: Any) -> Message:
    """Validate and build a message from its plain-data form; raises MessageError."""
    if not isinstance(obj, dict):
        raise MessageError(f"a Raft message must be a dict, got {type(obj).__name__}")
    type_name = obj.get("type")
    cls = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MessageError(
            f"unknown Raft message type {type_name!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        )
    fields = _ALL_FIELDS[cls]
    expected = _KEYS[cls]
    if obj.keys() != expected:
        keys = set(obj)
        missing = sorted(expected - keys)
        extra = sorted(str(k) for k in keys - expected)
        raise MessageError(f"{type_name}: missing fields {missing}, unexpected fields {extra}")
    kwargs = {name: _check_field(type_name, name, kind, obj[name]) for name, kind in fields}
    msg = cls(**kwargs)
    if cls is AppendEntries:
        _check_append(msg)
    elif cls is InstallSnapshot:
        if msg.offset + len(msg.data) > msg.total_size:
            raise MessageError(
                f"install_snapshot chunk [{msg.offset}, {msg.offset + len(msg.data)}) runs past "
                f"total_size {msg.total_size}"
            )
    return msg


def _check_append(msg: AppendEntries) -> None:
    """Entries must follow prev_index contiguously, with terms in (prev_term..term]."""
    expected = msg.prev_index + 1
    prev_term = msg.prev_term
    for e in msg.entries:
        if e.index != expected:
            raise MessageError(
                f"append_entries entries must be contiguous from prev_index+1={msg.prev_index + 1}"
                f"; got index {e.index} where {expected} was expected"
            )
        if e.term < prev_term or e.term > msg.term:
            raise MessageError(
                f"append_entries entry {e.index} has term {e.term}, outside "
                f"[{prev_term}, {msg.term}]"
            )
        prev_term = e.term
        expected += 1
