"""The key-value state machine Ukehi replicates, and the command codec for its log entries.

Commands are msgpack maps with an ``op`` and per-op fields (see `COMMAND_SCHEMAS`)::

    get          key                               (read through the log; normally ReadIndex)
    put          key, value
    cas          key, expected (nil = absent), new
    delete       key
    fenced_put   key, value, token
    acquire      lock, owner, ttl_ms, now_ms       -> fencing token
    release      lock, owner, now_ms [, token]
    append       key, value                        -> {"index": log index}
    txn          ops: [[f, key, value], ...]       -> {"ops": [...], "index": log index}
    checksum     (none)                            -> {"index", "digest", "keys"} of the state

``append`` makes a key's value a list (absent: ``[value]``) and refuses a key holding a
scalar. ``txn`` applies its micro-ops (``r``: read, ``w``: write a scalar, ``append``) in
order, all of them or none (a refused append refuses the whole transaction), and answers
each read with the value it saw at that point, so a transaction's reads see its own
earlier writes. Replies carry the log index they were applied at: the version order of
every key written, which the Elle checker (``checkers.elle``) uses as is.

Keys and lock names are str; values are msgpack scalars (bytes, str, int, float, bool).

Determinism: every replica applies the same entries and must reach the same state, so
nothing here reads a clock. Lock TTLs use ``now_ms``, a timestamp the *leader* stamps into
the command when it proposes it. The state machine keeps ``clock_ms``, the highest
``now_ms`` it has applied, and uses ``max(clock_ms, now_ms)`` as the current time, so time
never runs backwards across a leader change whose clock is behind (a lease granted under
the old leader's clock cannot be resurrected by a slower clock). A leader whose clock runs
*ahead* does shorten leases: that is a real property of clock-stamped TTLs that the clock
nemesis is meant to expose.

Fencing, two levels:

* Entry level: the state machine refuses an entry whose fencing token is not strictly
  greater than the last accepted one (result ``stale_entry``, nothing applied, the index is
  still consumed so every replica stays in step). Tokens grow with the term, so such an
  entry can only come from a deposed leader's counter or a bug; refusing it is defence in
  depth. Token 0 marks a legacy WAL v1 entry (v1 has no token field) and is accepted only
  while no non-zero token has been applied, i.e. in the v1 prefix of the log. Empty command
  bytes are Raft no-op entries: they consume the index and never fail.
* Key level: ``fenced_put(key, value, token)`` is refused (``refused``) when ``token`` is
  *lower* than the highest token already accepted for that key. An *equal* token is
  accepted: it is the same lock holder writing again (Jepsen / Kleppmann fencing). The
  per-key high-water mark survives ``delete`` so that a deposed holder cannot write after a
  delete either. Plain ``put`` is unfenced and does not touch the marks.

Lock ``acquire`` returns the fencing token *of the Raft entry that applied it*: unique
across the cluster and greater than every token granted before, whichever node led.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import msgpack

from ukehi.fencing import FencingToken
from ukehi.statemachine import EntryLike, Result, entry_fields
from ukehi.wire import (MAX_TXN_OPS, OPT_VALUE, STR, TXN_OPS, U64, VALUE, ErrorCode, MsgType, Schema,
                        error_body, ok_body)

__all__ = [
    "CommandError",
    "SnapshotFormatError",
    "COMMAND_SCHEMAS",
    "CHECKSUM_COMMAND",
    "MAX_COMMAND_SIZE",
    "encode_command",
    "decode_command",
    "KVStateMachine",
    "LockInfo",
    "ok",
    "err",
    "to_response",
]

# A single command larger than this is refused by the codec (values travel in one frame).
MAX_COMMAND_SIZE = 16 * 1024 * 1024
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
SNAPSHOT_FORMAT = "ukehi-kv"
SNAPSHOT_VERSION = 1



def digest_of(snapshot: bytes) -> str:
    """The digest ``digest()`` gives for the state these snapshot bytes hold (a snapshot
    restored and taken again gives the same bytes, so the same digest)."""
    return hashlib.blake2b(snapshot, digest_size=8).hexdigest()

class CommandError(ValueError):
    """Command bytes or a command dict are malformed; the message says which field."""


class SnapshotFormatError(ValueError):
    """Snapshot bytes are not a valid KV snapshot; the message says what is wrong."""


COMMAND_SCHEMAS: dict[str, Schema] = {
    "get": Schema(required={"key": STR}),
    "put": Schema(required={"key": STR, "value": VALUE}),
    "cas": Schema(required={"key": STR, "expected": OPT_VALUE, "new": VALUE}),
    "delete": Schema(required={"key": STR}),
    "fenced_put": Schema(required={"key": STR, "value": VALUE, "token": U64}),
    "acquire": Schema(required={"lock": STR, "owner": STR, "ttl_ms": U64, "now_ms": U64}),
    "release": Schema(required={"lock": STR, "owner": STR, "now_ms": U64}, optional={"token": U64}),
    "append": Schema(required={"key": STR, "value": VALUE}),
    "txn": Schema(required={"ops": TXN_OPS}),
    # A consistency check (CockroachDB's ComputeChecksum): applied at one log index on every
    # replica, each computes the digest of its state there, so replicas can be compared.
    "checksum": Schema(),
}


def _check_command(op: Any) -> dict[str, Any]:
    if not isinstance(op, Mapping):
        raise CommandError(f"a command must be a map, got {type(op).__name__}")
    name = op.get("op")
    if type(name) is not str or name not in COMMAND_SCHEMAS:
        raise CommandError(
            f"unknown command op {name!r}; known: {', '.join(sorted(COMMAND_SCHEMAS))}"
        )
    schema = COMMAND_SCHEMAS[name]
    for field, (tname, check) in schema.required.items():
        if field not in op:
            raise CommandError(f"{name}: missing required field {field!r}")
        if not check(op[field]):
            raise CommandError(
                f"{name}: field {field!r} must be {tname}, got {type(op[field]).__name__}"
            )
    for field, value in op.items():
        if field == "op" or field in schema.required:
            continue
        spec = schema.optional.get(field) if type(field) is str else None
        if spec is None:
            raise CommandError(f"{name}: unknown field {field!r}")
        if not spec[1](value):
            raise CommandError(
                f"{name}: field {field!r} must be {spec[0]}, got {type(value).__name__}"
            )
    if name == "acquire" and op["ttl_ms"] == 0:
        raise CommandError("acquire: ttl_ms must be > 0 (a lease that is already expired)")
    return dict(op)


def encode_command(op: Mapping[str, Any]) -> bytes:
    """Validate a command dict (``{"op": ..., fields}``) and encode it for a log entry."""
    cmd = _check_command(op)
    # Ints (FencingToken included) are stored as plain ints so decode gives back the same.
    data = msgpack.packb(cmd, use_bin_type=True)
    if len(data) > MAX_COMMAND_SIZE:
        raise CommandError(f"command is {len(data)} bytes, over the {MAX_COMMAND_SIZE}-byte limit")
    return data


#: the log command of a consistency check (the same bytes on every node: one constant key)
CHECKSUM_COMMAND = encode_command({"op": "checksum"})


def decode_command(data: bytes) -> dict[str, Any]:
    """Decode and validate command bytes; raises CommandError naming what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CommandError(f"command must be bytes, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise CommandError("empty command bytes (a Raft no-op, not a KV command)")
    if n > MAX_COMMAND_SIZE:
        raise CommandError(f"command is {n} bytes, over the {MAX_COMMAND_SIZE}-byte limit")
    containers = [0]

    def count_container(value: Any) -> Any:
        # A command is one flat map of scalars (a txn: plus its list of micro-op triples):
        # refuse more nesting as soon as it appears, so a command of a million empty maps
        # cannot turn into a million dicts first.
        containers[0] += 1
        if containers[0] > 2 + MAX_TXN_OPS:
            raise CommandError("a command must be a flat map of scalar fields; found nesting")
        return value

    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=n, max_str_len=n,
            max_array_len=min(n, 64), max_map_len=min(n // 2, 64), max_ext_len=0,
            list_hook=count_container, object_hook=count_container,
        )
    except CommandError:
        raise
    except Exception as exc:  # msgpack's ValueError family, UnicodeDecodeError, StackError
        raise CommandError(f"command is not valid msgpack: {str(exc) or type(exc).__name__}") from None
    if containers[0] > 1 and not (isinstance(obj, dict) and obj.get("op") == "txn"):
        raise CommandError("a command must be a flat map of scalar fields; found nesting")
    return _check_command(obj)


def ok(value: Any = None) -> Result:
    """A success result."""
    return {"ok": True, "value": value}


def err(code: ErrorCode, message: str) -> Result:
    """A failure result; `code` is a wire ErrorCode."""
    return {"ok": False, "error": code.value, "message": message}


def to_response(result: Result) -> tuple[MsgType, dict[str, Any]]:
    """The wire response (type, body) for a state machine result."""
    if result["ok"]:
        return MsgType.OK, ok_body(result.get("value"))
    return MsgType.ERROR, error_body(result["error"], result.get("message"))


class LockInfo(tuple):
    """(owner, token, expires_at_ms) of a held lock."""

    __slots__ = ()

    def __new__(cls, owner: str, token: int, expires_at_ms: int) -> "LockInfo":
        return super().__new__(cls, (owner, FencingToken(token), expires_at_ms))

    @property
    def owner(self) -> str:
        return self[0]

    @property
    def token(self) -> FencingToken:
        return self[1]

    @property
    def expires_at_ms(self) -> int:
        return self[2]


class KVStateMachine:
    """The replicated KV map with per-key fencing marks and leased locks."""

    def __init__(self, *, unsafe_ignore_fences: bool = False) -> None:
        # The no-fencing-check planted bug (ukehi/bugs.py): fenced_put skips the key's fence.
        self.unsafe_ignore_fences = unsafe_ignore_fences
        self._data: dict[str, Any] = {}
        self._fences: dict[str, int] = {}
        self._locks: dict[str, LockInfo] = {}
        self._last_applied = 0
        self._last_token = FencingToken(0)
        self._clock_ms = 0

    # ------------------------------------------------------------------ queries
    @property
    def last_applied(self) -> int:
        return self._last_applied

    @property
    def last_token(self) -> FencingToken:
        return self._last_token

    @property
    def clock_ms(self) -> int:
        """The highest leader timestamp applied so far (the state machine's notion of now)."""
        return self._clock_ms

    def read(self, key: str) -> Any:
        """The value of `key`, or None when absent. Never mutates (for ReadIndex reads)."""
        if type(key) is not str:
            raise TypeError(f"key must be a str, got {type(key).__name__}")
        return self._data.get(key)

    def read_txn(self, ops: list[list[Any]], overlay: Mapping[str, Any] | None = None) -> list[list[Any]]:
        """A read-only transaction's micro-ops with their reads filled in, from the applied
        state (seen through ``overlay``, key -> value, when given). Never mutates."""
        data = self._data if overlay is None else {**self._data, **overlay}
        return [[f, k, data.get(k)] for f, k, _ in ops]

    def fence_of(self, key: str) -> FencingToken:
        """Highest fencing token accepted by a fenced_put on `key` (0 when none)."""
        return FencingToken(self._fences.get(key, 0))

    def lock_info(self, name: str, now_ms: int | None = None) -> LockInfo | None:
        """The holder of lock `name`, or None if free (expired counts as free when `now_ms`
        or the applied clock has passed its expiry)."""
        info = self._locks.get(name)
        now = self._clock_ms if now_ms is None else max(now_ms, self._clock_ms)
        if info is None or now >= info.expires_at_ms:
            return None
        return info

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> list[tuple[str, Any]]:
        """All (key, value) pairs, sorted by key."""
        return sorted(self._data.items())

    # ------------------------------------------------------------------ apply
    def apply(self, index: int, fencing_token: int, command: bytes,
              decoded: dict[str, Any] | None = None) -> Result:
        """Apply one committed entry.

        ``decoded``: the command already decoded and validated from these very bytes (the
        leader keeps what it validated at propose time), so it is not decoded again.

        Raises ValueError if `index` is not above last_applied (the driver applied an entry
        twice or out of order: a bug that must stop the node, not a client error). Gaps are
        allowed: under the AlertAndContinue corruption policy the log can have a hole, and the
        harness must see what the cluster does with it rather than a crashed node.
        """
        if type(index) is not int or index <= self._last_applied:
            raise ValueError(
                f"entry index {index!r} is not above last applied index {self._last_applied}; "
                "entries must be applied once, in log order"
            )
        if not isinstance(command, (bytes, bytearray, memoryview)):
            raise TypeError(f"entry {index}: command must be bytes, got {type(command).__name__}")
        token = FencingToken(fencing_token)
        self._last_applied = index
        if len(command) == 0:
            # Raft no-op (leader's first entry of a term): nothing to apply, never refused.
            if token > self._last_token:
                self._last_token = token
            return ok()
        if token <= self._last_token and not (token == 0 and self._last_token == 0):
            return err(
                ErrorCode.STALE_ENTRY,
                f"entry {index} has fencing token {token!r}, not above the last applied "
                f"{self._last_token!r}; it comes from a deposed leader and was not applied",
            )
        self._last_token = token
        if decoded is not None:
            cmd = decoded
        else:
            try:
                cmd = decode_command(command)
            except CommandError as exc:
                return err(ErrorCode.BAD_REQUEST, f"entry {index}: {exc}")
        if cmd["op"] in ("append", "txn"):
            return self._execute_txn(cmd, index)
        if cmd["op"] == "checksum":
            return ok({"index": index, "digest": self.digest(), "keys": len(self._data)})
        return self._execute(cmd, token)

    def _execute_txn(self, cmd: dict[str, Any], index: int) -> Result:
        if cmd["op"] == "append":
            refused = self._append_refused(cmd["key"])
            if refused:
                return refused
            self._data[cmd["key"]] = [*self._data.get(cmd["key"], ()), cmd["value"]]
            return ok({"index": index})
        ops = cmd["ops"]
        written: dict[str, Any] = {}  # the transaction's writes, applied only if all are legal
        out = []
        for f, k, v in ops:
            cur = written[k] if k in written else self._data.get(k)
            if f == "r":
                out.append([f, k, cur])
                continue
            if f == "append":
                if cur is not None and type(cur) is not list:
                    return err(ErrorCode.BAD_REQUEST, f"txn refused, nothing applied: append to {k!r}, "
                                                      f"which holds {type(cur).__name__} {cur!r}, not a list")
                written[k] = [*(cur or ()), v]
            else:
                written[k] = v
            out.append([f, k, v])
        self._data.update(written)
        return ok({"ops": out, "index": index})

    def txn_overlay(self, ops: list[list[Any]], overlay: dict[str, Any]) -> None:
        """Fold a transaction's writes into ``overlay`` (key -> value) as applying it would,
        without touching the state (for the read-uncommitted-txn planted bug)."""
        for f, k, v in ops:
            cur = overlay[k] if k in overlay else self._data.get(k)
            if f == "append":
                if cur is None or type(cur) is list:
                    overlay[k] = [*(cur or ()), v]
            elif f == "w":
                overlay[k] = v

    def _append_refused(self, key: str) -> Result | None:
        cur = self._data.get(key)
        if cur is not None and type(cur) is not list:
            return err(ErrorCode.BAD_REQUEST, f"append to {key!r}: it holds {type(cur).__name__} "
                                              f"{cur!r}, not a list; append only to absent or list keys")
        return None

    def apply_batch(self, entries: Iterable[EntryLike]) -> list[Result]:
        """Apply entries in order (tuples (index, token, command) or WalEntry-like objects)."""
        return [self.apply(*entry_fields(e)) for e in entries]

    def _execute(self, cmd: dict[str, Any], token: FencingToken) -> Result:
        op = cmd["op"]
        if "now_ms" in cmd and cmd["now_ms"] > self._clock_ms:
            self._clock_ms = cmd["now_ms"]
        if op == "get":
            return ok(self._data.get(cmd["key"]))
        if op == "put":
            self._data[cmd["key"]] = cmd["value"]
            return ok()
        if op == "delete":
            existed = self._data.pop(cmd["key"], _MISSING) is not _MISSING
            return ok(existed)
        if op == "cas":
            key = cmd["key"]
            current = self._data.get(key)
            if not _same_value(current, cmd["expected"]):
                return err(
                    ErrorCode.CAS_FAILED,
                    f"cas on {key!r}: expected {cmd['expected']!r}, found {current!r}",
                )
            self._data[key] = cmd["new"]
            return ok()
        if op == "fenced_put":
            key, offered = cmd["key"], cmd["token"]
            highest = self._fences.get(key, 0)
            if offered < highest and not self.unsafe_ignore_fences:
                return err(
                    ErrorCode.REFUSED,
                    f"fenced put on {key!r} with token {FencingToken(offered)!r} refused: "
                    f"token {FencingToken(highest)!r} was already accepted for this key; "
                    "re-acquire the lock for a fresh token",
                )
            self._fences[key] = max(offered, highest)
            self._data[key] = cmd["value"]
            return ok()
        if op == "acquire":
            name, owner = cmd["lock"], cmd["owner"]
            held = self.lock_info(name)
            if held is not None and held.owner != owner:
                return err(
                    ErrorCode.LOCK_HELD,
                    f"lock {name!r} is held by {held.owner!r} until "
                    f"{held.expires_at_ms} ms (now {self._clock_ms} ms)",
                )
            # Re-acquire by the holder renews the lease and gets this entry's (newer) token.
            expires = min(self._clock_ms + cmd["ttl_ms"], _U64_MAX)
            self._locks[name] = LockInfo(owner, token, expires)
            return ok(token)
        if op == "release":
            name, owner = cmd["lock"], cmd["owner"]
            info = self._locks.get(name)
            if info is None or info.owner != owner or (
                "token" in cmd and cmd["token"] != info.token
            ):
                return err(
                    ErrorCode.NOT_LOCK_HOLDER,
                    f"lock {name!r} is not held by {owner!r}"
                    + (" with that token" if info is not None and info.owner == owner else ""),
                )
            del self._locks[name]
            return ok()
        raise AssertionError(f"validated op {op!r} has no handler")  # schema and code disagree

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Deterministic msgpack bytes of the whole state (same state -> same bytes)."""
        state = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "last_applied": self._last_applied,
            "last_token": int(self._last_token),
            "clock_ms": self._clock_ms,
            "data": [[k, v] for k, v in sorted(self._data.items())],
            "fences": [[k, t] for k, t in sorted(self._fences.items())],
            "locks": [
                [n, i.owner, int(i.token), i.expires_at_ms] for n, i in sorted(self._locks.items())
            ],
        }
        return msgpack.packb(state, use_bin_type=True)

    def digest(self) -> str:
        """A short hex digest of the whole state (the snapshot bytes, which are deterministic):
        two replicas that applied the same log up to the same index have the same digest."""
        return digest_of(self.snapshot())

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's. On bad bytes raises SnapshotFormatError
        and leaves the current state untouched."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SnapshotFormatError(f"snapshot must be bytes, got {type(data).__name__}")
        n = len(data)
        try:
            s = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_bin_len=n, max_str_len=n,
                max_array_len=n, max_map_len=n // 2, max_ext_len=0,
            )
        except Exception as exc:
            raise SnapshotFormatError(
                f"snapshot is not valid msgpack: {str(exc) or type(exc).__name__}"
            ) from None
        if type(s) is not dict or s.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotFormatError(f"not a {SNAPSHOT_FORMAT} snapshot (missing format tag)")
        if s.get("version") != SNAPSHOT_VERSION:
            raise SnapshotFormatError(
                f"snapshot version {s.get('version')!r} is not supported (expected "
                f"{SNAPSHOT_VERSION}); upgrade this node"
            )
        for f in ("last_applied", "last_token", "clock_ms"):
            if not _is_u64(s.get(f)):
                raise SnapshotFormatError(f"snapshot field {f!r} must be a u64")
        data_map = _pairs(s, "data", STR[1], _is_stored_value, "value")
        fences = _pairs(s, "fences", STR[1], _is_u64, "token")
        locks_raw = s.get("locks")
        if type(locks_raw) is not list:
            raise SnapshotFormatError("snapshot field 'locks' must be a list")
        locks: dict[str, LockInfo] = {}
        for item in locks_raw:
            if (
                type(item) is not list or len(item) != 4 or type(item[0]) is not str
                or type(item[1]) is not str or not _is_u64(item[2]) or not _is_u64(item[3])
                or item[0] in locks
            ):
                raise SnapshotFormatError(
                    "snapshot 'locks' entries must be unique [name, owner, token, expires_ms]"
                )
            locks[item[0]] = LockInfo(item[1], item[2], item[3])
        self._data = data_map
        self._fences = fences
        self._locks = locks
        self._last_applied = s["last_applied"]
        self._last_token = FencingToken(s["last_token"])
        self._clock_ms = s["clock_ms"]


_MISSING = object()


def _is_u64(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _U64_MAX


def _is_stored_value(v: Any) -> bool:
    """A scalar, or the list of scalars that appends build."""
    return VALUE[1](v) or (type(v) is list and all(VALUE[1](x) for x in v))


def _same_value(a: Any, b: Any) -> bool:
    # 1 == 1.0 == True in Python; a register holding True must not match expected 1.
    return type(a) is type(b) and a == b


def _pairs(s: dict[str, Any], name: str, key_ok: Any, val_ok: Any, what: str) -> dict[str, Any]:
    raw = s.get(name)
    if type(raw) is not list:
        raise SnapshotFormatError(f"snapshot field {name!r} must be a list")
    out: dict[str, Any] = {}
    for item in raw:
        if type(item) is not list or len(item) != 2 or not key_ok(item[0]) or item[0] in out:
            raise SnapshotFormatError(f"snapshot {name!r} entries must be unique [key, {what}]")
        if not val_ok(item[1]):
            raise SnapshotFormatError(
                f"snapshot {name!r} entry for {item[0]!r} has a bad {what}: "
                f"{type(item[1]).__name__}"
            )
        out[item[0]] = item[1]
    return out
