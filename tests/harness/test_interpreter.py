"""The interpreter against an in-memory register (a unit-test stand-in, not a shipped fake)."""

import asyncio
import random
import time

import pytest

from checkers.history import load_jsonl
from workloads.generator import EachKeyOnce, Independent, Limit, mix
from harness.interpreter import Clock, Completion, Counters, Interpreter
from checkers.history import HistoryWriter


class MemoryRegister:
    """An atomic register per key; op "flaky" raises, op "slow" never returns in time."""

    def __init__(self):
        self.state = {}

    async def open(self, worker):
        return self

    async def invoke(self, op):
        await asyncio.sleep(0)
        f, key = op["f"], op.get("key")
        if f == "write":
            self.state[key] = op["value"]
            return Completion("ok")
        if f == "read":
            return Completion("ok", value=self.state.get(key))
        if f == "cas":
            old, new = op["value"]
            if self.state.get(key) != old:
                return Completion("fail", error="cas-mismatch")
            self.state[key] = new
            return Completion("ok")
        if f == "flaky":
            raise ConnectionResetError("peer went away")
        if f == "slow":
            await asyncio.sleep(10)
        raise AssertionError(f)

    async def close(self):
        pass


def run(coro):
    return asyncio.run(coro)


def test_every_invoke_has_one_completion_and_info_retires_process(tmp_path):
    path = tmp_path / "h.jsonl"
    reg = MemoryRegister()
    gen = Limit(mix(lambda r: {"f": "write", "value": r.randint(0, 4)},
                    lambda r: {"f": "read"},
                    lambda r: {"f": "flaky"}), 60)
    counters = Counters()
    with HistoryWriter(str(path)) as h:
        interp = Interpreter(h, Clock(), random.Random(7), concurrency=3, counters=counters)
        run(interp.run_clients(gen, reg.open, deadline=time.monotonic() + 30))
    ops = load_jsonl(str(path))
    assert len(ops) == 120
    open_by_process = {}
    for op in ops:
        if op.type == "invoke":
            assert op.process not in open_by_process, "a process had two outstanding ops"
            open_by_process[op.process] = op
        else:
            assert open_by_process.pop(op.process).f == op.f
    assert not open_by_process
    infos = [op for op in ops if op.type == "info"]
    assert infos and all("ConnectionResetError" in op.error for op in infos)
    retired = {op.process for op in infos}
    for op in ops:  # a retired process never invokes again
        if op.type == "invoke" and op.process in retired:
            assert op.index < max(i.index for i in infos if i.process == op.process)
    assert counters.info == len(infos) and counters.invoked == 60
    assert [op.time for op in ops] == sorted(op.time for op in ops)


def test_timeout_is_info_not_fail(tmp_path):
    path = tmp_path / "h.jsonl"
    reg = MemoryRegister()
    with HistoryWriter(str(path)) as h:
        interp = Interpreter(h, Clock(), random.Random(1), concurrency=1)
        run(interp.run_clients(Limit(mix(lambda r: {"f": "slow"}), 1), reg.open,
                               deadline=None, op_timeout=0.05))
    ops = load_jsonl(str(path))
    assert [(o.type, o.error) for o in ops] == [("invoke", None), ("info", "timeout")]


def test_deadline_stops_workers(tmp_path):
    reg = MemoryRegister()
    with HistoryWriter(str(tmp_path / "h.jsonl")) as h:
        interp = Interpreter(h, Clock(), random.Random(1), concurrency=2)
        start = time.monotonic()
        run(interp.run_clients(mix(lambda r: {"f": "read"}), reg.open,
                               deadline=start + 0.3, rate=200))
        assert time.monotonic() - start < 5
    ops = load_jsonl(str(tmp_path / "h.jsonl"))
    # rate 200/s for 0.3 s: far fewer than an unpaced loop would issue
    assert 10 <= len(ops) // 2 <= 200


