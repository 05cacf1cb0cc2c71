"""Issue 17, second round of checker speed: the changes must not change what is found.

- Forked processes take partitions from one shared list as they go (``_Claims``): every
  partition is checked exactly once, and the outcomes are those of one process.
- The search fills its memo only from the first backtrack on: the verdicts of brute force,
  the same moves through the set memo and the equal() memo, and the path taken so far in
  the memo once it is switched on.
- The identical-op order constraint is built with a cheaper loop: the same constraint as
  the plain loop (kept here as the reference).
- Checking pauses cyclic garbage collection and restores it.
"""

from __future__ import annotations

import gc
import multiprocessing
import random

import pytest

from checkers import checker as checker_module
from checkers import wgl
from checkers.bruteforce import linearizable_bruteforce
from checkers.checker import _Claims, check_operations, check_operations_verbose
from checkers.generate import generate_history
from checkers.mapping import to_operations
from checkers.model import UNKNOWN, CheckResult, Model, Operation
from checkers.models import CAS, READ, WRITE, make_model


def _random_ops(rng: random.Random, n: int, keys: list, *, pending: float = 0.1) -> list[Operation]:
    ops = []
    t = 0
    for i in range(n):
        t += rng.randrange(3)
        ret = None if rng.random() < pending else t + rng.randrange(1, 12)
        r = rng.random()
        key = rng.choice(keys)
        if r < 0.4:
            inp, out = (READ, key, None, None), rng.choice([None, 1, 2])
        elif r < 0.7:
            inp, out = (WRITE, key, rng.choice([1, 2]), None), None
        else:
            inp, out = (CAS, key, rng.choice([None, 1, 2]), rng.choice([1, 2])), rng.random() < 0.5
        ops.append(Operation(i % 5, inp, t, UNKNOWN if ret is None else out, ret, i))
    return ops


# ---- claims ----

def _take_everything(claims: _Claims, conn) -> None:
    got = []
    while True:
        taken = claims.take()
        if not taken:
            break
        got.append((taken.start, taken.stop))
    conn.send(got)
    conn.close()


def test_processes_taking_claims_at_once_get_every_partition_exactly_once():
    ctx = multiprocessing.get_context("fork")
    n = 5000
    claims = _Claims(ctx, n, 3)
    pipes, procs = [], []
    for _ in range(2):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_take_everything, args=(claims, send))
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    mine = []
    while True:
        taken = claims.take()
        if not taken:
            break
        mine.append((taken.start, taken.stop))
    ranges = mine + [r for receive in pipes for r in receive.recv()]
    for proc in procs:
        proc.join()
    covered = sorted(i for start, stop in ranges for i in range(start, stop))
    assert covered == list(range(n))  # nothing twice, nothing left out
    # guided: big takes first, single partitions at the end (few trips to the lock)
    assert max(stop - start for start, stop in ranges) >= n // 12
    assert min(stop - start for start, stop in ranges) == 1
    assert len(ranges) < n // 10


def test_take_all_leaves_nothing_for_the_others():
    claims = _Claims(multiprocessing.get_context("fork"), 10, 2)
    first = claims.take()
    assert first == range(0, 1)  # 10 // (4 * 2) = 1
    assert claims.take_all() == range(1, 10)
    assert not claims.take() and not claims.take_all()


@pytest.mark.parametrize("n_keys", [7, 1500])
def test_forked_processes_taking_claims_find_what_one_process_finds(n_keys, monkeypatch):
    monkeypatch.setattr(checker_module, "PARALLEL_START_OPS", 50)
    rng = random.Random(n_keys)
    model = make_model("cas-register")
    seen = set()
    for seed in range(4):
        history = generate_history("cas-register", n_ops=3000, n_processes=8, n_keys=n_keys,
                                   info_fraction=0.05, seed=seed)
        ops = to_operations(history, "cas-register")
        if seed % 2:  # reads of values never written, in a few keys
            reads = [i for i, o in enumerate(ops) if o.input[0] == READ and o.output is not UNKNOWN]
            for i in rng.sample(reads, 3):
                o = ops[i]
                ops[i] = Operation(o.client_id, o.input, o.call, "never written", o.return_time, o.index)
        one, info_one = check_operations_verbose(model, ops, 60, workers=1)
        two, info_two = check_operations_verbose(model, ops, 60, workers=2)
        assert one is two
        assert all(p.checked for p in info_two.partitions)
        assert [(p.result, p.outcome.longest, p.outcome.blocked, p.outcome.steps) for p in info_one.partitions] == \
            [(p.result, p.outcome.longest, p.outcome.blocked, p.outcome.steps) for p in info_two.partitions]
        # stopping at the first violation: the same verdict, and no failing key made up
        first = check_operations_verbose(model, ops, 60, workers=2, stop_on_violation=True)
        assert first[0] is one
        failing_one = {i for i, p in enumerate(info_one.partitions) if p.result is CheckResult.ILLEGAL}
        failing_first = {i for i, p in enumerate(first[1].partitions) if p.result is CheckResult.ILLEGAL}
        assert failing_first <= failing_one and (failing_first or one is CheckResult.OK)
        seen.add(one)
    assert seen == {CheckResult.OK, CheckResult.ILLEGAL}


