"""Generated vectors: linearizable-by-construction histories, mutated copies whose verdict
the brute-force checker confirms, and Hypothesis comparing fast and brute force."""

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers.bruteforce import linearizable_bruteforce
from checkers.checker import check_operations
from checkers.fencing import check_fencing
from checkers.generate import generate_history
from checkers.history import Op
from checkers.mapping import to_operations
from checkers.model import UNKNOWN, CheckResult, Operation
from checkers.models import APPEND, CAS, FENCED_PUT, READ, WRITE, make_model

MODEL_OF = {"register": "register", "cas-register": "cas-register", "kv": "kv",
            "porcupine-kv": "porcupine-kv", "fenced": "fenced-register"}
WORKLOADS = sorted(MODEL_OF)


def verdict(workload, history, timeout=30):
    name = MODEL_OF[workload]
    return check_operations(make_model(name), to_operations(history, name), timeout)


def brute(workload, history):
    name = MODEL_OF[workload]
    return linearizable_bruteforce(make_model(name), to_operations(history, name))


def ok_reads(history):
    return [i for i, op in enumerate(history)
            if op.type == "ok" and op.f in ("read", "get") and op.is_client]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_generated_histories_are_linearizable(workload):
    history = generate_history(workload, n_ops=2000, n_processes=10, n_keys=5, info_fraction=0.05,
                               seed=1)
    assert sum(op.type == "info" for op in history) > 0
    assert verdict(workload, history) is CheckResult.OK


def test_generated_fencing_histories_pass_the_fencing_checker():
    history = generate_history("fenced", n_ops=1500, n_processes=8, n_keys=3, info_fraction=0.05, seed=2)
    assert check_fencing(history)["valid"] is True


@pytest.mark.parametrize("workload", WORKLOADS)
def test_small_generated_histories_agree_with_brute_force(workload):
    for seed in range(40):
        history = generate_history(workload, n_ops=10, n_processes=4, n_keys=1, info_fraction=0.1,
                                   seed=seed)
        assert brute(workload, history) is True, seed
        assert verdict(workload, history) is CheckResult.OK, seed


@pytest.mark.parametrize("workload", WORKLOADS)
def test_a_read_of_a_value_never_written_is_caught(workload):
    caught = 0
    for seed in range(30):
        history = generate_history(workload, n_ops=10, n_processes=4, n_keys=1, seed=seed)
        reads = ok_reads(history)
        if not reads:
            continue
        i = random.Random(seed).choice(reads)
        history[i] = dataclasses.replace(history[i], value="never-written")
        assert brute(workload, history) is False
        assert verdict(workload, history) is CheckResult.ILLEGAL
        caught += 1
    assert caught >= 10


@pytest.mark.parametrize("workload", WORKLOADS)
def test_swapped_reads_get_the_brute_force_verdict(workload):
    flipped = 0
    for seed in range(60):
        history = generate_history(workload, n_ops=12, n_processes=3, n_keys=1, values=3, seed=seed)
        reads = [i for i in ok_reads(history)]
        pairs = [(a, b) for a in reads for b in reads
                 if a < b and history[a].key == history[b].key and history[a].value != history[b].value]
        if not pairs:
            continue
        a, b = random.Random(seed).choice(pairs)
        history[a], history[b] = (dataclasses.replace(history[a], value=history[b].value),
                                  dataclasses.replace(history[b], value=history[a].value))
        expected = brute(workload, history)
        assert (verdict(workload, history) is CheckResult.OK) is expected, seed
        flipped += not expected
    assert flipped >= 3  # the mutation does produce non-linearizable histories


# ---- Hypothesis: arbitrary small histories, fast checker vs brute force ----

VALUES = [None, 0, 1, 2]
STRINGS = ["", "a", "b", "ab", "ba"]


@st.composite
def histories(draw, model_name):
    keys = draw(st.sampled_from([["k"], ["k", "j"]]))
    n = draw(st.integers(1, 7))
    ops = []
    for i in range(n):
        call = draw(st.integers(0, 30))
        pending = draw(st.integers(0, 7)) == 0
        ret = None if pending else call + draw(st.integers(0, 12))
        key = draw(st.sampled_from(keys))
        if model_name == "cas-register":
            kind = draw(st.sampled_from([READ, WRITE, CAS]))
            if kind == READ:
                inp, out = (READ, key, None, None), draw(st.sampled_from(VALUES))
            elif kind == WRITE:
                inp, out = (WRITE, key, draw(st.sampled_from(VALUES[1:])), None), None
            else:
                inp = (CAS, key, draw(st.sampled_from(VALUES)), draw(st.sampled_from(VALUES[1:])))
                out = draw(st.booleans())
        elif model_name == "porcupine-kv":
            kind = draw(st.sampled_from([READ, WRITE, APPEND]))
            if kind == READ:
                inp, out = (READ, key, None, None), draw(st.sampled_from(STRINGS))
            else:
                inp, out = (kind, key, draw(st.sampled_from(["a", "b"])), None), None
        else:
            if draw(st.booleans()):
                inp, out = (READ, key, None, None), draw(st.sampled_from([None, "a", "b"]))
            else:
                inp = (FENCED_PUT, key, draw(st.sampled_from(["a", "b"])), draw(st.integers(1, 3)))
                out = draw(st.booleans())
        ops.append(Operation(i, inp, call, UNKNOWN if pending else out, ret, i))
    return ops


def agree(model_name, ops):
    model = make_model(model_name)
    fast = check_operations(model, ops)
    assert fast is not CheckResult.UNKNOWN
    assert (fast is CheckResult.OK) is linearizable_bruteforce(model, ops), ops


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@settings(max_examples=2000, **SETTINGS)
@given(histories("cas-register"))
def test_fast_agrees_with_brute_force_on_cas_registers(ops):
    agree("cas-register", ops)


@settings(max_examples=800, **SETTINGS)
@given(histories("porcupine-kv"))
def test_fast_agrees_with_brute_force_on_string_kv(ops):
    agree("porcupine-kv", ops)


@settings(max_examples=800, **SETTINGS)
@given(histories("fenced-register"))
def test_fast_agrees_with_brute_force_on_fenced_registers(ops):
    agree("fenced-register", ops)


def test_brute_force_refuses_big_histories():
    ops = [Operation(i, (READ, None, None, None), i, None, i) for i in range(20)]
    with pytest.raises(ValueError, match="at most"):
        linearizable_bruteforce(make_model("cas-register"), ops)
