"""unaffected-shards (checkers/shard_availability.py): while the rebalance nemesis moves one
shard's replica, client requests to the other shards keep succeeding (6.824 shardkv's
"unaffected shards stay available").

Histories are hand-made in the shapes a real sharded register run writes: client ops with
``register`` keys (ints, sent as ``register/<k>``), the nemesis's ``move-replica`` op whose
completion value names the shard, source, target, epochs, outcome (and ``disrupted``), and
partition ops as nemeses/partition.py records them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from checkers.history import Op, read_jsonl_text
from checkers.shard_availability import (GRACE_S, MIN_OPS, MOVE, REBALANCE, check_unaffected_shards,
                                         shard_of_key, unaffected_shards_checker, wanted, workload_key_name)
from ukehi.shardmap import ShardMap, request_keys

S = 1_000_000_000
SHARDS = 8
NODES = ("n1", "n2", "n3", "n4", "n5")
KEY_NAME = workload_key_name("register")


def keys_by_shard(count: int = 200) -> dict[int, list[int]]:
    """Register keys (history form) by the shard the nodes place them in."""
    smap = ShardMap.initial(NODES, SHARDS, 3)
    out: dict[int, list[int]] = {}
    for k in range(count):
        out.setdefault(smap.shard_for(f"register/{k}"), []).append(k)
    return out


BY_SHARD = keys_by_shard()
MOVING = 3  # the shard the move moves
OTHER_A, OTHER_B = [s for s in sorted(BY_SHARD) if s != MOVING][:2]


class H:
    """A history under construction (times in seconds)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.process = 0

    def add(self, t: float, process: Any, type_: str, f: str, key: Any = None, value: Any = None,
            error: Any = None) -> Op:
        op = Op(len(self.ops), int(t * S), process, type_, f, key=key, value=value, error=error)
        self.ops.append(op)
        return op

    def client(self, t0: float, t1: float, shard: int, outcome: str = "ok", error: Any = None, n: int = 0) -> None:
        """One read by a fresh process on a key of ``shard``; outcome ok / fail / info / None (never completed)."""
        self.process += 1
        key = BY_SHARD[shard][n % len(BY_SHARD[shard])]
        self.add(t0, self.process, "invoke", "read", key)
        if outcome is not None:
            self.add(t1, self.process, outcome, "read", key, value=None if outcome != "ok" else 1, error=error)

    def move(self, t0: float, t1: float, shard: int = MOVING, **extra: Any) -> None:
        self.add(t0, "nemesis", "invoke", MOVE, value={"seed": 7})
        value = {"shard": shard, "from": "n1", "to": "n4", "epoch_before": 1, "members_before": ["n1", "n2", "n3"],
                 "outcome": "ok", "epoch_after": 3, "members_after": ["n2", "n3", "n4"], **extra}
        self.add(t1, "nemesis", "info", MOVE, value=value)

    def partition(self, t0: float, t1: float) -> None:
        self.add(t0, "nemesis", "invoke", "start-partition", value="halves")
        self.add(t0 + 0.01, "nemesis", "info", "start-partition",
                 value={"components": [["n1", "n2"], ["n3", "n4", "n5"]]})
        self.add(t1, "nemesis", "invoke", "stop-partition")
        self.add(t1 + 0.01, "nemesis", "info", "stop-partition", value="healed")

    def sorted(self) -> list[Op]:
        ops = sorted(self.ops, key=lambda o: (o.time, o.index))
        return [Op(i, o.time, o.process, o.type, o.f, o.key, o.value, o.error) for i, o in enumerate(ops)]


