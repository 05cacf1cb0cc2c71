"""harness/probes.py's run_battery over a scripted transport: which probes go where, what is
checked afterwards, and that a failed setup write never turns into a false alarm."""

from __future__ import annotations

import asyncio
from typing import Any

from checkers.probes import check_probes
from harness.probes import (APPEND_SCALAR_KEY, BATTERY, SCALAR_KEYS, SCALAR_VALUE, TXN_SCALAR_KEY, answer,
                            run_battery)
from ukehi import wire
from ukehi.node.driver import ADDRESS_KEY_PREFIX


class Scripted:
    """Three nodes, n1 leads; a dict for the data; the codec's refusals close the connection
    (and count a bad frame) as the server does. ``setup_fails``: puts answer not_leader."""

    counts_bad_frames = True

    def __init__(self, *, setup_fails: bool = False, accept_append_to_scalar: bool = False) -> None:
        self.data: dict[str, Any] = {}
        self.bad_frames = {"n1": 0, "n2": 0, "n3": 0}
        self.setup_fails = setup_fails
        self.accept_append_to_scalar = accept_append_to_scalar
        self.sent: list[tuple[str, str]] = []

    def is_running(self, node: str) -> bool:
        return True

    def close_reasons(self, probed: Any) -> None:
        return None

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None, timeout: float = 5.0) -> dict[str, Any]:
        try:
            frame = wire.decode_frame(data if cut is None else data[:cut])
        except wire.ProtocolError as err:
            self.bad_frames[node] += 1
            return answer("closed", reason=str(err))
        if frame.type not in wire.CLIENT_REQUESTS:
            self.bad_frames[node] += 1
            return answer("closed")
        t, body = frame.type, frame.body
        self.sent.append((node, t.value))

        def reply(msg_type: wire.MsgType, out: dict[str, Any]) -> dict[str, Any]:
            return answer("answered", wire.Frame(msg_type, frame.id, out))

        if t is wire.MsgType.STATUS:
            return reply(wire.MsgType.OK, wire.ok_body({"role": "leader" if node == "n1" else "follower", "term": 2,
                                                        "bad_frames": self.bad_frames[node]}))
        keys = [body["key"]] if "key" in body else [m[1] for m in body.get("ops", [])]
        if t is not wire.MsgType.GET and any(k.startswith(ADDRESS_KEY_PREFIX) for k in keys):
            return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.BAD_REQUEST, "reserved"))
        if node != "n1" and t is not wire.MsgType.GET:
            return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.NOT_LEADER, "n1 leads"))
        if t is wire.MsgType.GET:
            return reply(wire.MsgType.OK, wire.ok_body(self.data.get(body["key"])))
        if t is wire.MsgType.PUT:
            if self.setup_fails:
                return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.NOT_LEADER, "lost it"))
            self.data[body["key"]] = body["value"]
            return reply(wire.MsgType.OK, {})
        # append / txn: an absent key takes an append; a scalar refuses it (unless told not to)
        for f, k, v in ([["append", body["key"], body["value"]]] if t is wire.MsgType.APPEND else body["ops"]):
            if f == "append" and isinstance(self.data.get(k), str) and not self.accept_append_to_scalar:
                return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.BAD_REQUEST, "holds a scalar"))
        for f, k, v in ([["append", body["key"], body["value"]]] if t is wire.MsgType.APPEND else body["ops"]):
            self.data[k] = [*(self.data.get(k) or [])] + [v] if f == "append" else v
        return reply(wire.MsgType.OK, wire.ok_body({"index": 9}))


def battery(transport: Scripted) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    asyncio.run(run_battery(transport, ["n1", "n2", "n3"], records.append))
    return records


def test_every_node_gets_the_stateless_probes_and_the_leader_the_stateful_ones():
    t = Scripted()
    records = battery(t)
    probes = [r for r in records if r["kind"] == "probe"]
    stateful = {p.name for p in BATTERY if p.leader_only}
    assert {r["node"] for r in probes if r["probe"] in stateful} == {"n1"}
    assert len(probes) == 3 * (len(BATTERY) - len(stateful)) + len(stateful)
    assert {t.data[k] for k in SCALAR_KEYS} == {SCALAR_VALUE}
    data = {r["key"]: r for r in records if r["kind"] == "data"}
    assert set(data) >= set(SCALAR_KEYS) and all(r["read"]["value"] == r["expected"] for r in data.values())
    got = check_probes(records)
    assert got["valid"] is True and got["probes"] == len(probes)


def test_a_failed_setup_write_skips_the_probes_that_need_it_instead_of_a_false_alarm():
    t = Scripted(setup_fails=True)
    records = battery(t)
    sent = {r["probe"] for r in records if r["kind"] == "probe"}
    assert "append-to-scalar" not in sent and "txn-append-to-scalar" not in sent
    assert not any(r["kind"] == "data" and r["key"] in SCALAR_KEYS for r in records)
    got = check_probes(records)
    assert got["valid"] is True and "were not all written" in got["setup"]


def test_an_append_to_a_scalar_that_is_taken_is_caught_with_the_changed_value():
    records = battery(Scripted(accept_append_to_scalar=True))
    got = check_probes(records)
    assert got["valid"] is False
    problems = {(p.get("probe"), p.get("key")) for p in got["problems"]}
    assert ("append-to-scalar", None) in problems and ("txn-append-to-scalar", None) in problems
    assert (None, APPEND_SCALAR_KEY) in problems and (None, TXN_SCALAR_KEY) in problems
