"""The checker's fast paths (issue 17) give the same answers as the plain ones.

- Inlined steps of the shipped models vs the same model stepping through its function.
- Large histories split over forked processes at once vs one process.
- Reading JSONL through the common-line path vs Op.from_dict.
- ``check`` stops at the first violation unless asked for every failing key.
- ``ukehi-jepsen check`` imports only what checking needs.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from checkers import checker as checker_module
from checkers.bruteforce import linearizable_bruteforce
from checkers.generate import generate_history
from checkers.mapping import to_operations
from checkers.checker import check_operations, check_operations_verbose
from checkers.history import Op, read_jsonl
from checkers.linearizability import analyze
from checkers.model import UNKNOWN, CheckResult, Model, Operation
from checkers.models import APPEND, CAS, DELETE, READ, WRITE, make_model
from checkers.wgl import search

ROOT = Path(__file__).resolve().parents[2]


def _random_history(rng: random.Random, model_name: str, n_ops: int, keys: list, *,
                    concurrency: int = 6) -> list[Operation]:
    """Ops with random overlapping intervals and random (often wrong) outputs."""
    values = [None, 0, 1, 2] if model_name != "porcupine-kv" else ["", "a", "b", "ab"]
    ops = []
    t = 0
    for i in range(n_ops):
        t += rng.randrange(3)
        call = t
        pending = rng.random() < 0.08
        ret = None if pending else call + rng.randrange(1, 4 * concurrency)
        key = rng.choice(keys)
        r = rng.random()
        if model_name == "porcupine-kv":
            if r < 0.45:
                inp, out = (READ, key, None, None), rng.choice(values)
            elif r < 0.7:
                inp, out = (WRITE, key, rng.choice(["a", "b"]), None), None
            else:
                inp, out = (APPEND, key, rng.choice(["a", "b"]), None), None
        else:
            if r < 0.4:
                inp, out = (READ, key, None, None), rng.choice(values)
            elif r < 0.65:
                inp, out = (WRITE, key, rng.choice(values[1:]), None), None
            elif r < 0.9 or model_name != "kv":
                inp, out = (CAS, key, rng.choice(values), rng.choice(values[1:])), rng.random() < 0.5
            else:
                inp, out = (DELETE, key, None, None), None
        ops.append(Operation(i % 7, inp, call, UNKNOWN if pending else out, ret, i))
    return ops


def _through_function(model: Model) -> Model:
    """The same model, its step wrapped so the search cannot recognise and inline it."""
    step = model.step

    def wrapped(state, inp, out):
        return step(state, inp, out)

    return Model(model.name, init=model.init, step=wrapped, partition=model.partition,
                 read_only=model.read_only)


@pytest.mark.parametrize("model_name", ["cas-register", "kv", "porcupine-kv"])
def test_inlined_steps_search_exactly_as_the_step_functions(model_name):
    rng = random.Random(17)
    model = make_model(model_name)
    plain = _through_function(model)
    verdicts = set()
    for _ in range(300):
        ops = _random_history(rng, model_name, rng.randrange(4, 40), ["k"])
        fast, slow = search(model, ops), search(plain, ops)
        # the same moves in the same order: same verdict, prefix, blocking op and step count
        assert (fast.result, fast.longest, fast.blocked, fast.steps) == \
            (slow.result, slow.longest, slow.blocked, slow.steps), ops
        verdicts.add(fast.result)
    assert verdicts == {CheckResult.OK, CheckResult.ILLEGAL}  # both kinds were exercised


def test_kv_deletes_agree_with_brute_force():
    rng = random.Random(5)
    model = make_model("kv")
    seen = set()
    for _ in range(600):
        ops = _random_history(rng, "kv", rng.randrange(1, 9), ["k", "j"])
        fast = check_operations(model, ops, workers=1)
        assert (fast is CheckResult.OK) is linearizable_bruteforce(model, ops), ops
        seen.add(fast)
    assert seen == {CheckResult.OK, CheckResult.ILLEGAL}


@pytest.mark.parametrize("model_name", ["cas-register", "porcupine-kv"])
def test_forked_start_gives_the_verdicts_and_failing_keys_of_one_process(model_name, monkeypatch):
    monkeypatch.setattr(checker_module, "PARALLEL_START_OPS", 50)
    rng = random.Random(3)
    model = make_model(model_name)
    verdicts = set()
    for seed in range(8):
        # linearizable by construction; every other one gets a read of a value never written
        history = generate_history(model_name, n_ops=150, n_processes=5, n_keys=6, info_fraction=0.05,
                                   seed=seed)
        ops = to_operations(history, model_name)
        if seed % 2:
            reads = [i for i, o in enumerate(ops) if o.input[0] == READ and o.output is not UNKNOWN]
            i = rng.choice(reads)
            o = ops[i]
            ops[i] = Operation(o.client_id, o.input, o.call, "never written", o.return_time, o.index)
        one, info_one = check_operations_verbose(model, ops, 60, workers=1)
        two, info_two = check_operations_verbose(model, ops, 60, workers=2)
        assert one is two
        assert [p.result for p in info_one.partitions] == [p.result for p in info_two.partitions]
        assert [p.outcome.longest for p in info_one.partitions] == \
            [p.outcome.longest for p in info_two.partitions]
        assert check_operations(model, ops, 60, workers=2) is one
        verdicts.add(one)
    assert verdicts == {CheckResult.OK, CheckResult.ILLEGAL}


def test_a_model_error_in_a_forked_process_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(checker_module, "PARALLEL_START_OPS", 10)
    model = make_model("register")
    ops = [Operation(i, (WRITE, f"k{i % 4}", i, None), 2 * i, None, 2 * i + 1) for i in range(40)]
    ops.append(Operation(99, (CAS, "k3", 1, 2), 200, True, 201))  # register has no cas
    ops.append(Operation(98, (APPEND, "k1", "x", None), 300, None, 301))
    with pytest.raises(ValueError, match="cannot apply"):
        check_operations(model, ops, 60, workers=2)


def test_fast_jsonl_reading_builds_the_ops_from_dict_builds():
    rng = random.Random(9)
    lines = []
    for i in range(300):
        d = {"index": i, "time": i * 10, "process": rng.choice([0, 1, "nemesis"]),
             "type": rng.choice(["invoke", "ok", "fail", "info"]), "f": rng.choice(["read", "write", "cas"])}
        if rng.random() < 0.7:
            d["key"] = rng.choice(["a", 3, [1, [2, 3]]])
        if rng.random() < 0.7:
            d["value"] = rng.choice([None, 1, "x", [1, 2], [[1], 2]])
        if rng.random() < 0.2:
            d["error"] = "timeout"
        if rng.random() < 0.1:
            d["node"] = "n1"  # an extra field: the general path
        lines.append(json.dumps(d) + "\n")
        if rng.random() < 0.05:
            lines.append("\n")
    got = read_jsonl(io.StringIO("".join(lines)))
    want = [Op.from_dict(json.loads(line), n) for n, line in enumerate(lines, 1) if line.strip()]
    assert got == want
    assert [op.extra for op in got] == [op.extra for op in want]
    assert any(op.extra for op in got) and any(isinstance(op.key, tuple) for op in got)


@pytest.mark.parametrize("line, message", [
    ('{"index": true, "time": 0, "process": 0, "type": "ok", "f": "read"}', "index must be an integer"),
    ('{"index": 0, "time": 0, "process": 0, "type": "done", "f": "read"}', "type must be one of"),
    ('{"index": 0, "time": 0, "process": 1.5, "type": "ok", "f": "read"}', "process must be"),
    ('{"index": 0, "time": 0, "process": 0, "type": "ok"}', "missing field"),
    ('[1, 2]', "expected a JSON object"),
])
def test_odd_lines_still_get_their_errors(line, message):
    good = '{"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "read"}\n'
    with pytest.raises(ValueError, match=message) as err:
        read_jsonl(io.StringIO(good + line + "\n"))
    assert err.value.line_number == 2  # type: ignore[attr-defined]


def _two_failing_keys() -> list[Op]:
    ops = []
    for n, key in enumerate(["a", "b", "c"]):
        base = 10 * n
        ops += [Op(base, base, n, "invoke", "write", key=key, value=1),
                Op(base + 1, base + 1, n, "ok", "write", key=key, value=1),
                Op(base + 2, base + 2, n, "invoke", "read", key=key),
                # key c reads what was written; a and b read a value never written
                Op(base + 3, base + 3, n, "ok", "read", key=key, value=1 if key == "c" else 7)]
    return ops


def test_all_failures_names_every_failing_key_and_the_default_of_analyze_does():
    history = _two_failing_keys()
    every = analyze(history, "register", workers=1).result
    assert every["valid"] is False
    assert sorted(f["key"] for f in every["failures"]) == ["a", "b"]
    first = analyze(history, "register", workers=1, all_failures=False).result
    assert first["valid"] is False and first["stopped_at_first_violation"] is True
    assert first["failures"] and {f["key"] for f in first["failures"]} <= {"a", "b"}


def test_check_command_takes_all_failures(tmp_path):
    from harness.commands.check import run_check
    from checkers.history import dumps_op

    path = tmp_path / "h.jsonl"
    path.write_text("".join(dumps_op(op) + "\n" for op in _two_failing_keys()))
    result, _ = run_check(path, all_failures=True, workers=1)
    assert sorted(f["key"] for f in result["failures"]) == ["a", "b"]
    result, _ = run_check(path, workers=1)
    assert result["valid"] is False


def test_check_command_imports_only_what_checking_needs():
    code = ("import sys; import harness.cli, harness.commands.check; "
            "print(' '.join(m for m in ('harness.registry', 'networkx', 'multiprocessing', 'checkers.visualize',"
            " 'harness.commands.run', 'matplotlib', 'docker', 'paramiko') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_workload_checker_takes_all_failures_from_the_options(tmp_path):
    """What `run` (stop at the first violation) and regress (every failing key) pass down."""
    from workloads.checks import linearizable

    check = linearizable("register")
    every = check(_two_failing_keys(), {"time_limit": 60})  # regress: check_run's default
    assert sorted(f["key"] for f in every["failures"]) == ["a", "b"]
    assert "stopped_at_first_violation" not in every
    first = check(_two_failing_keys(), {"time_limit": 60, "all_failures": False})
    assert first["valid"] is False and first["stopped_at_first_violation"] is True


@pytest.mark.parametrize("model_name", ["cas-register", "kv", "porcupine-kv"])
def test_operations_out_of_call_order_get_the_brute_force_verdict(model_name):
    """The search lays a partition out in call order itself (a stable sort when the input is
    not in it), and its longest prefix names positions in the caller's list."""
    rng = random.Random(23)
    model = make_model(model_name)
    seen = set()
    for _ in range(200):
        ops = _random_history(rng, model_name, rng.randrange(2, 11), ["k"])
        rng.shuffle(ops)
        outcome = search(model, ops)
        assert (outcome.result is CheckResult.OK) is linearizable_bruteforce(model, ops), ops
        assert sorted(set(outcome.longest)) == sorted(outcome.longest)
        assert all(0 <= i < len(ops) for i in outcome.longest)
        if outcome.result is CheckResult.ILLEGAL:
            assert 0 <= outcome.blocked < len(ops) and outcome.blocked not in outcome.longest
        seen.add(outcome.result)
    assert seen == {CheckResult.OK, CheckResult.ILLEGAL}
