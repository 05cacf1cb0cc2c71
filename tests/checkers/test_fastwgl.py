"""Issue 17: the compiled search loop (checkers/_fastwgl.c) finds exactly what the Python one does.

Every partition is searched twice, once with ``checkers._fastwgl`` and once with the
pure-Python loop (what ``UKEHI_PURE_PYTHON=1`` or an install without a C compiler runs),
and the outcomes must be equal field by field: verdict, longest linearizable prefix, the
op that blocked it, search steps and memo size.  Histories: generated ones of every
shipped model (linearizable by construction, with info ops), the same with outputs
changed (mostly illegal), random small ones with pending ops, a model the compiled loop
does not inline (its step is called back), a tiny memo that is dropped again and again,
and searches stopped by the clock or a stop flag.  Partitions too wide for the compiled
loop's 64-bit words fall back to Python.

Skipped where the extension is not built or UKEHI_PURE_PYTHON is set.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers import wgl
from checkers.generate import generate_history
from checkers.mapping import to_operations
from checkers.model import UNKNOWN, CheckResult, Model, Operation
from checkers.models import APPEND, CAS, FENCED_PUT, READ, WRITE, make_model, register_step

compiled = wgl.compiled_search()
pytestmark = pytest.mark.skipif(compiled is None, reason="checkers._fastwgl not built, or UKEHI_PURE_PYTHON set")


def _drive(model: Model, ops: list[Operation], max_cache: int, *, use_compiled: bool,
           stop_after: int | None = None) -> tuple[Any, bool]:
    """(outcome fields, whether the compiled loop ran) of one partition's search; with
    ``stop_after``, abandoned after that many pauses (as a deadline or stop flag does)."""
    saved = wgl._compiled
    wgl._compiled = compiled if use_compiled else False
    ran_compiled = []
    real = wgl._search_compiled

    def spy(*args: Any) -> Any:
        ran_compiled.append(True)
        return real(*args)

    wgl._search_compiled = spy
    try:
        gen = wgl.searcher(model, ops, max_cache=max_cache)
        pauses = 0
        try:
            while True:
                next(gen)
                pauses += 1
                if stop_after is not None and pauses >= stop_after:
                    out = wgl.abandon(gen)
                    break
        except StopIteration as done:
            out = done.value
    finally:
        wgl._compiled = saved
        wgl._search_compiled = real
    return (out.result, out.longest, out.blocked, out.steps, out.cache_size), bool(ran_compiled)


# Searches are bounded (a mutated history can take exponential time): past this many pauses
# both are abandoned, and the abandoned outcomes must agree too.
BOUND = 40


def _same(model: Model, ops: list[Operation], max_cache: int = wgl.DEFAULT_MAX_CACHE,
          stop_after: int | None = BOUND) -> tuple[Any, bool]:
    fast, ran = _drive(model, ops, max_cache, use_compiled=True, stop_after=stop_after)
    slow, ran_slow = _drive(model, ops, max_cache, use_compiled=False, stop_after=stop_after)
    assert not ran_slow
    assert fast == slow
    return fast, ran


def _partitions(model: Model, ops: list[Operation]) -> list[list[Operation]]:
    return [p for p in model.partition(ops) if p]


def _mutate(rng: random.Random, ops: list[Operation], rate: float) -> list[Operation]:
    """Change some read outputs and cas verdicts: most such histories are not linearizable."""
    out = []
    for op in ops:
        output = op.output
        if output is not UNKNOWN and rng.random() < rate:
            kind = op.input[0]
            if kind == READ:
                output = rng.choice([None, 0, 1, 2, 3, "x1", "y2", output])
            elif kind == CAS:
                output = not output
        out.append(Operation(op.client_id, op.input, op.call, output, op.return_time, op.index))
    return out


WORKLOADS = [("register", "register"), ("cas-register", "cas-register"), ("kv", "kv"),
             ("porcupine-kv", "porcupine-kv"), ("fenced", "fenced-register")]


@pytest.mark.parametrize("workload,model_name", WORKLOADS)
def test_generated_histories_give_the_same_outcomes(workload: str, model_name: str) -> None:
    rng = random.Random(17)
    model = make_model(model_name)
    results = {CheckResult.OK: 0, CheckResult.ILLEGAL: 0, CheckResult.UNKNOWN: 0}
    compiled_runs = 0
    for seed in range(25):
        history = generate_history(workload, n_ops=rng.randrange(20, 300), n_processes=rng.choice([2, 5, 10]),
                                   n_keys=rng.choice([1, 3]), info_fraction=rng.choice([0.0, 0.1, 0.3]),
                                   seed=seed)
        ops = to_operations(history, model_name)
        for bad in (False, True):
            checked = _mutate(rng, ops, 0.05) if bad else ops
            for part in _partitions(model, checked):
                (result, *_), ran = _same(model, part)
                results[result] += 1
                compiled_runs += ran
    assert results[CheckResult.OK] > 20 and results[CheckResult.ILLEGAL] > 10
    assert compiled_runs > 40


def _random_ops(rng: random.Random, n: int, *, pending: float, values: int = 3) -> list[Operation]:
    ops = []
    t = 0
    for i in range(n):
        t += rng.randrange(3)
        ret = None if rng.random() < pending else t + rng.randrange(0, 12)
        r = rng.random()
        if r < 0.4:
            inp, out = (READ, "k", None, None), rng.choice([None, *range(values), UNKNOWN])
        elif r < 0.7:
            inp, out = (WRITE, "k", rng.randrange(values), None), None
        else:
            inp, out = (CAS, "k", rng.choice([None, *range(values)]), rng.randrange(values)), \
                rng.choice([True, False, UNKNOWN])
        ops.append(Operation(i % 6, inp, t, UNKNOWN if ret is None else out, ret, i))
    return ops


def test_random_histories_with_pending_ops_and_a_tiny_memo() -> None:
    rng = random.Random(5)
    model = make_model("cas-register")
    results = {CheckResult.OK: 0, CheckResult.ILLEGAL: 0, CheckResult.UNKNOWN: 0}
    backtracked = compiled_runs = 0
    for _ in range(400):
        ops = _random_ops(rng, rng.randrange(1, 40), pending=rng.choice([0.0, 0.1, 0.3]))
        (result, longest, blocked, steps, cache_size), ran = _same(model, ops)
        compiled_runs += ran  # not when nothing is left to search (only reads of unknown value)
        results[result] += 1
        backtracked += cache_size > 0
        # a memo dropped every CHECK_EVERY steps (a max_cache of 2) changes the steps alike
        _same(model, ops, max_cache=2)
    assert results[CheckResult.OK] > 50 and results[CheckResult.ILLEGAL] > 50
    assert backtracked > 50 and compiled_runs > 350


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.booleans(), st.sampled_from(["r", "w", "c"]),
                          st.integers(0, 2), st.integers(0, 2), st.sampled_from([0, 1, 2, None, True, False])),
                min_size=1, max_size=25))
def test_any_small_history_gives_the_same_outcome(rows: list[tuple]) -> None:
    ops = []
    t = 0
    for i, (gap, length, pending, kind, a, b, out) in enumerate(rows):
        t += gap
        if kind == "r":
            inp = (READ, "k", None, None)
        elif kind == "w":
            inp, out = (WRITE, "k", a, None), None
        else:
            inp, out = (CAS, "k", a, b), bool(out)
        ops.append(Operation(i, inp, t, UNKNOWN if pending else out, None if pending else t + length, i))
    _same(make_model("cas-register"), ops)


def _counting_step(calls: list[int]) -> Any:
    def step(state: Any, inp: tuple, output: Any) -> Any:
        calls.append(1)
        return register_step(state, inp, output)
    return step


def test_a_model_whose_step_is_not_inlined_is_called_back_alike() -> None:
    """A model of one's own: the compiled loop calls its step, as often as the Python loop."""
    rng = random.Random(9)
    compiled_runs = 0
    for _ in range(150):
        ops = _random_ops(rng, rng.randrange(1, 30), pending=0.1)
        fast_calls: list[int] = []
        slow_calls: list[int] = []
        base = make_model("cas-register")
        fast_model = Model("mine", init=base.init, step=_counting_step(fast_calls), read_only=base.read_only)
        slow_model = Model("mine", init=base.init, step=_counting_step(slow_calls), read_only=base.read_only)
        fast, ran = _drive(fast_model, ops, wgl.DEFAULT_MAX_CACHE, use_compiled=True, stop_after=BOUND)
        slow, _ = _drive(slow_model, ops, wgl.DEFAULT_MAX_CACHE, use_compiled=False, stop_after=BOUND)
        assert fast == slow
        assert len(fast_calls) == len(slow_calls)
        compiled_runs += ran  # not when nothing is left to search (only reads of unknown value)
    assert compiled_runs > 120


