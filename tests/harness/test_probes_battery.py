"""harness/probes.py's run_battery over a scripted transport: which probes go where, what is
checked afterwards, and that a failed setup write never turns into a false alarm."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from checkers.probes import check_probes
from harness.probes import (APPEND_SCALAR_KEY, BATTERY, SCALAR_KEYS, SCALAR_VALUE, SCENARIO_STEPS, SCENARIOS,
                            TXN_SCALAR_KEY, answer, run_battery)
from ukehi import wire
from ukehi.kv import KVStateMachine, encode_command, err, ok
from ukehi.node.admin import node_id_refusal
from ukehi.node.driver import ADDRESS_KEY_PREFIX


class AcceptsAppendToScalar(KVStateMachine):
    """The state machine with the append-to-scalar refusal gone (plain appends and txns)."""

    def _append_refused(self, key: str) -> None:
        return None

    def _execute_txn(self, cmd: dict[str, Any], index: int) -> Any:
        if cmd["op"] == "txn":
            for f, k, _ in cmd["ops"]:
                if f == "append" and isinstance(self._data.get(k), str):
                    self._data[k] = [self._data[k]]  # appended to as if it were a list
        return super()._execute_txn(cmd, index)


class Scripted:
    """Three nodes, n1 leads and applies every write to a real KV state machine; any node
    answers reads from it; the codec's refusals close the connection (and count a bad frame)
    as the server does; admin requests are judged by the node's own node-id rule
    (``node_id_refusal``), then against the members n1..n3, and an add_node taken writes its
    address key first, as the node does. ``setup_fails``: puts answer not_leader; ``sm``: the
    state machine; ``sent``: (node, request type, presented the admin certificate)."""

    counts_bad_frames = True

    def __init__(self, *, setup_fails: bool = False, accept_append_to_scalar: bool = False,
                 sm: KVStateMachine | None = None) -> None:
        self.sm = sm if sm is not None else (AcceptsAppendToScalar() if accept_append_to_scalar else KVStateMachine())
        self.index = 0
        self.bad_frames = {"n1": 0, "n2": 0, "n3": 0}
        self.setup_fails = setup_fails
        self.sent: list[tuple[str, str, bool]] = []
        self.members = ["n1", "n2", "n3"]

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.sm.items())

    def is_running(self, node: str) -> bool:
        return True

    def close_reasons(self, probed: Any) -> None:
        return None

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None, timeout: float = 5.0,
                       admin: bool = False) -> dict[str, Any]:
        try:
            frame = wire.decode_frame(data if cut is None else data[:cut])
        except wire.ProtocolError as err:
            self.bad_frames[node] += 1
            return answer("closed", reason=str(err))
        if frame.type not in wire.CLIENT_REQUESTS:
            self.bad_frames[node] += 1
            return answer("closed")
        t, body = frame.type, frame.body
        self.sent.append((node, t.value, admin))

        def reply(msg_type: wire.MsgType, out: dict[str, Any]) -> dict[str, Any]:
            # through the codec, as off a socket (a FencingToken arrives as a plain int)
            return answer("answered", wire.decode_frame(wire.encode_frame(msg_type, frame.id, out)))

        if t is wire.MsgType.STATUS:
            return reply(wire.MsgType.OK, wire.ok_body({"role": "leader" if node == "n1" else "follower", "term": 2,
                                                        "commit_index": self.index,
                                                        "bad_frames": self.bad_frames[node]}))
        if t in wire.ADMIN_REQUESTS:
            return reply(*self.admin(node, t, body))
        keys = [body["key"]] if "key" in body else [m[1] for m in body.get("ops", [])]
        if t is not wire.MsgType.GET and any(k.startswith(ADDRESS_KEY_PREFIX) for k in keys):
            return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.BAD_REQUEST, "reserved"))
        if t is wire.MsgType.GET:
            return reply(wire.MsgType.OK, wire.ok_body(self.sm.read(body["key"])))
        if node != "n1":
            return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.NOT_LEADER, "n1 leads"))
        if t is wire.MsgType.PUT and self.setup_fails:
            return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.NOT_LEADER, "lost it"))
        command = {"op": t.value, **body}
        if t in (wire.MsgType.ACQUIRE, wire.MsgType.RELEASE):
            command["now_ms"] = 1000 + self.index  # the leader's clock
        self.index += 1
        result = self.sm.apply(self.index, self.index, encode_command(command))
        if result["ok"]:
            return reply(wire.MsgType.OK, wire.ok_body(result["value"]))
        return reply(wire.MsgType.ERROR, wire.error_body(wire.ErrorCode(result["error"]), result["message"]))


    def admin(self, node: str, t: wire.MsgType, body: dict[str, Any]) -> tuple[wire.MsgType, dict[str, Any]]:
        target = body.get("node")
        if target is not None:
            refused = node_id_refusal(t.value, target)
            if refused is not None:
                return refused
        if node != "n1":
            return wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.NOT_LEADER, "n1 leads")
        if t is wire.MsgType.ADD_NODE:
            self.index += 1
            self.sm.apply(self.index, self.index, encode_command(
                {"op": "put", "key": ADDRESS_KEY_PREFIX + target, "value": body["address"]}))
            self.members.append(target)
            return wire.MsgType.OK, wire.ok_body({"members": self.members})
        if target not in self.members:
            return wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.BAD_REQUEST, f"{target} is not a member")
        return wire.MsgType.OK, wire.ok_body({"members": self.members})


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
    assert len(probes) == 3 * (len(BATTERY) - len(stateful)) + len(stateful) + SCENARIO_STEPS
    assert {t.data[k] for k in SCALAR_KEYS} == {SCALAR_VALUE}
    data = {r["key"]: r for r in records if r["kind"] == "data"}
    assert set(data) >= set(SCALAR_KEYS) and all(r["read"]["value"] == r["expected"] for r in data.values())
    got = check_probes(records)
    assert got["valid"] is True and got["probes"] == len(probes) and got["answered"] == SCENARIO_STEPS


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


# ---- the answer scenarios (well-formed requests with determined answers) ----

class RefusesTokenedReleases(KVStateMachine):
    """The mutant kv.py:441:16:and_or: every release carrying a token is refused."""

    def _execute(self, cmd: dict[str, Any], token: Any) -> Any:
        if cmd["op"] == "release" and "token" in cmd:
            return err(wire.ErrorCode.NOT_LOCK_HOLDER, "not held with that token")
        return super()._execute(cmd, token)


class ReleaseKeepsTheLock(KVStateMachine):
    """release answers ok and leaves the lock held (its ``del`` dropped)."""

    def _execute(self, cmd: dict[str, Any], token: Any) -> Any:
        kept = self._locks.get(cmd.get("lock", ""))
        result = super()._execute(cmd, token)
        if cmd["op"] == "release" and kept is not None:
            self._locks[cmd["lock"]] = kept
        return result


class DeleteSaysExisted(KVStateMachine):
    """delete answers the opposite of whether the key existed."""

    def _execute(self, cmd: dict[str, Any], token: Any) -> Any:
        result = super()._execute(cmd, token)
        return ok(not result["value"]) if cmd["op"] == "delete" else result


def scenario_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "probe" and r["level"] == "answer"]


def test_every_scenario_step_goes_to_the_leader_in_a_fresh_prefix_and_gets_its_answer():
    records = battery(Scripted())
    steps = scenario_records(records)
    assert [r["probe"] for r in steps] == [f"{s}/{step.name}" for s, all_ in SCENARIOS.items() for step in all_]
    assert {r["node"] for r in steps} == {"n1"} and all(r["expect"] == "answer" for r in steps)
    assert all("probe/fresh/2-" in r["what"] for r in steps if r["scenario"] in ("keys", "lock"))
    tokens = [r["answer"]["value"] for r in steps
              if r["probe"].startswith("lock/acquire") and r["answer"]["type"] == "ok"]
    assert len(tokens) == 3 and tokens == sorted(set(tokens))  # granted, renewed, re-granted: each newer


@pytest.mark.parametrize("sm, probe, got", [
    (RefusesTokenedReleases, "lock/release-holder-token", "error not_lock_holder"),
    (ReleaseKeepsTheLock, "lock/release-again", "ok null"),  # still held: released "again"
    (DeleteSaysExisted, "keys/delete-missing", "ok true"),
])
def test_a_wrong_answer_fails_the_battery_and_stops_its_scenario(sm, probe, got):
    records = battery(Scripted(sm=sm()))
    verdict = check_probes(records)
    assert verdict["valid"] is False
    wrong = [p for p in verdict["problems"] if p.get("probe") == probe]
    assert len(wrong) == 1 and f", got {got}" in wrong[0]["problem"] and wrong[0]["node"] == "n1"
    assert probe in verdict["explanation"]
    scenario = probe.split("/")[0]
    sent = [r["probe"] for r in scenario_records(records) if r["scenario"] == scenario]
    assert sent[-1] == probe  # nothing after the wrong answer: its state is unknown


class LosesLeadership(Scripted):
    """n1 stops leading at the n-th lock scenario request: not_leader from then on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    async def exchange(self, node: str, data: bytes, *, cut: int | None = None, timeout: float = 5.0,
                       admin: bool = False) -> dict[str, Any]:
        frame = None if cut is not None else _decodes(data)
        if frame is not None and frame.type in (wire.MsgType.ACQUIRE, wire.MsgType.RELEASE):
            self.after -= 1
            if self.after < 0:
                return answer("answered", wire.Frame(wire.MsgType.ERROR, frame.id,
                                                     wire.error_body(wire.ErrorCode.NOT_LEADER, "moved")))
        return await super().exchange(node, data, cut=cut, timeout=timeout, admin=admin)