def in_move(h: H, start: float, *, other_outcome: str, count: int = 8, error: Any = None,
            shards: tuple[int, ...] = ()) -> None:
    """``count`` reads on the unaffected shards invoked inside a move window [start, start + 1]
    (each takes 0.1 s, or 0.5 s when it ends in failure), and two on the moving shard
    (refused: not_leader, the noise a move makes there)."""
    h.move(start, start + 1.0)
    shards = shards or (OTHER_A, OTHER_B)
    for i in range(count):
        t = start + 0.05 + i * 0.1
        h.client(t, t + (0.1 if other_outcome == "ok" else 0.5), shards[i % len(shards)], other_outcome, error, n=i)
    h.client(start + 0.1, start + 0.3, MOVING, "fail", "not_leader")
    h.client(start + 0.4, start + 0.6, MOVING, "fail", "not_leader")


def judge(h: H) -> dict[str, Any]:
    return check_unaffected_shards(h.sorted(), SHARDS, KEY_NAME)


def test_constants_match_the_nemesis():
    from harness.registry import SHADING
    from nemeses.rebalance import MOVE as NEMESIS_MOVE

    assert MOVE == NEMESIS_MOVE and MOVE in SHADING[REBALANCE].instant


def test_key_to_shard_is_the_nodes_own_routing():
    """The checker places a history key where the node routes the request the workload's client
    sends for it: the key captured from RegisterClient / KvClient, then request_keys and
    ShardMap.shard_for as ukehi/node/groups.py ``route`` does."""
    from workloads.kv import KvClient
    from workloads.register import RegisterClient

    sent: list[str] = []

    class Capture:
        async def get(self, key: str) -> Any:
            sent.append(key)
            from ukehi.client import Result
            return Result("ok", value=None)

    for shards in (1, 8, 16, 64):
        smap = ShardMap.initial(NODES, shards, 3)
        for workload, cls in (("register", RegisterClient), ("kv", KvClient)):
            client = cls.__new__(cls)
            client.client = Capture()
            if workload == "register":
                from workloads.register import Memory
                client.worker, client.memory = 0, Memory()
            for k in list(range(40)) + ["x", "key-7"]:
                sent.clear()
                asyncio.run(client.invoke({"f": "read" if workload == "register" else "get", "key": k}))
                (wire_key,) = request_keys("get", {"key": sent[0]})
                assert shard_of_key(k, shards, workload_key_name(workload)) == smap.shard_for(wire_key), (workload, k)
    # and the keys do spread: a wrong key name (e.g. the bare history key) would place them elsewhere
    assert any(shard_of_key(k, 16, KEY_NAME) != ShardMap.initial(NODES, 16, 3).shard_for(str(k)) for k in range(40))


def test_unaffected_shards_served_during_a_move_is_valid():
    h = H()
    in_move(h, 5.0, other_outcome="ok")
    got = judge(h)
    assert got["valid"] is True, got
    assert got["judged_windows"] == 1
    (window,) = got["windows"]
    assert window["shard"] == MOVING and window["unaffected_shards"] == sorted({OTHER_A, OTHER_B})
    assert window["counts"] == {"ops": 8, "ok": 8, "fail": 0, "info": 0, "served": 8}
    # the moving shard's own refusals are reported, never judged
    assert window["moving_shard_counts"]["fail"] == 2
    assert "8 of 8" in got["explanation"]


def test_unaffected_shards_all_failing_during_a_quiet_move_is_invalid():
    h = H()
    h.client(1.0, 1.1, OTHER_A)  # served before the move: the cluster was up
    in_move(h, 5.0, other_outcome="info", error="timeout", count=2 * MIN_OPS)  # 5 on each shard
    got = judge(h)
    assert got["valid"] is False, got
    (v,) = got["violations"]
    assert v["rules"] == ["few-served", "shard-unserved"] and v["unserved_shards"] == sorted({OTHER_A, OTHER_B})
    assert v["shard"] == MOVING and v["from"] == "n1" and v["to"] == "n4"
    assert v["counts"] == {"ops": 10, "ok": 0, "fail": 0, "info": 10, "served": 0}
    assert (v["start_s"], v["end_s"]) == (5.0, 6.0)
    assert len(v["examples"]) == 3 and all(e["error"] == "timeout" and e["type"] == "info" for e in v["examples"])
    ops = h.sorted()
    assert ops[v["op"]].f == MOVE and ops[v["op"]].type == "info"  # names the move op's index
    assert f"move of shard {MOVING} from n1 to n4" in got["explanation"] and "served 0 of 10" in got["explanation"]
    assert "timeout x10" in got["explanation"]