def test_independent_bounds_ops_per_key_and_final_reads_each_key(tmp_path):
    gen = Independent(mix(lambda r: {"f": "write", "value": r.randint(0, 9)}), group_size=2,
                      ops_per_key=5, max_keys=6)
    rng = random.Random(3)
    per_key = {}
    for _ in range(200):
        for worker in range(4):
            op = gen.next(worker, rng)
            if op is not None:
                per_key[op["key"]] = per_key.get(op["key"], 0) + 1
    assert set(per_key) == set(range(6))
    assert all(n <= 5 for n in per_key.values())
    final = EachKeyOnce(range(gen.keys_used), lambda k: {"f": "read"})
    reads = [final.next(w % 3, rng) for w in range(10)]
    assert [r["key"] for r in reads if r] == list(range(6))


def test_nemesis_ops_are_logged_as_invoke_and_info(tmp_path):
    class OneShot:
        def __init__(self):
            self.done = False

        def next(self, rng):
            if self.done:
                return None
            self.done = True
            return {"f": "start-partition", "value": "halves"}

        async def invoke(self, op):
            return Completion("info", value={"n1": ["n2"]})

    path = tmp_path / "h.jsonl"
    with HistoryWriter(str(path)) as h:
        interp = Interpreter(h, Clock(), random.Random(1), concurrency=1)
        run(interp.run_nemesis(OneShot(), interval=0.01, deadline=time.monotonic() + 0.5))
    ops = load_jsonl(str(path))
    assert [(o.process, o.type, o.f) for o in ops] == [
        ("nemesis", "invoke", "start-partition"), ("nemesis", "info", "start-partition")]
    assert ops[1].value == {"n1": ["n2"]}


def test_bad_completion_type_rejected():
    with pytest.raises(ValueError, match="ok, fail or info"):
        Completion("maybe")


def test_register_options_choose_the_value_range_and_the_ops():
    import random

    from workloads import register

    def stream(workload, rng, n):
        """n ops, each read completing ok with nil (as a worker's next op waits for it)."""
        out = []
        for w in range(n):
            op = workload.generator.next(w % 5, rng)
            if op["f"] == "read":
                workload.generator.memory.read_ok(w % 5, op["key"], None)
            out.append(op)
        return out

    wide = register.make([], 5, {"values": 1000, "ops": "read,write"})
    rng = random.Random(7)
    ops = stream(wide, rng, 400)
    assert {op["f"] for op in ops} == {"read", "write"}
    assert max(op["value"] for op in ops if op["f"] == "write") >= 5  # beyond 0..4
    assert {op["value"] for op in ops if op["f"] == "write"} <= set(range(1000))
    default = register.make([], 5, {})
    ops = stream(default, rng, 400)
    assert {op["f"] for op in ops} == {"read", "write", "cas", "delete"}
    written = [op["value"] for op in ops if op["f"] == "write"] + [op["value"][1] for op in ops if op["f"] == "cas"]
    assert len(written) == len(set(written))  # unique values by default
    with pytest.raises(ValueError, match="option values=1: must be at least 2"):
        register.make([], 5, {"values": 1})
    with pytest.raises(ValueError, match="option ops='read,append': name some of read, write, cas"):
        register.make([], 5, {"ops": "read,append"})
    with pytest.raises(ValueError, match="has no option value; its options: op_timeout, ops, ops_per_key"):
        register.make([], 5, {"value": 3})
    weighted = register.make([], 5, {"ops": "read:3,write"})
    fs = [op["f"] for op in stream(weighted, rng, 2000)]
    assert 0.68 < fs.count("read") / len(fs) < 0.82  # 3 reads to 1 write
    with pytest.raises(ValueError, match="weight 'x' of read is not a number"):
        register.make([], 5, {"ops": "read:x"})
    # the command line gives strings: they parse like the numbers a regress case gives
    from_cli = register.make([], 5, {"values": "1000", "threads_per_key": "1", "op_timeout": "0.5"})
    assert from_cli.generator.keyed.group_size == 1