def _decodes(data: bytes) -> wire.Frame | None:
    try:
        return wire.decode_frame(data)
    except wire.ProtocolError:
        return None


def test_a_leader_change_inside_a_scenario_is_inconclusive_and_stops_it():
    records = battery(LosesLeadership(after=4))
    verdict = check_probes(records)
    assert verdict["valid"] is True and verdict["inconclusive"] == 1
    lock = [r["probe"] for r in scenario_records(records) if r["scenario"] == "lock"]
    assert len(lock) == 5 and lock[-1] == "lock/release-by-other"  # the 5th lock request: not_leader


# ---- the admin scenario: node ids no node can have, refused before anything is written ----

def admin_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in scenario_records(records) if r["scenario"] == "admin"]


def test_the_admin_steps_go_to_the_leader_over_the_admin_certificate_and_are_refused():
    t = Scripted()
    records = battery(t)
    steps = admin_records(records)
    assert [r["probe"].split("/")[1] for r in steps] == [s.name for s in SCENARIOS["admin"]]
    assert all(r["answer"]["code"] == "bad_request" for r in steps if r["expected"]["type"] == "error")
    long_add = steps[0]
    assert long_add["probe"] == "admin/add-node-long-id" and long_add["leader_only"] is False
    assert "at most 256" in long_add["answer"]["message"] and "nothing was done" in long_add["answer"]["message"]
    assert {r["probe"] for r in steps if r["leader_only"]} == {
        "admin/get-address-of-long-id", "admin/remove-node-not-member", "admin/transfer-leader-not-member"}
    admin_types = {m.value for m in wire.ADMIN_REQUESTS}
    sent_admin = [(n, ty) for n, ty, cert in t.sent if cert]
    assert sent_admin and all(ty in admin_types for _, ty in sent_admin) and {n for n, _ in sent_admin} == {"n1"}
    assert not [ty for _, ty, cert in t.sent if ty in admin_types and not cert]
    assert t.members == ["n1", "n2", "n3"] and not any(k.startswith(ADDRESS_KEY_PREFIX) for k in t.data)
    assert check_probes(records)["valid"] is True