def test_refusals_that_say_not_now_are_not_served_but_answers_are():
    h = H()
    in_move(h, 5.0, other_outcome="fail", error="unavailable")
    assert judge(h)["valid"] is False
    h = H()
    in_move(h, 5.0, other_outcome="fail", error="wrong_shard")  # an unmoved shard's members never refuse it
    assert judge(h)["valid"] is False
    h = H()
    in_move(h, 5.0, other_outcome="fail", error="cas_failed")  # an answer from the state machine: served
    assert judge(h)["valid"] is True


def test_a_few_failures_are_noise_not_a_violation():
    h = H()
    in_move(h, 5.0, other_outcome="ok", count=6)
    for i in range(5):  # 5 failures of 11, on both shards: still more than half served
        h.client(5.1 + i * 0.1, 5.3 + i * 0.1, (OTHER_A, OTHER_B)[i % 2], "fail", "not_leader", n=10 + i)
    got = judge(h)
    assert got["valid"] is True, got
    assert got["windows"][0]["counts"]["ops"] == 11 and got["windows"][0]["counts"]["served"] == 6


def test_one_unaffected_shard_unserved_is_invalid_even_when_others_are_served():
    h = H()
    in_move(h, 5.0, other_outcome="ok", count=10, shards=(OTHER_A,))
    for i in range(MIN_OPS):
        h.client(5.1 + i * 0.1, 5.9, OTHER_B, "info", "timeout", n=i)
    got = judge(h)
    assert got["valid"] is False
    (v,) = got["violations"]
    assert v["rules"] == ["shard-unserved"] and v["unserved_shards"] == [OTHER_B]
    assert v["per_shard"][str(OTHER_B)]["served"] == 0 and v["per_shard"][str(OTHER_A)]["served"] == 10


def test_too_few_ops_are_not_judged():
    h = H()
    in_move(h, 5.0, other_outcome="info", error="timeout", count=MIN_OPS - 1)
    got = judge(h)
    assert got["valid"] is True and got["judged_windows"] == 0
    assert got["explanation"].startswith("nothing judged") and f"fewer than {MIN_OPS}" in got["explanation"]


def test_failures_while_a_partition_is_open_are_not_judged():
    h = H()
    h.partition(4.0, 7.0)
    in_move(h, 5.0, other_outcome="info", error="timeout")
    got = judge(h)
    assert got["valid"] is True and got["judged_windows"] == 0
    assert "partition n1 n2 | n3 n4 n5" in got["not_judged"][0] and got["explanation"].startswith("nothing judged")


def test_a_fault_healed_just_before_the_move_excuses_it_one_healed_long_before_does_not():
    h = H()
    h.partition(1.0, 5.0 - GRACE_S + 0.5)  # healed inside the grace period
    in_move(h, 5.0, other_outcome="info", error="timeout")
    assert judge(h)["judged_windows"] == 0 and judge(h)["valid"] is True
    h = H()
    h.partition(0.5, 5.0 - GRACE_S - 0.5)
    in_move(h, 5.0, other_outcome="info", error="timeout")
    got = judge(h)
    assert got["judged_windows"] == 1 and got["valid"] is False


def test_an_op_overlapping_a_later_fault_is_not_judged():
    """Ops invoked in the move but still running when a partition started (after the move)
    are left out; the rest of the window is judged."""
    h = H()
    in_move(h, 5.0, other_outcome="ok", count=6)
    for i in range(4):
        h.client(5.2 + i * 0.1, 12.0, OTHER_A, "info", "timeout", n=i)
    h.partition(8.0, 11.0)
    got = judge(h)
    assert got["valid"] is True and got["windows"][0]["excused_ops"] == 4
    assert got["windows"][0]["counts"]["ops"] == 6