def test_a_step_that_returns_a_list_or_raises() -> None:
    rng = random.Random(3)
    ops = _random_ops(rng, 30, pending=0.1)
    listing = Model("listing", init=lambda: None, step=lambda s, i, o: list(register_step(s, i, o)))
    _same(listing, ops)
    # a read_only of one's own: the flags and the filter in Python, the fields in C
    own_reads = Model("own-reads", init=lambda: None, step=register_step, read_only=lambda i: i[0] == READ)
    assert _same(own_reads, ops)[0] == _same(make_model("cas-register"), ops)[0]
    bad = [Operation(0, (WRITE, "k", 1, None), 0, None, 1),
           Operation(1, (FENCED_PUT, "k", 1, 2), 2, True, 3)]
    for use in (True, False):
        with pytest.raises(ValueError, match="cannot apply"):
            _drive(make_model("cas-register"), bad, 10, use_compiled=use)
    wrong = Model("wrong", init=lambda: None, step=lambda s, i, o: (True, s, 1))
    for use in (True, False):
        with pytest.raises(ValueError):
            _drive(wrong, bad[:1], 10, use_compiled=use)


def _adversarial(width: int) -> list[Operation]:
    """``width`` overlapping writes, then a read of a value never written: proving it
    illegal tries every subset of the writes."""
    ops = [Operation(i, (WRITE, "k", i, None), i, None, 1000 + i) for i in range(width)]
    ops.append(Operation(width, (READ, "k", None, None), 2000, -1, 2001))
    return ops