def test_a_node_that_takes_an_over_long_node_id_is_caught(monkeypatch: pytest.MonkeyPatch):
    # the mutant raft/types.py:53:8:drop_stmt: check_node_id no longer refuses over-long ids
    import ukehi.node.admin

    monkeypatch.setattr(ukehi.node.admin, "check_node_id", lambda name, value: value)
    t = Scripted()
    records = battery(t)
    verdict = check_probes(records)
    assert verdict["valid"] is False
    (wrong,) = [p for p in verdict["problems"] if p.get("probe") == "admin/add-node-long-id"]
    assert "expected error bad_request, got ok" in wrong["problem"]
    assert [r["probe"] for r in admin_records(records)] == ["admin/add-node-long-id"]  # the scenario stopped
    assert ADDRESS_KEY_PREFIX + "p" * 300 in t.data  # what the checker saw was real: it wrote


class AdminTimesOut(Scripted):
    """Every admin request answers timeout (a node that took the add_node and waits for a
    learner that never comes, or lost its leadership mid-way)."""

    def admin(self, node: str, t: wire.MsgType, body: dict[str, Any]) -> tuple[wire.MsgType, dict[str, Any]]:
        return wire.MsgType.ERROR, wire.error_body(wire.ErrorCode.TIMEOUT, "partially done, outcome unknown")


def test_a_timeout_to_an_unusable_node_id_is_a_problem_not_a_leadership_excuse():
    records = battery(AdminTimesOut())
    verdict = check_probes(records)
    assert verdict["valid"] is False
    (wrong,) = [p for p in verdict["problems"] if p.get("probe") == "admin/add-node-long-id"]
    assert "got error timeout" in wrong["problem"]
    # the same answer to a step that depends on leading stays inconclusive (records of battery
    # 2 carry no leader_only false, so they are judged as before)
    again = [dict(r, leader_only=True) if r.get("kind") == "probe" else r for r in records]
    assert check_probes(again)["valid"] is True and check_probes(again)["inconclusive"] == 1
