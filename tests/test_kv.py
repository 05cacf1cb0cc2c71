"""KV state machine: operations, fencing (entry and key level), locks, codec, snapshots."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ukehi.fencing import FencingToken
from ukehi.kv import (
    CommandError,
    KVStateMachine,
    SnapshotFormatError,
    decode_command,
    encode_command,
    to_response,
)
from ukehi.statemachine import StateMachine
from ukehi.storage.format import WalEntry
from ukehi.wire import MsgType, decode_frame, encode_frame

T = FencingToken.new


class Driver:
    """Feeds commands as consecutive log entries, stamping tokens like a leader of `term`."""

    def __init__(self, sm: KVStateMachine | None = None, term: int = 1) -> None:
        self.sm = sm or KVStateMachine()
        self.index = self.sm.last_applied
        self.term = term
        self.seq = 0

    def new_term(self, term: int) -> None:
        self.term, self.seq = term, 0

    def run(self, **op: Any) -> dict[str, Any]:
        self.index += 1
        self.seq += 1
        return self.sm.apply(self.index, T(self.term, self.seq), encode_command(op))


def test_is_a_state_machine() -> None:
    assert isinstance(KVStateMachine(), StateMachine)


def test_put_get_delete_cas() -> None:
    d = Driver()
    assert d.run(op="get", key="a") == {"ok": True, "value": None}
    assert d.run(op="put", key="a", value=b"1")["ok"]
    assert d.run(op="get", key="a")["value"] == b"1"
    assert d.sm.read("a") == b"1"
    r = d.run(op="cas", key="a", expected=b"2", new=b"3")
    assert r["ok"] is False and r["error"] == "cas_failed"
    assert d.sm.read("a") == b"1"
    assert d.run(op="cas", key="a", expected=b"1", new=b"3")["ok"]
    assert d.sm.read("a") == b"3"
    assert d.run(op="delete", key="a") == {"ok": True, "value": True}
    assert d.run(op="delete", key="a") == {"ok": True, "value": False}
    assert d.sm.read("a") is None
    assert d.sm.last_applied == 7 and d.sm.last_token == T(1, 7)


def test_cas_absent_and_type_strict() -> None:
    d = Driver()
    assert d.run(op="cas", key="k", expected=None, new=1)["ok"]  # nil = must be absent
    assert d.run(op="cas", key="k", expected=None, new=2)["error"] == "cas_failed"
    assert d.run(op="cas", key="k", expected=True, new=3)["error"] == "cas_failed"  # 1 != True
    assert d.run(op="cas", key="k", expected=1.0, new=3)["error"] == "cas_failed"
    assert d.run(op="cas", key="k", expected=1, new=3)["ok"]
    assert d.sm.read("k") == 3


def test_read_does_not_mutate() -> None:
    d = Driver()
    d.run(op="put", key="a", value="x")
    before = d.sm.snapshot()
    assert d.sm.read("a") == "x" and d.sm.read("zz") is None
    assert d.sm.snapshot() == before
    with pytest.raises(TypeError):
        d.sm.read(b"a")  # type: ignore[arg-type]


def test_entry_with_stale_token_is_refused_and_not_applied() -> None:
    sm = KVStateMachine()
    assert sm.apply(1, T(2, 1), encode_command({"op": "put", "key": "k", "value": "new"}))["ok"]
    # A deposed term-1 leader's entry, and a replayed equal token: both refused.
    for i, tok in ((2, T(1, 50)), (3, T(2, 1))):
        r = sm.apply(i, tok, encode_command({"op": "put", "key": "k", "value": "old"}))
        assert r["ok"] is False and r["error"] == "stale_entry"
        assert sm.read("k") == "new"
        assert sm.last_applied == i  # the index is consumed so replicas stay in step
        assert sm.last_token == T(2, 1)
    assert sm.apply(4, T(2, 2), encode_command({"op": "put", "key": "k", "value": "v"}))["ok"]


def test_noop_and_legacy_v1_tokens() -> None:
    sm = KVStateMachine()
    put = encode_command({"op": "put", "key": "k", "value": 1})
    # WAL v1 entries read back with token 0: accepted while no real token has been seen.
    assert sm.apply(1, 0, put)["ok"] and sm.apply(2, 0, put)["ok"]
    assert sm.apply(3, T(3, 0), b"")["ok"]  # no-op of a new leader
    assert sm.last_token == T(3, 0)
    assert sm.apply(4, T(3, 1), put)["ok"]
    assert sm.apply(5, 0, put)["error"] == "stale_entry"
    assert sm.apply(6, T(2, 0), b"")["ok"]  # a no-op is never refused ...
    assert sm.last_token == T(3, 1)  # ... and never lowers the mark


def test_index_must_increase() -> None:
    sm = KVStateMachine()
    sm.apply(5, T(1, 1), b"")
    with pytest.raises(ValueError, match="not above last applied index 5"):
        sm.apply(5, T(1, 2), b"")
    with pytest.raises(ValueError):
        sm.apply(3, T(1, 2), b"")
    assert sm.apply(9, T(1, 2), b"")["ok"]  # a gap (AlertAndContinue hole) is allowed


def test_bad_command_bytes_in_log_give_error_result() -> None:
    sm = KVStateMachine()
    r = sm.apply(1, T(1, 1), b"\xc1garbage")
    assert r["ok"] is False and r["error"] == "bad_request" and "msgpack" in r["message"]
    assert sm.last_applied == 1 and len(sm) == 0


def test_fenced_put_refuses_lower_accepts_equal_and_higher() -> None:
    d = Driver()
    assert d.run(op="fenced_put", key="f", value="a", token=T(2, 5))["ok"]
    assert d.run(op="fenced_put", key="f", value="b", token=T(2, 5))["ok"]  # same holder
    r = d.run(op="fenced_put", key="f", value="stale", token=T(2, 4))
    assert r["ok"] is False and r["error"] == "refused" and "re-acquire" in r["message"]
    assert d.sm.read("f") == "b"
    assert d.run(op="fenced_put", key="f", value="c", token=T(3, 1))["ok"]
    assert d.run(op="fenced_put", key="f", value="x", token=T(2, 9))["error"] == "refused"
    assert d.sm.fence_of("f") == T(3, 1)
    # marks are per key
    assert d.run(op="fenced_put", key="g", value="y", token=T(1, 1))["ok"]
    # a delete does not reset the mark
    d.run(op="delete", key="f")
    assert d.run(op="fenced_put", key="f", value="x", token=T(2, 9))["error"] == "refused"
    assert d.sm.read("f") is None


def test_lock_acquire_returns_entry_token_and_fences() -> None:
    d = Driver(term=4)
    r1 = d.run(op="acquire", lock="L", owner="c1", ttl_ms=1000, now_ms=10_000)
    assert r1 == {"ok": True, "value": T(4, 1)}
    assert d.run(op="acquire", lock="L", owner="c2", ttl_ms=1000, now_ms=10_500)["error"] == (
        "lock_held"
    )
    # lease expired: c2 gets it with a strictly greater token, even from a new leader
    d.new_term(5)
    r2 = d.run(op="acquire", lock="L", owner="c2", ttl_ms=1000, now_ms=11_000)
    assert r2["ok"] and r2["value"] > r1["value"] and r2["value"] == T(5, 1)
    assert d.sm.lock_info("L") == ("c2", T(5, 1), 12_000)
    # the holders write with their tokens: the deposed c1 is refused
    assert d.run(op="fenced_put", key="k", value="c2", token=r2["value"])["ok"]
    assert d.run(op="fenced_put", key="k", value="c1", token=r1["value"])["error"] == "refused"


def test_lock_renew_and_release() -> None:
    d = Driver()
    t1 = d.run(op="acquire", lock="L", owner="c1", ttl_ms=100, now_ms=0)["value"]
    t2 = d.run(op="acquire", lock="L", owner="c1", ttl_ms=100, now_ms=50)["value"]
    assert t2 > t1 and d.sm.lock_info("L").expires_at_ms == 150  # type: ignore[union-attr]
    assert d.run(op="release", lock="L", owner="c2", now_ms=60)["error"] == "not_lock_holder"
    assert d.run(op="release", lock="L", owner="c1", token=t1, now_ms=60)["error"] == (
        "not_lock_holder"
    )
    assert d.run(op="release", lock="L", owner="c1", token=t2, now_ms=60)["ok"]
    assert d.sm.lock_info("L") is None
    assert d.run(op="acquire", lock="L", owner="c2", ttl_ms=100, now_ms=61)["ok"]


def test_lock_time_never_runs_backwards() -> None:
    d = Driver()
    d.run(op="acquire", lock="L", owner="c1", ttl_ms=100, now_ms=1_000)
    d.run(op="acquire", lock="M", owner="c9", ttl_ms=10, now_ms=5_000)  # clock now 5000
    # a new leader with a clock far behind cannot make c1's expired lease live again
    d.new_term(2)
    assert d.run(op="acquire", lock="L", owner="c2", ttl_ms=100, now_ms=1_050)["ok"]
    assert d.sm.lock_info("L").expires_at_ms == 5_100  # type: ignore[union-attr]
    assert d.sm.clock_ms == 5_000


def test_apply_is_deterministic_without_clock_reads() -> None:
    ops = [
        {"op": "acquire", "lock": "L", "owner": "a", "ttl_ms": 5, "now_ms": 1},
        {"op": "acquire", "lock": "L", "owner": "b", "ttl_ms": 5, "now_ms": 3},
        {"op": "acquire", "lock": "L", "owner": "b", "ttl_ms": 5, "now_ms": 9},
        {"op": "put", "key": "x", "value": 1.5},
    ]
    entries = [(i + 1, T(1, i + 1), encode_command(op)) for i, op in enumerate(ops)]
    a, b = KVStateMachine(), KVStateMachine()
    ra = a.apply_batch(entries)
    rb = b.apply_batch(entries)
    assert ra == rb and a.snapshot() == b.snapshot()
    assert [r["ok"] for r in ra] == [True, False, True, True]


def test_apply_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def no_clock(*_: object) -> float:
        raise AssertionError("the state machine read a clock during apply")

    entries = [
        (1, T(1, 1), encode_command({"op": "acquire", "lock": "L", "owner": "a", "ttl_ms": 5,
                                     "now_ms": 1})),
        (2, T(1, 2), encode_command({"op": "acquire", "lock": "L", "owner": "b", "ttl_ms": 5,
                                     "now_ms": 9})),
        (3, T(1, 3), encode_command({"op": "release", "lock": "L", "owner": "b", "now_ms": 9})),
    ]
    for name in ("time", "monotonic", "time_ns", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    sm = KVStateMachine()
    assert [r["ok"] for r in sm.apply_batch(entries)] == [True, True, True]
    assert sm.lock_info("L") is None


def test_apply_rejects_non_bytes_command() -> None:
    with pytest.raises(TypeError, match="command must be bytes"):
        KVStateMachine().apply(1, T(1, 1), None)  # type: ignore[arg-type]


def test_apply_batch_accepts_wal_entries_and_tuples() -> None:
    cmd = encode_command({"op": "put", "key": "k", "value": "v"})
    sm = KVStateMachine()
    res = sm.apply_batch([WalEntry(1, 1, cmd, T(1, 1)), (2, T(1, 2), b"")])
    assert res == [{"ok": True, "value": None}] * 2 and sm.last_applied == 2
    with pytest.raises(TypeError, match="index, fencing_token, command"):
        sm.apply_batch([[3, T(1, 3), b""]])  # type: ignore[list-item]


def test_apply_batch_accepts_raft_entries_and_skips_non_normal_kinds() -> None:
    from ukehi.raft.types import Entry, EntryKind

    put = encode_command({"op": "put", "key": "k", "value": "v"})
    sm = KVStateMachine()
    res = sm.apply_batch([
        Entry(2, 1, EntryKind.NOOP, b"", T(2, 0)),
        # a config entry's data is not a KV command: it must consume the index, not fail
        Entry(2, 2, EntryKind.CONFIG, b"\x01membership", T(2, 1)),
        Entry(2, 3, EntryKind.NORMAL, put, T(2, 2)),
    ])
    assert [r["ok"] for r in res] == [True, True, True]
    assert sm.read("k") == "v" and sm.last_applied == 3 and sm.last_token == T(2, 2)


# ------------------------------------------------------------------ codec
@pytest.mark.parametrize(
    "op,match",
    [
        ({"key": "a"}, "unknown command op None"),
        ({"op": "explode"}, "unknown command op 'explode'"),
        ({"op": "put", "key": "a"}, "missing required field 'value'"),
        ({"op": "put", "key": 1, "value": 1}, "'key' must be str"),
        ({"op": "put", "key": "a", "value": None}, "'value' must be value"),
        ({"op": "put", "key": "a", "value": 1, "ttl": 3}, "unknown field 'ttl'"),
        ({"op": "fenced_put", "key": "a", "value": 1, "token": -5}, "'token' must be u64"),
        ({"op": "acquire", "lock": "L", "owner": "o", "ttl_ms": 5}, "missing required field 'now_ms'"),
        ({"op": "acquire", "lock": "L", "owner": "o", "ttl_ms": 0, "now_ms": 1}, "ttl_ms must be > 0"),
        ({"op": "release", "lock": "L", "owner": "o", "now_ms": 1, "token": "t"}, "'token'"),
    ],
)
def test_encode_command_rejects_bad_shapes(op: dict[str, Any], match: str) -> None:
    with pytest.raises(CommandError, match=match):
        encode_command(op)
    with pytest.raises(CommandError, match=match):
        decode_command(msgpack.packb(op))


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "no-op"),
        (b"\xc1", "not valid msgpack"),
        (b"\x93\x01\x02\x03", "must be a map"),
        (b"\xdd\xff\xff\xff\xff", "not valid msgpack"),  # array claiming 4G items
        (b"\x91" * 100_000, "not valid msgpack"),
        (b"\x81\x01\x02", "not valid msgpack"),  # int map key
        (msgpack.packb({"op": "put", "key": "k", "value": [{}] * 3}), "flat map"),
        (b"\xdd\x00\x10\x00\x00" + b"\x80" * (1 << 20), "flat map|not valid msgpack"),
    ],
)
def test_decode_command_rejects_bad_bytes(data: bytes, match: str) -> None:
    with pytest.raises(CommandError, match=match):
        decode_command(data)
    with pytest.raises(CommandError):
        decode_command("text")  # type: ignore[arg-type]


def test_container_values_are_refused_both_ways() -> None:
    with pytest.raises(CommandError, match="'value' must be value"):
        encode_command({"op": "put", "key": "a", "value": [1]})
    with pytest.raises(CommandError, match="flat map"):
        decode_command(msgpack.packb({"op": "put", "key": "a", "value": [1]}))


def test_command_round_trip_and_token_as_int() -> None:
    op = {"op": "fenced_put", "key": "k", "value": b"\x00", "token": T(7, 3)}
    back = decode_command(encode_command(op))
    assert back == op and back["token"] == int(T(7, 3))
    # a token is an int, so it can be stored as a value; it comes back as a plain int
    stored = decode_command(encode_command({"op": "put", "key": "t", "value": T(7, 3)}))
    assert type(stored["value"]) is int and stored["value"] == int(T(7, 3))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_command_only_command_error(data: bytes) -> None:
    try:
        cmd = decode_command(data)
    except CommandError:
        return
    # Re-encoding is stable (compared as bytes, since a NaN value != itself).
    again = encode_command(cmd)
    assert encode_command(decode_command(again)) == again


def test_to_response_produces_valid_wire_frames() -> None:
    mt, body = to_response({"ok": True, "value": T(1, 2)})
    assert decode_frame(encode_frame(mt, 1, body)).body == {"value": T(1, 2)}
    d = Driver()
    d.run(op="fenced_put", key="k", value=1, token=5)
    mt, body = to_response(d.run(op="fenced_put", key="k", value=1, token=4))
    frame = decode_frame(encode_frame(mt, 2, body))
    assert frame.type is MsgType.ERROR and frame.body["code"] == "refused"


# ------------------------------------------------------------------ snapshots
def _busy_state() -> KVStateMachine:
    d = Driver(term=3)
    d.run(op="put", key="b", value=b"\xff")
    d.run(op="put", key="a", value=2.5)
    d.run(op="fenced_put", key="f", value=True, token=T(3, 1))
    d.run(op="acquire", lock="L", owner="c1", ttl_ms=10, now_ms=77)
    return d.sm


def test_snapshot_round_trip_and_continue() -> None:
    sm = _busy_state()
    snap = sm.snapshot()
    other = KVStateMachine()
    other.restore(snap)
    assert other.snapshot() == snap
    assert other.items() == [("a", 2.5), ("b", b"\xff"), ("f", True)]
    assert other.last_applied == sm.last_applied and other.last_token == sm.last_token
    assert other.lock_info("L") == sm.lock_info("L") and other.clock_ms == 77
    assert other.fence_of("f") == T(3, 1)
    # the restored machine behaves the same: stale tokens, fences and locks carried over
    cmd = encode_command({"op": "fenced_put", "key": "f", "value": 0, "token": T(2, 0)})
    assert other.apply(sm.last_applied + 1, T(3, 99), cmd)["error"] == "refused"
    assert other.apply(sm.last_applied + 2, T(3, 1), b"\x80")["error"] == "stale_entry"
    acq = encode_command({"op": "acquire", "lock": "L", "owner": "c2", "ttl_ms": 5, "now_ms": 80})
    assert other.apply(sm.last_applied + 3, T(3, 100), acq)["error"] == "lock_held"


def test_snapshot_is_deterministic_regardless_of_insertion_order() -> None:
    a, b = KVStateMachine(), KVStateMachine()
    keys = [f"k{i}" for i in range(50)]
    for i, k in enumerate(keys):
        a.apply(i + 1, T(1, i + 1), encode_command({"op": "put", "key": k, "value": i}))
    for i, k in enumerate(reversed(keys)):
        b.apply(i + 1, T(1, i + 1), encode_command({"op": "put", "key": k, "value": 49 - i}))
    assert a.snapshot() == b.snapshot()


def test_restore_rejects_bad_bytes_and_keeps_state() -> None:
    sm = _busy_state()
    before = sm.snapshot()
    good = msgpack.unpackb(before)
    bads: list[tuple[bytes, str]] = [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1]), "missing format tag"),
        (msgpack.packb({**good, "version": 9}), "version 9 is not supported"),
        (msgpack.packb({**good, "last_applied": -1}), "'last_applied' must be a u64"),
        (msgpack.packb({**good, "data": [["k"]]}), "entries must be unique"),
        (msgpack.packb({**good, "data": [["k", 1], ["k", 2]]}), "entries must be unique"),
        (msgpack.packb({**good, "data": [["k", [[1]]]]}), "bad value"),  # appends make lists of scalars only
        (msgpack.packb({**good, "fences": [["k", -1]]}), "bad token"),
        (msgpack.packb({**good, "locks": [["L", "o", 1]]}), "locks"),
        (msgpack.packb({**good, "locks": {}}), "'locks' must be a list"),
        (b"\xdd\xff\xff\xff\xff", "not valid msgpack"),
    ]
    for data, match in bads:
        with pytest.raises(SnapshotFormatError, match=match):
            sm.restore(data)
        assert sm.snapshot() == before


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "cas", "fenced_put", "acquire", "release"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 3),
            st.integers(1, 30),
        ),
        max_size=40,
    )
)
def test_snapshot_restore_equivalence(ops: list[tuple[str, str, int, int]]) -> None:
    """Restoring a snapshot mid-way and continuing gives the same results and state."""
    cmds: list[bytes] = []
    for name, key, n, t in ops:
        if name == "put":
            op = {"op": name, "key": key, "value": n}
        elif name == "delete":
            op = {"op": name, "key": key}
        elif name == "cas":
            op = {"op": name, "key": key, "expected": n if n else None, "new": n + 1}
        elif name == "fenced_put":
            op = {"op": name, "key": key, "value": n, "token": t}
        elif name == "acquire":
            op = {"op": name, "lock": key, "owner": f"o{n}", "ttl_ms": t, "now_ms": t * 3}
        else:
            op = {"op": name, "lock": key, "owner": f"o{n}", "now_ms": t * 3}
        cmds.append(encode_command(op))
    entries = [(i + 1, T(1, i + 1), c) for i, c in enumerate(cmds)]
    half = len(entries) // 2
    full = KVStateMachine()
    results_full = full.apply_batch(entries)
    first = KVStateMachine()
    first.apply_batch(entries[:half])
    second = KVStateMachine()
    second.restore(first.snapshot())
    results_split = second.apply_batch(entries[half:])
    assert results_split == results_full[half:]
    assert second.snapshot() == full.snapshot()