# ---- the memo filled from the first backtrack ----

def test_lazy_memo_search_agrees_with_brute_force_and_with_the_equal_function_path():
    rng = random.Random(71)
    model = make_model("cas-register")
    # the same model with unhashable-memo handling: states compared by equal(), kept in buckets
    by_equal = Model("cas-register", init=model.init, step=model.step, equal=lambda a, b: a == b,
                     partition=model.partition, read_only=model.read_only)
    verdicts = set()
    backtracked = 0
    for _ in range(400):
        ops = _random_ops(rng, rng.randrange(1, 11), ["k"])
        fast = wgl.search(model, ops)
        slow = wgl.search(by_equal, ops)
        assert (fast.result, fast.longest, fast.blocked, fast.steps) == \
            (slow.result, slow.longest, slow.blocked, slow.steps), ops
        assert (fast.result is CheckResult.OK) is linearizable_bruteforce(model, ops), ops
        verdicts.add(fast.result)
        backtracked += fast.cache_size > 0
    assert verdicts == {CheckResult.OK, CheckResult.ILLEGAL}
    assert backtracked > 50  # the memo was switched on in many of them


def test_a_search_that_never_backtracks_keeps_no_memo():
    ops = [Operation(0, (WRITE, "k", i, None), 2 * i, None, 2 * i + 1) for i in range(50)]
    out = wgl.search(make_model("cas-register"), ops)
    assert out.result is CheckResult.OK and out.cache_size == 0


def test_the_memo_switched_on_at_the_first_backtrack_holds_the_path_taken():
    # two concurrent writes then a read of the first one's value: the search lifts the
    # first write, then the second, reaches the read (wrong value), backtracks; every
    # configuration on the path must then be in the memo (not the initial one)
    ops = [Operation(0, (WRITE, "k", 1, None), 0, None, 10),
           Operation(1, (WRITE, "k", 2, None), 1, None, 10),
           Operation(2, (READ, "k", None, None), 11, 1, 12)]
    out = wgl.search(make_model("cas-register"), ops)
    assert out.result is CheckResult.OK
    assert out.cache_size >= 2


# ---- the identical-op constraint ----

def _reference_waits_for_done(lay: wgl._Layout) -> list[int]:
    """The plain loop the layout used before (setdefault per op, slice of the last 32)."""
    m = lay.m
    rets = {p: None for p in range(m)}
    # each op's return time rank, from the entries in time order
    order = lay.order
    rank = {e: i for i, e in enumerate(order)}
    for p in range(m):
        rets[p] = rank[lay.match[p]] if lay.match[p] >= 0 else None
    waits = [-1] * m
    members: dict = {}
    for p in range(m):
        if lay.cid[p] < 0:
            continue
        group = members.setdefault((lay.inputs[p], lay.outputs[p]), [])
        if group:
            for b in reversed(group[-wgl._LOOK_BACK:]):
                if rets[b] <= rets[p]:
                    waits[p] = lay.cid[b]
                    break
        group.append(p)
    return waits


def test_identical_ops_wait_for_the_same_ops_as_with_the_plain_loop():
    rng = random.Random(5)
    model = make_model("cas-register")
    constrained = 0
    for _ in range(300):
        ops = _random_ops(rng, rng.randrange(1, 80), ["k"], pending=0.05)
        lay = wgl._layout(model, ops)
        if lay is None:
            continue
        want = _reference_waits_for_done(lay)
        assert lay.waits_for_done == want
        assert [bool(g) for g in lay.guard] == [w >= 0 or bool(wf) for w, wf in zip(want, lay.waits_for)]
        constrained += sum(w >= 0 for w in want)
    assert constrained > 100


# ---- garbage collection ----

@pytest.mark.parametrize("enabled", [True, False])
def test_checking_pauses_garbage_collection_and_restores_it(enabled):
    seen = []
    base = make_model("cas-register")

    def step(state, inp, out):
        seen.append(gc.isenabled())
        return base.step(state, inp, out)

    model = Model("custom", init=base.init, step=step, partition=base.partition)
    ops = [Operation(0, (WRITE, "k", 1, None), 0, None, 1), Operation(1, (READ, "k", None, None), 2, 1, 3)]
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert check_operations(model, ops, workers=1) is CheckResult.OK
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen and not any(seen)