def test_a_move_that_killed_a_node_is_not_judged_nor_the_move_right_after_it():
    h = H()
    killed = {"node": "n2", "step_seen": "catch-up", "role": "source", "killed": True, "pid": 4242}
    h.move(2.0, 3.5, disrupted=killed)
    for i in range(8):
        h.client(2.1 + i * 0.1, 3.4, OTHER_A, "info", "timeout", n=i)
    in_move(h, 5.0, other_outcome="info", error="timeout")  # within GRACE_S of the kill's op
    got = judge(h)
    assert got["valid"] is True and got["judged_windows"] == 0, got
    assert "the move killed n2" in got["not_judged"][0]
    # a disruption that was skipped (the move had ended) killed nobody: judged as usual
    h = H()
    h.move(5.0, 6.0, disrupted={"node": "n2", "role": "target", "skipped": "the move had ended"})
    for i in range(8):
        h.client(5.1 + i * 0.05, 5.9, OTHER_A, "info", "timeout", n=i)
    assert judge(h)["valid"] is False


def test_skipped_moves_and_no_moves_judge_nothing():
    h = H()
    h.client(1.0, 1.1, OTHER_A)
    got = judge(h)
    assert got["valid"] is True and "no move-replica op" in got["explanation"]
    h.add(2.0, "nemesis", "invoke", MOVE, value={"seed": 1})
    h.add(2.1, "nemesis", "info", MOVE, value={"skipped": "no sharded node answered"})
    got = judge(h)
    assert got["valid"] is True and got["judged_windows"] == 0 and "no sharded node answered" in got["not_judged"][0]


def test_attached_to_sharded_rebalance_runs_and_rejudged_by_analyze(tmp_path: Path):
    """harness/analysis.py gives a sharded run with rebalance the checker (and `analyze`
    re-judges the stored history); an unsharded or rebalance-less run does not get it."""
    from harness.analysis import check_run
    from harness.spec import TestSpec
    from harness.store import RunDir

    assert wanted(("rebalance", "partition"), {"shards": 8, "replication_factor": 3})
    assert not wanted(("partition", "kill"), {"shards": 8})
    assert not wanted(("rebalance",), {})

    def stored(name: str, nemeses: tuple[str, ...], node_options: dict[str, Any], history: list[Op]) -> RunDir:
        path = tmp_path / name
        path.mkdir()
        spec = TestSpec(name=name, workload="register", nodes=NODES, nemeses=nemeses, time_limit=10.0,
                        results_dir=str(tmp_path), node_options=node_options)
        (path / "test.json").write_text(spec.to_json(run_id=f"ukj-{name}"), encoding="utf-8")
        (path / "history.jsonl").write_text("".join(json.dumps(op.to_dict()) + "\n" for op in history),
                                            encoding="utf-8")
        return RunDir(path)

    h = H()
    h.client(1.0, 1.1, OTHER_A)
    in_move(h, 5.0, other_outcome="info", error="timeout")
    history = h.sorted()
    assert read_jsonl_text("".join(json.dumps(op.to_dict()) + "\n" for op in history)) == history
    verdict = check_run(stored("sharded", ("rebalance",), {"shards": SHARDS, "replication_factor": 3}, history))
    assert verdict["checkers"]["unaffected-shards"]["valid"] is False
    assert verdict["valid"] is False
    verdict = check_run(stored("unsharded", ("partition",), {}, history))
    assert "unaffected-shards" not in verdict["checkers"]
    # the checker object itself: a workload without key naming is an error of the checker
    # (every shipped workload has one: fencing's since fencing runs sharded)
    with pytest.raises(ValueError, match="no key naming"):
        unaffected_shards_checker("bank", 8)(history, {})