@pytest.mark.parametrize("stop_after", [1, 2, 7])
def test_an_abandoned_search_reports_the_same_prefix_and_steps(stop_after: int) -> None:
    (result, longest, blocked, steps, _), ran = _same(make_model("cas-register"), _adversarial(20),
                                                      stop_after=stop_after)
    assert ran and result is CheckResult.UNKNOWN
    assert steps == stop_after * wgl.CHECK_EVERY
    assert longest and blocked == 20


def test_the_time_limit_and_stop_flag_paths_end_unknown_alike() -> None:
    class Flag:
        def __init__(self, after: int) -> None:
            self.calls, self.after = 0, after

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > self.after

    model = make_model("cas-register")
    outs = []
    for use in (True, False):
        saved = wgl._compiled
        wgl._compiled = compiled if use else False
        try:
            out = wgl.search(model, _adversarial(22), stop=Flag(3))
            timed = wgl.search(model, _adversarial(22), deadline=0.0)
        finally:
            wgl._compiled = saved
        assert out.result is CheckResult.UNKNOWN and timed.result is CheckResult.UNKNOWN
        assert timed.steps == wgl.CHECK_EVERY
        outs.append((out.longest, out.blocked, out.steps, out.cache_size))
    assert outs[0] == outs[1]


def test_partitions_too_wide_for_64_bit_words_fall_back_to_python() -> None:
    model = make_model("cas-register")
    # 70 pending writes, then reads of what each wrote
    many_pending = [Operation(i, (WRITE, "k", i, None), i, UNKNOWN, None) for i in range(70)]
    many_pending += [Operation(100 + i, (READ, "k", None, None), 100 + i, i, 101 + i) for i in range(0, 70, 7)]
    # one op spanning 80 later ones (its window bit would pass 63)
    wide = [Operation(0, (WRITE, "k", 0, None), 0, None, 500)]
    wide += [Operation(1 + i % 3, (WRITE, "k", i, None), 2 + 2 * i, None, 3 + 2 * i) for i in range(80)]
    wide.append(Operation(9, (READ, "k", None, None), 600, 0, 601))
    for ops in (many_pending, wide, _mutate(random.Random(1), wide, 1.0)):
        (result, *_), ran = _same(model, ops)
        assert not ran and result is not CheckResult.UNKNOWN
    # just inside the words: 64 pending ops, and a window of 63 bits
    (result, *_), ran = _same(model, many_pending[:64] + many_pending[70:])
    assert ran
    narrow = [Operation(0, (WRITE, "k", 0, None), 0, None, 200)]
    narrow += [Operation(1 + i % 3, (WRITE, "k", i, None), 2 + 2 * i, None, 3 + 2 * i) for i in range(63)]
    narrow.append(Operation(9, (READ, "k", None, None), 300, 0, 301))
    (result, *_), ran = _same(model, narrow)
    assert ran and result is CheckResult.OK


