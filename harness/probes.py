"""The bad-input probe: a fixed battery of malformed requests sent to every running node at
the end of a run, over the real client connection (issue 18, detection power).

The workloads only ever send well-formed requests, so a node that accepts bad input passes
every run. After the final phase (``harness/run.py``) and at the end of a simulator seed
(``harness/sim/runner.py``) the same battery (:data:`BATTERY`, one definition, run by
:func:`run_battery`) is sent through a :class:`Transport`:

- real runs: :class:`NodeTransport`, one fresh TLS connection per probe with the run's client
  certificate (what the workloads' ``UkehiClient`` presents), the probe's bytes written as is;
- the simulator: :class:`SimTransport`, the same bytes decoded by ``wire.decode_frame`` (what
  the node's server does with them) and handed to the node's request handler.

What the protocol promises (``ukehi/wire.py``, ``ukehi/server.py``), and what each probe is
held to (``checkers/probes.py`` judges the records):

- a frame that breaks the framing or the schema of its type (bad length, not msgpack,
  truncated, unknown type or field, a missing or ill-typed field, ``acquire`` with
  ``ttl_ms`` 0, a txn of too many or malformed micro-ops) closes that connection with one
  ``bad-frame`` line in the node log saying why (``status.bad_frames`` counts them);
- a well-formed request the node may not do (a key under the reserved address prefix, an
  append to a key holding a scalar, a transaction with such an append) is answered
  ``bad_request`` with a message, and nothing is applied;
- afterwards the node still runs and answers a valid request, and every key a probe aimed at
  holds what it held before (read back at the leader).

The malformed probes only show that bad input is refused. The answer scenarios
(:data:`SCENARIOS`) then send the leader well-formed but unusual requests whose answers the
API fully determines, in a fresh key prefix (``probe/fresh/<term>-<commit index>/``): a
get, delete and cas of a key never written, create-if-absent twice, a fenced put below,
at and (after a delete) below the key's fence, a txn reading its own write; and a lock
nobody holds released with and without a token, acquired, refused to another owner,
released by the wrong owner or token, renewed, released by the holder with its token,
released again, taken by the other owner and released by it without a token; and admin
requests naming a node id no node can have (300 characters, over the Raft core's bound of
256; empty; holding a tab) or a well-formed id of no member: add_node, remove_node and
transfer_leader are each answered ``bad_request`` (an add_node taken instead adds a learner
that can never join, and answers late), and the refused add_node's address key stays
unwritten (read back). Each step's record carries its expected answer; a scenario stops at
the first answer that differs. The workloads never send most of these (no workload releases
a lock it does not hold on purpose, deletes a key never written, or names a bad node id), so
a node answering them wrongly passed every run before (the release mutant
``kv.py:441:16:and_or`` and the node-id mutant ``raft/types.py:53:8:drop_stmt`` among them).
The admin steps go over the run's admin certificate (``Transport.exchange(admin=True)``);
those refused before the node looks at its role (an unusable id) have no leadership excuse
(``Step.leader_only``).

The probes use keys of their own (``probe/...``) and a lock of their own; their requests and
answers go to ``probes.jsonl`` in the run directory, never to ``history.jsonl``, so the
workload's checkers never see them (the white-box checkers' signatures cover only the
workload's key prefixes, ``checkers/whitebox/signatures.py``).

Record kinds in ``probes.jsonl`` (one JSON object a line): ``start`` (battery version, nodes
probed and not, leader, each node's ``bad_frames`` before), ``setup`` (each probed key read
before, and the valid writes of the scalars the probes aim at), ``probe`` (one probe to one
node: name, level, expected refusal, answer; a node's first unanswered probe is its last),
``probe`` records of the answer scenarios (level ``answer``, with ``expected``, ``scenario``
and ``step``), ``alive`` (the node afterwards: running, status answered, ``bad_frames`` after), ``data`` (a
probed key read back: expected and got), ``end``; ``error`` when the battery itself failed.
Sharded runs get no battery (and no file): a sharded node routes keyed requests by group.

Cost: 44 probes per node, one TLS connection each, nodes in parallel: about 0.6 s for 3
nodes and 0.8 s for 5 on the loaded 2-core test machine, then the 41 scenario steps at the
leader one after another (each a Raft write or read, or an admin request refused before
either); in the simulator a few hundredths of a second of wall time per seed (no network).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import msgpack

from checkers.probes import PROBES_FILE, answer_matches
from ukehi import wire
from ukehi.node.driver import ADDRESS_KEY_PREFIX
from ukehi.raft.types import MAX_NODE_ID_LEN

log = logging.getLogger("ukehi_jepsen.probes")

#: bumped when the battery changes, so a stored probes.jsonl says which battery it ran
#: (2: the answer scenarios, :data:`SCENARIOS`; 3: their admin scenario)
BATTERY_VERSION = 3
#: every key a probe aims at starts with this (never a workload's prefix: register/, kv/, ...)
PROBE_PREFIX = "probe/"
#: the scalars the probes aim at, each written first by a valid put: one for the stateless
#: probes, and one for each stateful probe (an append to a scalar), so that one probe wrongly
#: accepted cannot change what the next one meets
SCALAR_KEY = f"{PROBE_PREFIX}scalar"
APPEND_SCALAR_KEY = f"{PROBE_PREFIX}scalar-append"
TXN_SCALAR_KEY = f"{PROBE_PREFIX}scalar-txn"
SCALAR_KEYS = (SCALAR_KEY, APPEND_SCALAR_KEY, TXN_SCALAR_KEY)
SCALAR_VALUE = "probe-before"
#: a key under the node's reserved prefix (the address book lives there; no node is named so)
RESERVED_KEY = f"{ADDRESS_KEY_PREFIX}probe"
#: what a probe that should be refused tries to write: finding it anywhere is a change
CHANGED = "PROBE-CHANGED"
#: seconds one probe may take to be answered or closed; past it the node is "hung"
PROBE_TIMEOUT_S = 5.0
#: bound of the whole battery (real runs): the run goes on to its checks either way
BATTERY_TIMEOUT_S = 120.0
_REQUEST_ID = 7
_LEN = struct.Struct(">I")

# Expected refusals.
CLOSE = "close"              # the connection is closed with a bad-frame log line, no answer
BAD_REQUEST = "bad_request"  # an error answer with code bad_request and a message
ANSWER = "answer"            # a well-formed request: the exact answer in the record's ``expected``


@dataclass(frozen=True)
class Probe:
    """One malformed input. ``data``: the exact bytes sent on a fresh connection; ``cut``:
    send only this many of them, then hang up (a frame truncated by the sender);
    ``expect``: the refusal the protocol defines; ``leader_only``: needs the leader's state
    machine (followers answer not_leader before looking); ``keys``: keys it would change."""

    name: str
    level: str  # "frame" (the framing is broken) or "request" (a frame whose request is bad)
    what: str
    data: bytes
    expect: str
    leader_only: bool = False
    cut: int | None = None
    keys: tuple[str, ...] = ()


def _payload(msg: Mapping[str, Any]) -> bytes:
    return msgpack.packb(dict(msg), use_bin_type=True)


def _framed(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


def _request(t: str, body: Any, **extra: Any) -> bytes:
    """A frame of type ``t`` (any string) with ``body``, not checked against any schema."""
    return _framed(_payload({"t": t, "id": _REQUEST_ID, "b": body, **extra}))


def _request_probe(name: str, t: str, body: Any, what: str, expect: str = CLOSE, *,
                   keys: tuple[str, ...] = (), leader_only: bool = False) -> Probe:
    return Probe(name, "request", what, _request(t, body), expect, leader_only=leader_only, keys=keys)


def _battery() -> tuple[Probe, ...]:
    S, A, T, R = SCALAR_KEY, APPEND_SCALAR_KEY, TXN_SCALAR_KEY, RESERVED_KEY
    put_frame = _request("put", {"key": S, "value": CHANGED})
    over = wire.DEFAULT_MAX_FRAME_SIZE + 1
    probes = [
        # ---- the framing itself (one probe per connection: the node closes it)
        Probe("frame-length-zero", "frame", "a length prefix of 0", _LEN.pack(0), CLOSE),
        Probe("frame-over-size-limit", "frame",
              f"a put whose value makes the frame {over} bytes, one over the 16 MiB limit (prefix and "
              "the first 64 KiB sent)",
              _LEN.pack(over) + _payload({"t": "put", "id": _REQUEST_ID, "b": {"key": S, "value": "P" * 65536}}),
              CLOSE, keys=(S,)),
        Probe("frame-not-msgpack", "frame", "8 bytes that are not msgpack (0xc1 is never used)",
              _framed(b"\xc1" * 8), CLOSE),
        Probe("frame-not-a-map", "frame", "a msgpack list instead of a map", _framed(_payload_list()), CLOSE),
        Probe("frame-trailing-bytes", "frame", "a valid put followed by a stray byte inside the length",
              _framed(put_frame[4:] + b"\x00"), CLOSE, keys=(S,)),
        Probe("frame-truncated", "frame", "a valid put cut 3 bytes short, then the connection closed",
              put_frame, CLOSE, cut=len(put_frame) - 3, keys=(S,)),
        Probe("frame-no-id", "frame", "a put without its request id",
              _framed(_payload({"t": "put", "b": {"key": S, "value": CHANGED}})), CLOSE, keys=(S,)),
        Probe("frame-unknown-field", "frame", "a put frame with a field 'x' besides t, id, b",
              _request("put", {"key": S, "value": CHANGED}, x=1), CLOSE, keys=(S,)),
        Probe("frame-bad-utf8", "frame", "a put whose key is invalid UTF-8",
              _framed(_payload({"t": "put", "id": _REQUEST_ID, "b": {"key": "K", "value": CHANGED}})
                      .replace(b"\xa1K", b"\xa1\xff")), CLOSE),
        Probe("frame-ext-type", "frame", "a put whose value is a msgpack ext type",
              _framed(_payload({"t": "put", "id": _REQUEST_ID, "b": {"key": S, "value": msgpack.ExtType(5, b"x")}})),
              CLOSE, keys=(S,)),
        # ---- well-framed requests that break their type's schema
        _request_probe("unknown-request-type", "frobnicate", {"key": S}, "a request of type 'frobnicate'"),
        _request_probe("response-frame-from-client", "ok", {}, "an 'ok' frame, which only nodes send"),
        _request_probe("acquire-ttl-zero", "acquire", {"lock": "probe/lock", "owner": "probe", "ttl_ms": 0},
                       "acquire with ttl_ms 0 (a lease already expired)"),
        _request_probe("acquire-ttl-negative", "acquire", {"lock": "probe/lock", "owner": "probe", "ttl_ms": -1},
                       "acquire with ttl_ms -1"),
        _request_probe("acquire-unknown-field", "acquire",
                       {"lock": "probe/lock", "owner": "probe", "ttl_ms": 1000, "now_ms": 0},
                       "acquire carrying now_ms, which only the leader stamps"),
        _request_probe("release-token-negative", "release", {"lock": "probe/lock", "owner": "probe", "token": -1},
                       "release with token -1"),
        _request_probe("put-key-not-str", "put", {"key": 7, "value": CHANGED}, "put with an int key"),
        _request_probe("put-key-bytes", "put", {"key": S.encode(), "value": CHANGED}, "put with a bytes key",
                       keys=(S,)),
        _request_probe("put-value-map", "put", {"key": S, "value": {"a": 1}}, "put of a map value", keys=(S,)),
        _request_probe("put-value-nil", "put", {"key": S, "value": None}, "put of a nil value", keys=(S,)),
        _request_probe("put-unknown-field", "put", {"key": S, "value": CHANGED, "ttl": 5},
                       "put with an unknown field 'ttl'", keys=(S,)),
        _request_probe("put-missing-value", "put", {"key": S}, "put without a value", keys=(S,)),
        _request_probe("cas-missing-expected", "cas", {"key": S, "new": CHANGED}, "cas without expected",
                       keys=(S,)),
        _request_probe("cas-new-list", "cas", {"key": S, "expected": SCALAR_VALUE, "new": [CHANGED]},
                       "cas whose new value is a list", keys=(S,)),
        _request_probe("delete-unknown-field", "delete", {"key": S, "all": True},
                       "delete with an unknown field 'all'", keys=(S,)),
        _request_probe("fenced-put-token-negative", "fenced_put", {"key": S, "value": CHANGED, "token": -1},
                       "fenced_put with token -1", keys=(S,)),
        _request_probe("fenced-put-token-str", "fenced_put", {"key": S, "value": CHANGED, "token": "9"},
                       "fenced_put with a str token", keys=(S,)),
        _request_probe("fenced-put-token-float", "fenced_put", {"key": S, "value": CHANGED, "token": 1.5},
                       "fenced_put with a float token", keys=(S,)),
        _request_probe("get-unknown-field", "get", {"key": S, "consistent": False}, "get with an unknown field"),
        _request_probe("append-value-list", "append", {"key": f"{PROBE_PREFIX}list", "value": [CHANGED]},
                       "append of a list value", keys=(f"{PROBE_PREFIX}list",)),
        _request_probe("txn-empty", "txn", {"ops": []}, "a txn of no micro-ops"),
        _request_probe("txn-too-many-ops", "txn",
                       {"ops": [["w", f"{PROBE_PREFIX}txn", CHANGED]] * (wire.MAX_TXN_OPS + 1)},
                       f"a txn of {wire.MAX_TXN_OPS + 1} micro-ops (limit {wire.MAX_TXN_OPS})",
                       keys=(f"{PROBE_PREFIX}txn",)),
        _request_probe("txn-unknown-micro-op", "txn", {"ops": [["x", S, CHANGED]]}, "a txn micro-op 'x'",
                       keys=(S,)),
        _request_probe("txn-short-micro-op", "txn", {"ops": [["w", S]]}, "a txn micro-op of 2 items", keys=(S,)),
        _request_probe("txn-read-with-value", "txn", {"ops": [["r", S, CHANGED]]},
                       "a txn read that carries a value"),
        _request_probe("txn-key-not-str", "txn", {"ops": [["w", 3, CHANGED]]}, "a txn write with an int key"),
        # ---- well-formed requests the node must refuse itself (bad_request, a message)
        _request_probe("put-reserved-key", "put", {"key": R, "value": CHANGED},
                       "put of a key under the node's reserved prefix", BAD_REQUEST, keys=(R,)),
        _request_probe("cas-reserved-key", "cas", {"key": R, "expected": None, "new": CHANGED},
                       "cas of a reserved key", BAD_REQUEST, keys=(R,)),
        _request_probe("fenced-put-reserved-key", "fenced_put", {"key": R, "value": CHANGED, "token": 1},
                       "fenced_put of a reserved key", BAD_REQUEST, keys=(R,)),
        _request_probe("delete-reserved-key", "delete", {"key": R}, "delete of a reserved key", BAD_REQUEST,
                       keys=(R,)),
        _request_probe("append-reserved-key", "append", {"key": R, "value": CHANGED},
                       "append to a reserved key", BAD_REQUEST, keys=(R,)),
        _request_probe("txn-reserved-key", "txn", {"ops": [["w", f"{PROBE_PREFIX}txn", CHANGED], ["w", R, CHANGED]]},
                       "a txn that writes a reserved key", BAD_REQUEST, keys=(R, f"{PROBE_PREFIX}txn")),
        # ---- refused by the state machine: only the leader can say (it must see the scalar)
        _request_probe("append-to-scalar", "append", {"key": A, "value": CHANGED},
                       f"append to {A}, which holds a scalar", BAD_REQUEST, keys=(A,), leader_only=True),
        _request_probe("txn-append-to-scalar", "txn",
                       {"ops": [["w", f"{PROBE_PREFIX}atomic", CHANGED], ["append", T, CHANGED]]},
                       f"a txn writing {PROBE_PREFIX}atomic, then appending to the scalar {T}: refused whole",
                       BAD_REQUEST, keys=(T, f"{PROBE_PREFIX}atomic"), leader_only=True),
    ]
    return tuple(probes)


def _payload_list() -> bytes:
    return msgpack.packb(["put", _REQUEST_ID, {"key": SCALAR_KEY, "value": CHANGED}], use_bin_type=True)


#: the battery, in the order it is sent to each node
BATTERY: tuple[Probe, ...] = _battery()
#: each probed key and what it must hold after the battery (None: absent)
EXPECTED_AFTER: dict[str, Any] = {k: (SCALAR_VALUE if k in SCALAR_KEYS else None)
                                  for p in BATTERY for k in p.keys}


# ---------------------------------------------------------------------------- answer scenarios
#: the lease the lock scenario's acquires ask for: far longer than the battery, so no lease
#: runs out inside it (a clock fault's 60 s bump included) and every answer is determined
SCENARIO_TTL_MS = 600_000
OWNER_A, OWNER_B = "probe-a", "probe-b"
#: the admin scenario's ids: one over the Raft core's bound (check_node_id), one well formed
#: that no run names a node, and the (valid) address its add_nodes give: nothing listens there
LONG_NODE_ID_LEN = 300
LONG_NODE_ID = "p" * LONG_NODE_ID_LEN
NO_MEMBER = "probe-no-member"
PROBE_NODE_ADDRESS = "127.0.0.1:1"


@dataclass(frozen=True)
class Step:
    """One well-formed request of a scenario and the one answer the API allows at that point.

    ``body`` and ``expected`` are functions of ``(ns, got)``: the scenario's fresh key prefix
    and the values earlier steps saved (``save``: the ok value is kept under that name, e.g.
    an acquire's token). ``expected`` is ``{"type": "ok", "value": V}`` (exactly V),
    ``{"type": "ok", "token_above": N}`` (an int above N), ``{"type": "ok", "fields": {...}}``
    (a map holding those fields; others, such as a txn's log index, not judged) or
    ``{"type": "error", "code": C}`` (checkers/probes.py, ``answer_matches``).
    ``leader_only``: the answer depends on leading (a node that no longer leads answers
    ``not_leader``, which is then inconclusive); False for a refusal every node gives before
    it looks at its role (an unusable node id), where any other answer is wrong."""

    name: str
    what: str
    t: wire.MsgType
    body: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    expected: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    save: str | None = None
    leader_only: bool = True


def _ok(value: Any = None) -> Callable[[str, Mapping[str, Any]], dict[str, Any]]:
    return lambda ns, got: {"type": "ok", "value": value}


def _error(code: wire.ErrorCode) -> Callable[[str, Mapping[str, Any]], dict[str, Any]]:
    return lambda ns, got: {"type": "error", "code": code.value}


def _release(owner: str, token: Callable[[Mapping[str, Any]], int | None] = lambda got: None) -> Callable[..., dict]:
    def body(ns: str, got: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"lock": f"{ns}lock", "owner": owner}
        t = token(got)
        if t is not None:
            out["token"] = t
        return out
    return body


def _acquire(owner: str) -> Callable[[str, Mapping[str, Any]], dict[str, Any]]:
    return lambda ns, got: {"lock": f"{ns}lock", "owner": owner, "ttl_ms": SCENARIO_TTL_MS}


def _scenarios() -> dict[str, tuple[Step, ...]]:
    G, D, C, F, A, R, X = (wire.MsgType.GET, wire.MsgType.DELETE, wire.MsgType.CAS, wire.MsgType.FENCED_PUT,
                           wire.MsgType.ACQUIRE, wire.MsgType.RELEASE, wire.MsgType.TXN)
    NLH, HELD = wire.ErrorCode.NOT_LOCK_HOLDER, wire.ErrorCode.LOCK_HELD
    CAS_FAILED, REFUSED = wire.ErrorCode.CAS_FAILED, wire.ErrorCode.REFUSED
    key = lambda ns, got: {"key": f"{ns}k"}  # noqa: E731
    fkey = lambda ns, got: {"key": f"{ns}fenced"}  # noqa: E731
    keys = (
        Step("get-never-written", "a get of a key never written: ok, nil", G, key, _ok(None)),
        Step("delete-missing", "a delete of a key never written: ok, false (nothing existed)", D, key, _ok(False)),
        Step("cas-missing", "a cas expecting a value of a missing key: cas_failed", C,
             lambda ns, got: {"key": f"{ns}k", "expected": "probe-x", "new": CHANGED}, _error(CAS_FAILED)),
        Step("get-after-failed-cas", "a get after the failed cas: still nil", G, key, _ok(None)),
        Step("cas-create", "a cas from nil (create if absent): ok", C,
             lambda ns, got: {"key": f"{ns}k", "expected": None, "new": "probe-v1"}, _ok(None)),
        Step("cas-create-again", "a second create-if-absent: cas_failed (it exists now)", C,
             lambda ns, got: {"key": f"{ns}k", "expected": None, "new": CHANGED}, _error(CAS_FAILED)),
        Step("cas-swap", "a cas from the value it holds: ok", C,
             lambda ns, got: {"key": f"{ns}k", "expected": "probe-v1", "new": "probe-v2"}, _ok(None)),
        Step("get-after-cas", "a get: the swapped value", G, key, _ok("probe-v2")),
        Step("delete-present", "a delete of the key: ok, true (it existed)", D, key, _ok(True)),
        Step("get-after-delete", "a get after the delete: nil", G, key, _ok(None)),
        Step("fenced-put-5", "a fenced put with token 5 on a fresh key: ok", F,
             lambda ns, got: {"key": f"{ns}fenced", "value": "probe-f5", "token": 5}, _ok(None)),
        Step("fenced-put-lower", "a fenced put with token 4 after 5: refused", F,
             lambda ns, got: {"key": f"{ns}fenced", "value": CHANGED, "token": 4}, _error(REFUSED)),
        Step("fenced-put-equal", "a fenced put with token 5 again (the same holder writing again): ok", F,
             lambda ns, got: {"key": f"{ns}fenced", "value": "probe-f5b", "token": 5}, _ok(None)),
        Step("get-fenced", "a get of the fenced key: the second token-5 value", G, fkey, _ok("probe-f5b")),
        Step("delete-fenced", "a delete of the fenced key: ok, true", D, fkey, _ok(True)),
        Step("fenced-put-lower-after-delete", "a fenced put with token 3 after the delete: refused (the key's "
             "fence survives a delete)", F, lambda ns, got: {"key": f"{ns}fenced", "value": CHANGED, "token": 3},
             _error(REFUSED)),
        Step("get-fenced-after-delete", "a get of the fenced key: nil", G, fkey, _ok(None)),
        Step("txn-reads-own-write", "a txn reading, writing, reading a fresh key: the second read sees the write", X,
             lambda ns, got: {"ops": [["r", f"{ns}txn", None], ["w", f"{ns}txn", "probe-t1"],
                                      ["r", f"{ns}txn", None]]},
             lambda ns, got: {"type": "ok", "fields": {"ops": [["r", f"{ns}txn", None], ["w", f"{ns}txn", "probe-t1"],
                                                              ["r", f"{ns}txn", "probe-t1"]]}}),
        Step("get-after-txn", "a get of the txn's key: its write", G, lambda ns, got: {"key": f"{ns}txn"},
             _ok("probe-t1")),
    )
    t1 = lambda got: got["t1"]  # noqa: E731
    t2 = lambda got: got["t2"]  # noqa: E731
    lock = (
        Step("release-free", "a release (no token) of a lock nobody holds: not_lock_holder", R, _release(OWNER_A),
             _error(NLH)),
        Step("release-free-token", "a release with token 1 of a lock nobody holds: not_lock_holder", R,
             _release(OWNER_A, lambda got: 1), _error(NLH)),
        Step("acquire-free", "an acquire of the free lock by a: ok, a token", A, _acquire(OWNER_A),
             lambda ns, got: {"type": "ok", "token_above": 0}, save="t1"),
        Step("acquire-held", "an acquire by b while a holds it: lock_held", A, _acquire(OWNER_B), _error(HELD)),
        Step("release-by-other", "a release (no token) by b, who does not hold it: not_lock_holder", R,
             _release(OWNER_B), _error(NLH)),
        Step("release-by-other-token", "a release by b with a's token: not_lock_holder", R, _release(OWNER_B, t1),
             _error(NLH)),
        Step("release-wrong-token", "a release by a with another token than its own: not_lock_holder", R,
             _release(OWNER_A, lambda got: got["t1"] + 1), _error(NLH)),
        Step("acquire-renew", "a re-acquire by the holder a: ok, a newer token", A, _acquire(OWNER_A),
             lambda ns, got: {"type": "ok", "token_above": got["t1"]}, save="t2"),
        Step("release-old-token", "a release by a with its token from before the renewal: not_lock_holder", R,
             _release(OWNER_A, t1), _error(NLH)),
        Step("release-holder-token", "a release by the holder a with its token: ok", R, _release(OWNER_A, t2),
             _ok(None)),
        Step("release-again", "the same release again: not_lock_holder (released already)", R,
             _release(OWNER_A, t2), _error(NLH)),
        Step("acquire-after-release", "an acquire by b of the released lock: ok, a newer token", A, _acquire(OWNER_B),
             lambda ns, got: {"type": "ok", "token_above": got["t2"]}, save="t3"),
        Step("release-holder-no-token", "a release (no token) by the holder b: ok", R, _release(OWNER_B), _ok(None)),
        Step("release-no-token-again", "the same release again: not_lock_holder", R, _release(OWNER_B), _error(NLH)),
    )
    # Admin requests naming a node id no node can have: refused before anything is written
    # (ukehi/node/admin.py, node_id_refusal), whoever leads; and ids that are well formed but
    # name no member, which only the leader judges. None of them changes the configuration.
    AN, RN, TL, BAD = (wire.MsgType.ADD_NODE, wire.MsgType.REMOVE_NODE, wire.MsgType.TRANSFER_LEADER,
                       wire.ErrorCode.BAD_REQUEST)
    node = lambda name: lambda ns, got: {"node": name}  # noqa: E731
    add = lambda name: lambda ns, got: {"node": name, "address": PROBE_NODE_ADDRESS}  # noqa: E731
    admin = (
        Step("add-node-long-id", f"an add_node of a {LONG_NODE_ID_LEN}-character id (at most "
             f"{MAX_NODE_ID_LEN}): bad_request", AN, add(LONG_NODE_ID), _error(BAD), leader_only=False),
        Step("get-address-of-long-id", "a get of the address key the refused add_node would have written: nil", G,
             lambda ns, got: {"key": ADDRESS_KEY_PREFIX + LONG_NODE_ID}, _ok(None)),
        Step("add-node-empty-id", "an add_node of an empty id: bad_request", AN, add(""), _error(BAD),
             leader_only=False),
        Step("add-node-tab-id", "an add_node of an id holding a tab (no node can start so named): bad_request", AN,
             add("probe\tnode"), _error(BAD), leader_only=False),
        Step("remove-node-long-id", f"a remove_node of a {LONG_NODE_ID_LEN}-character id: bad_request", RN,
             node(LONG_NODE_ID), _error(BAD), leader_only=False),
        Step("remove-node-not-member", "a remove_node of a well-formed id that is no member: bad_request", RN,
             node(NO_MEMBER), _error(BAD)),
        Step("transfer-leader-long-id", f"a transfer_leader to a {LONG_NODE_ID_LEN}-character id: bad_request", TL,
             node(LONG_NODE_ID), _error(BAD), leader_only=False),
        Step("transfer-leader-not-member", "a transfer_leader to a well-formed id that is no member: bad_request",
             TL, node(NO_MEMBER), _error(BAD)),
    )
    return {"keys": keys, "lock": lock, "admin": admin}


#: well-formed requests whose answers the API fully determines, sent in order to the leader
#: in a key prefix of their own (``probe/fresh/<term>-<commit index>/``, new for each
#: battery on a cluster); a scenario stops at its first answer that is not the expected one
SCENARIOS: dict[str, tuple[Step, ...]] = _scenarios()
SCENARIO_STEPS = sum(len(steps) for steps in SCENARIOS.values())


async def run_scenarios(transport: "Transport", leader: str, status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """:data:`SCENARIOS` at ``leader``, one request per fresh connection, each step's record
    with its expected answer. A scenario stops at the first answer that is not the expected
    one (what follows would be judged against a state nobody knows), a wrong one included."""
    status = status or {}
    ns = f"{PROBE_PREFIX}fresh/{status.get('term', 0)}-{status.get('commit_index', 0)}/"
    records: list[dict[str, Any]] = []
    for scenario, steps in SCENARIOS.items():
        got: dict[str, Any] = {}
        for i, step in enumerate(steps, 1):
            body = step.body(ns, got)
            expected = step.expected(ns, got)
            t0 = time.monotonic()
            reply = await _valid(transport, leader, step.t, body)
            records.append({"kind": "probe", "probe": f"{scenario}/{step.name}", "level": "answer", "node": leader,
                            "what": f"{step.what} ({step.t.value} {json.dumps(jsonable(body), sort_keys=True)})",
                            "expect": ANSWER, "expected": expected, "leader_only": step.leader_only,
                            "scenario": scenario,
                            "step": i, "answer": reply, "ms": round(1000 * (time.monotonic() - t0), 1)})
            if not answer_matches(expected, reply):
                break
            if step.save is not None:
                got[step.save] = reply.get("value")
    return records


# ---------------------------------------------------------------------------- transports
def answer(outcome: str, frame: wire.Frame | None = None, **extra: Any) -> dict[str, Any]:
    """An answer record: ``answered`` (``type``, ``code``, ``message``, ``value``), ``closed``
    (the node hung up without answering), ``no-answer`` (neither within the timeout),
    ``connect-failed`` (nothing was sent)."""
    out: dict[str, Any] = {"outcome": outcome}
    if frame is not None:
        out["type"] = frame.type.value
        if frame.type is wire.MsgType.ERROR:
            out["code"] = frame.body.get("code")
            out["message"] = frame.body.get("message")
        else:
            out["value"] = jsonable(frame.body.get("value"))
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it (bytes as text, tuples as lists), for the records."""
    if isinstance(value, bytes):
        return {"bytes": value.decode("utf-8", "backslashreplace")}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class Transport(Protocol):
    """How the battery reaches a node."""

    #: whether the node's ``status.bad_frames`` counts this transport's closes (a real server)
    counts_bad_frames: bool

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None,
                       timeout: float = PROBE_TIMEOUT_S, admin: bool = False) -> dict[str, Any]:
        """Send ``data`` (only ``cut`` bytes of it, then hang up) on a fresh connection to
        ``node`` (``admin``: presenting the admin certificate, for an admin request); the
        answer to request id ``_REQUEST_ID`` (see :func:`answer`)."""
        ...

    def is_running(self, node: str) -> bool:
        """The node's process runs and is not paused."""
        ...

    def close_reasons(self, probed: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Add ``reason`` (why the node said it closed) to closed answers where it can."""
        ...


async def _valid(transport: Transport, node: str, t: wire.MsgType, body: Mapping[str, Any]) -> dict[str, Any]:
    data = wire.encode_frame(t, _REQUEST_ID, body)
    if t in wire.ADMIN_REQUESTS:  # over the admin certificate, as `ukehi admin` sends them
        return await transport.exchange(node, data, admin=True)
    return await transport.exchange(node, data)


async def _status(transport: Transport, node: str) -> dict[str, Any] | None:
    got = await _valid(transport, node, wire.MsgType.STATUS, {})
    value = got.get("value")
    return value if got.get("type") == "ok" and isinstance(value, dict) else None


async def _leader(transport: Transport, nodes: Sequence[str]) -> str | None:
    """The leader of the newest term among the nodes' own statuses."""
    statuses = await asyncio.gather(*(_status(transport, n) for n in nodes))
    leaders = [(s.get("term", 0), n) for n, s in zip(nodes, statuses) if s and s.get("role") == "leader"]
    return max(leaders)[1] if leaders else None


async def _read(transport: Transport, node: str | None, key: str) -> dict[str, Any]:
    if node is None:
        return {"outcome": "connect-failed", "message": "no leader to read at"}
    return await _valid(transport, node, wire.MsgType.GET, {"key": key})


async def run_battery(transport: Transport, nodes: Sequence[str], write: Callable[[dict[str, Any]], None],
                      *, info: Mapping[str, Any] | None = None) -> None:
    """Send :data:`BATTERY` to every running node of ``nodes`` and write one record per
    step through ``write`` (module doc). Never judges: ``checkers/probes.py`` does, from the
    records alone, so ``analyze`` re-judges a stored run."""
    started = time.monotonic()
    running = [n for n in nodes if transport.is_running(n)]
    statuses = dict(zip(running, await asyncio.gather(*(_status(transport, n) for n in running))))
    leader = await _leader(transport, running)
    write({"kind": "start", "battery": BATTERY_VERSION, "probes": len(BATTERY), "nodes": list(running),
           "not_running": [n for n in nodes if n not in running], "leader": leader,
           "counts_bad_frames": transport.counts_bad_frames, **dict(info or {}),
           "bad_frames_before": {n: (s or {}).get("bad_frames") for n, s in statuses.items()}})
    # What each probed key must hold afterwards: nobody else writes probe/ keys (nor the
    # reserved one, named for no node), so absent, or the scalar written here; a scalar whose
    # write did not succeed holds an unknown value and is not checked.
    expected: dict[str, Any] = {}
    for key in EXPECTED_AFTER:
        before = await _read(transport, leader, key)
        setup = None
        if key in SCALAR_KEYS and leader is not None:
            setup = await _valid(transport, leader, wire.MsgType.PUT, {"key": key, "value": SCALAR_VALUE})
        if key not in SCALAR_KEYS:
            expected[key] = None
        elif setup is not None and setup.get("type") == "ok":
            expected[key] = SCALAR_VALUE
        write({"kind": "setup", "node": leader, "key": key, "before": before,
               "put": SCALAR_VALUE if key in SCALAR_KEYS else None, "answer": setup})

    async def one_node(node: str) -> list[dict[str, Any]]:
        records = []
        for probe in BATTERY:
            # A stateful probe needs its scalar in place: an append to a key whose write
            # failed (absent) would rightly succeed.
            if probe.leader_only and (node != leader or any(k in SCALAR_KEYS and k not in expected
                                                            for k in probe.keys)):
                continue
            t0 = time.monotonic()
            got = await transport.exchange(node, probe.data, cut=probe.cut)
            records.append({"kind": "probe", "probe": probe.name, "level": probe.level, "node": node,
                            "what": probe.what, "expect": probe.expect, "leader_only": probe.leader_only,
                            "answer": got, "ms": round(1000 * (time.monotonic() - t0), 1)})
            if got["outcome"] == "no-answer":
                # One hung probe convicts the node; waiting out each of the others would only
                # make the battery outlast its bound (and the verdict unknown).
                break
        return records

    # Nodes in parallel, each node's probes one after another.
    per_node = dict(zip(running, await asyncio.gather(*(one_node(n) for n in running))))
    transport.close_reasons(per_node)
    for records in per_node.values():
        for record in records:
            write(record)
    # Then the answer scenarios at the leader of now (the malformed probes may have moved it).
    lead = await _leader(transport, running)
    if lead is not None:
        for record in await run_scenarios(transport, lead, await _status(transport, lead)):
            write(record)
    for node in running:
        status = await _status(transport, node)
        for _ in range(2):  # a loaded machine: one slow status is not a hung node
            if status is not None:
                break
            await asyncio.sleep(1.0)
            status = await _status(transport, node)
        write({"kind": "alive", "node": node, "running": transport.is_running(node), "status": status is not None,
               "bad_frames_after": (status or {}).get("bad_frames")})
    reader = await _leader(transport, running) or leader
    for key, value in expected.items():
        got = await _read(transport, reader, key)
        write({"kind": "data", "key": key, "expected": jsonable(value), "node": reader, "read": got})
    write({"kind": "end", "seconds": round(time.monotonic() - started, 3)})


# ---------------------------------------------------------------------------- real nodes
@dataclass
class NodeTransport:
    """Real nodes over TCP, with the TLS the run's clients use (``ukehi.tls.client_tls_for``:
    the client certificate the harness registered for each address; plain TCP if --insecure)."""

    addresses: Mapping[str, str]  # node -> "HOST:PORT"
    running: Callable[[str], bool]
    log_text: Callable[[str], str] | None = None
    counts_bad_frames: bool = True

    def is_running(self, node: str) -> bool:
        return self.running(node)

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None,
                       timeout: float = PROBE_TIMEOUT_S, admin: bool = False) -> dict[str, Any]:
        from ukehi.client import parse_cluster
        from ukehi.tls import client_tls_for

        address = self.addresses[node]
        host, port = parse_cluster([address])[0]
        tls = client_tls_for(address)
        ctx: ssl.SSLContext | None = tls.context(admin) if tls is not None else None
        extra: dict[str, Any] = {"ssl": ctx, "ssl_handshake_timeout": timeout} if ctx is not None else {}
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, **extra)
        except (OSError, TimeoutError, ssl.SSLError) as err:
            return answer("connect-failed", message=f"{type(err).__name__}: {err}")
        sockname = writer.get_extra_info("sockname")
        local = int(sockname[1]) if isinstance(sockname, tuple) else None
        try:
            return await self._talk(reader, writer, data, cut, timeout, local)
        finally:
            writer.close()
            try:
                async with asyncio.timeout(0.5):
                    await writer.wait_closed()
            except Exception:  # noqa: BLE001 - a TLS close that never completes: drop the socket
                writer.transport.abort()

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    cut: int | None, timeout: float, local: int | None) -> dict[str, Any]:
        try:
            writer.write(data if cut is None else data[:cut])
            await writer.drain()
        except (OSError, ssl.SSLError) as err:
            return answer("closed", port=local, detail=f"while sending: {type(err).__name__}: {err}")
        if cut is not None:
            return answer("closed", port=local, detail="the probe hung up mid-frame")
        decoder = wire.FrameDecoder()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    chunk = await reader.read(65536)
            except TimeoutError:
                return answer("no-answer", port=local,
                              detail=f"neither answered nor closed within {timeout:g} s")
            except (OSError, ssl.SSLError) as err:
                return answer("closed", port=local, detail=f"{type(err).__name__}: {err}")
            if not chunk:
                return answer("closed", port=local)
            try:
                frames = decoder.feed(chunk)
            except wire.ProtocolError as err:
                return answer("bad-answer", port=local, detail=str(err))
            for frame in frames:
                if frame.id == _REQUEST_ID:
                    return answer("answered", frame, port=local)

    def close_reasons(self, probed: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """The node's own words: its ``bad-frame`` log line for each closed probe's connection
        (matched by the probe's local port), as ``reason``."""
        from ukehi.nodelog import parse_line

        if self.log_text is None:
            return
        for node, records in probed.items():
            closed = {r["answer"].get("port"): r for r in records if r["answer"].get("outcome") == "closed"}
            if not closed:
                continue
            for line in self.log_text(node).splitlines():
                if "event=bad-frame" not in line:
                    continue
                fields = parse_line(line)
                port = fields.get("remote", "").rpartition(":")[2]
                record = closed.get(int(port)) if port.isdigit() else None
                if record is not None:
                    record["answer"]["reason"] = fields.get("reason")


async def run_probes(run_path: Any, db: Any, spec: Any) -> None:
    """The battery against a real run's nodes, into ``<run>/probes.jsonl`` (harness/run.py,
    after the final phase). Never raises for a failure of its own: that is an ``error``
    record, which the checker reports as unknown."""
    from .db import endpoint
    from .sharding import is_sharded

    if is_sharded(spec.node_options):
        # A sharded node answers keyed requests per shard group (ukehi/node/groups.py): the
        # battery's group-0 requests would get wrong_shard, which says nothing. No file, so
        # the run has no bad-input verdict (harness/analysis.py).
        log.info("bad-input probe: not run on a sharded cluster")
        return
    path = run_path / PROBES_FILE
    with open(path, "w", encoding="utf-8") as out:
        def write(record: dict[str, Any]) -> None:
            out.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            out.flush()

        transport = NodeTransport(
            {n: endpoint(h) for n, h in db.nodes.items()},
            running=lambda n: db.nodes[n].is_running() and db.nodes[n].process_state() not in ("T", "t"),
            log_text=db.log_text)
        started = time.monotonic()
        sent = 0

        def counted(record: dict[str, Any]) -> None:
            nonlocal sent
            sent += record["kind"] == "probe"
            write(record)

        try:
            async with asyncio.timeout(BATTERY_TIMEOUT_S):
                await run_battery(transport, list(db.nodes), counted,
                                  info={"log_level": spec.node_options.get("log_level", "info")})
        except Exception as err:  # noqa: BLE001 - the probe's own failure is an unknown verdict
            log.warning("bad-input probe failed: %s: %s", type(err).__name__, err)
            write({"kind": "error", "error": f"{type(err).__name__}: {err}"})
        log.info("bad-input probe: %d probes (a battery of %d per node) in %.1f s, in %s", sent, len(BATTERY),
                 time.monotonic() - started, path.name)


# ---------------------------------------------------------------------------- the simulator
class SimTransport:
    """Simulated nodes (``ukehi.sim.world.SimWorld``): the probe's bytes go through
    ``wire.decode_frame`` as the node's server decodes a frame (a ProtocolError, or a frame
    that is not a request, closes the connection there), then to the node's request handler
    the way the server hands them over (``start_request``, else ``handle_request``). No
    network in between: no loss or delay, so an unanswered probe is the node's doing, and no
    draw from the seed's random streams."""

    counts_bad_frames = False

    def __init__(self, world: Any) -> None:
        self.world = world

    def is_running(self, node: str) -> bool:
        h = self.world.nodes[node]
        return bool(h.up and not h.paused and h.current is not None and h.current.node is not None)

    def close_reasons(self, probed: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        return None  # the reason is the decoder's error, recorded as the probe is closed

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None,
                       timeout: float = PROBE_TIMEOUT_S, admin: bool = False) -> dict[str, Any]:
        # No certificates in the simulator: ``admin`` changes nothing.
        if not self.is_running(node):
            return answer("connect-failed", message=f"{node} is not running")
        target = self.world.nodes[node].current.node
        try:
            frame = wire.decode_frame(data if cut is None else data[:cut])
        except wire.ProtocolError as err:
            return answer("closed", reason=str(err))
        if frame.type not in wire.CLIENT_REQUESTS:
            return answer("closed", reason=f"unexpected {frame.type.value} frame: the node only answers requests")
        loop = self.world.loop
        fut: asyncio.Future[Any] = loop.create_future()

        def done(msg_type: wire.MsgType, body: dict[str, Any]) -> None:
            if not fut.done():
                fut.set_result((msg_type, body))

        try:
            taken = target.start_request(frame, done)
        except Exception as err:  # noqa: BLE001 - the server answers internal then (ukehi/server.py)
            done(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.INTERNAL, f"internal error on the node: {err!r}"))
            taken = True
        if not taken:
            async def handle() -> None:
                try:
                    done(*await target.handle_request(frame))
                except Exception as err:  # noqa: BLE001 - as the server's _answer
                    done(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.INTERNAL,
                                                             f"internal error on the node: {err!r}"))
            loop.create_task(handle())
        timer = loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        try:
            reply = await fut
        finally:
            timer.cancel()
        if reply is None:
            return answer("no-answer", detail=f"no answer within {timeout:g} virtual s")
        msg_type, body = reply
        # The answer as the client decodes it off the wire.
        got = wire.decode_frame(wire.encode_frame(msg_type, _REQUEST_ID, body, validate=False))
        return answer("answered", got)


async def run_sim_battery(world: Any) -> list[dict[str, Any]]:
    """The battery at the end of a simulator seed (harness/sim/runner.py), before the nodes
    stop; the records, for :func:`checkers.probes.check_probes`."""
    records: list[dict[str, Any]] = []
    await run_battery(SimTransport(world), list(world.names), records.append)
    return records