def test_append_states_and_a_model_with_equal_use_the_right_loop() -> None:
    rng = random.Random(11)
    kv = make_model("porcupine-kv")
    compiled_runs = 0
    for _ in range(100):
        ops, t = [], 0
        for i in range(rng.randrange(1, 25)):
            t += rng.randrange(3)
            kind = rng.choice([READ, WRITE, APPEND])
            value = rng.choice(["a", "b", "ab", "ba", ""])
            out = value if kind == READ else None
            ret = None if rng.random() < 0.1 else t + rng.randrange(8)
            inp = (kind, "k", None if kind == READ else value, None)
            ops.append(Operation(i % 4, inp, t, UNKNOWN if ret is None else out, ret, i))
        (_, *_), ran = _same(kv, ops)
        compiled_runs += ran
    assert compiled_runs > 80
    # a model with equal(): only the Python loop, which the compiled one must not take over
    base = make_model("cas-register")
    by_equal = Model("by-equal", init=base.init, step=base.step, equal=lambda a, b: a == b, read_only=base.read_only)
    (_, *_), ran = _same(by_equal, _random_ops(rng, 20, pending=0.1))
    assert not ran


def test_the_generic_api_agrees_on_a_large_history() -> None:
    """The benchmark's shape (20 processes, 5% info ops) on 10 keys, partition by partition."""
    model = make_model("cas-register")
    history = generate_history("cas-register", n_ops=10_000, n_processes=20, n_keys=10, info_fraction=0.05, seed=1)
    ops = to_operations(history, "cas-register")
    for part in _partitions(model, ops):
        (result, *_), ran = _same(model, part)
        assert ran and result is CheckResult.OK


def test_fields_are_read_from_the_slots_as_attributes_would_be() -> None:
    """The layout reads the ops' fields in C when they are Operations, in Python otherwise:
    the same lists, and the same outcome for look-alike ops that are not Operations."""
    rng = random.Random(4)
    ops = _random_ops(rng, 60, pending=0.2)
    got = compiled.fields(ops, Operation)
    assert got == ([op.input for op in ops], [op.output for op in ops], [op.call for op in ops],
                   [op.return_time for op in ops])
    assert compiled.fields((), Operation) == ([], [], [], [])
    look_alikes = [SimpleNamespace(client_id=op.client_id, input=op.input, call=op.call, output=op.output,
                                   return_time=op.return_time, index=op.index) for op in ops]
    assert compiled.fields(look_alikes, Operation) is None
    assert compiled.fields(ops[:3] + look_alikes[3:], Operation) is None
    model = make_model("cas-register")
    assert _same(model, look_alikes)[0] == _same(model, ops)[0]


def test_read_fields_leave_out_the_reads_of_unknown_value_as_python_does() -> None:
    rng = random.Random(8)
    for pending in (0.0, 0.3):
        ops = _random_ops(rng, 80, pending=pending)
        kept, inputs, outputs, calls, rets, reads = compiled.read_fields(ops, Operation, READ, UNKNOWN)
        want = [p for p, op in enumerate(ops) if not (op.input[0] == READ and op.output is UNKNOWN)]
        assert (kept if kept is not None else list(range(len(ops)))) == want
        assert (kept is None) == (len(want) == len(ops))
        assert inputs == [ops[p].input for p in want] and outputs == [ops[p].output for p in want]
        assert calls == [ops[p].call for p in want] and rets == [ops[p].return_time for p in want]
        assert reads == [ops[p].input[0] == READ for p in want]
    # inputs that are not tuples are indexed as Python would (and fail alike)
    odd = [Operation(0, [READ, "k", None, None], 0, UNKNOWN, 1), Operation(1, [WRITE, "k", 1, None], 0, None, 2)]
    assert compiled.read_fields(odd, Operation, READ, UNKNOWN)[0] == [1]
    with pytest.raises(TypeError):
        compiled.read_fields([Operation(0, None, 0, None, 1)], Operation, READ, UNKNOWN)
