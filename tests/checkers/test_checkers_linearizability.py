"""The WGL checker on hand-made histories whose verdicts are worked out in comments."""

import time

import pytest

from checkers.checker import (check_events, check_events_verbose, check_operations,
                              check_operations_verbose)
from checkers.generate import generate_history
from checkers.history import HistoryError, Op
from checkers.linearizability import check_linearizability
from checkers.mapping import to_operations
from checkers.model import UNKNOWN, CheckResult, Event, Model, Operation
from checkers.models import CAS, READ, WRITE, make_model, register_step

R = make_model("cas-register")


def op(client, inp, call, out, ret):
    return Operation(client, inp, call, out, ret)


def w(v, key=None):
    return (WRITE, key, v, None)


def r(key=None):
    return (READ, key, None, None)


def test_sequential_and_concurrent_histories():
    # w1 [0,10], then r->1 [20,30]: fine; r->0 would be stale (0 never written).
    assert check_operations(R, [op(0, w(1), 0, None, 10), op(1, r(), 20, 1, 30)]) is CheckResult.OK
    assert check_operations(R, [op(0, w(1), 0, None, 10), op(1, r(), 20, 0, 30)]) is CheckResult.ILLEGAL
    # a read overlapping the write may see the old value (None) or the new one
    for seen in (None, 1):
        assert check_operations(R, [op(0, w(1), 0, None, 10), op(1, r(), 5, seen, 15)]) is CheckResult.OK


def test_new_old_inversion_is_caught():
    # w1 overlaps two sequential reads: the first sees 1, the second (later) sees None again.
    ops = [op(0, w(1), 0, None, 100), op(1, r(), 10, 1, 20), op(2, r(), 30, None, 40)]
    assert check_operations(R, ops) is CheckResult.ILLEGAL
    # swapped: old then new is linearizable
    ops = [op(0, w(1), 0, None, 100), op(1, r(), 10, None, 20), op(2, r(), 30, 1, 40)]
    assert check_operations(R, ops) is CheckResult.OK


def test_equal_timestamps_count_as_overlapping():
    # the read is called at the instant the write returns: either order is allowed
    assert check_operations(R, [op(0, w(1), 0, None, 10), op(1, r(), 10, None, 20)]) is CheckResult.OK


def test_pending_op_may_take_effect_late_or_never():
    pending = op(0, w(1), 0, UNKNOWN, None)
    assert check_operations(R, [pending, op(1, r(), 50, None, 60)]) is CheckResult.OK      # never
    assert check_operations(R, [pending, op(1, r(), 50, 1, 60)]) is CheckResult.OK         # took effect
    # ...but not before it was invoked
    early = [op(1, r(), 0, 1, 5), op(0, w(1), 10, UNKNOWN, None)]
    assert check_operations(R, early) is CheckResult.ILLEGAL
    # and once seen it cannot be undone
    late = [pending, op(1, r(), 50, 1, 60), op(2, r(), 70, None, 80)]
    assert check_operations(R, late) is CheckResult.ILLEGAL


def test_info_ops_from_a_history_are_pending():
    h = [Op(0, 0, 0, "invoke", "write", value=1), Op(1, 1, 0, "info", "write", value=1),
         Op(2, 2, 1, "invoke", "read"), Op(3, 3, 1, "ok", "read", value=1),
         Op(4, 4, 2, "invoke", "read"), Op(5, 5, 2, "ok", "read", value=1)]
    assert check_linearizability(h, "cas-register")["valid"] is True
    h[3] = Op(3, 3, 1, "ok", "read", value=2)  # 2 was never written
    assert check_linearizability(h, "cas-register")["valid"] is False


def test_partitions_are_checked_per_key():
    # key a is fine; key b reads a value written only to a
    ops = [op(0, w(1, "a"), 0, None, 10), op(1, r("a"), 20, 1, 30), op(2, r("b"), 20, 1, 30)]
    result, info = check_operations_verbose(R, ops)
    assert result is CheckResult.ILLEGAL
    by_key = {p.operations[0].input[1]: p.result for p in info.partitions}
    assert by_key == {"a": CheckResult.OK, "b": CheckResult.ILLEGAL}


def test_verbose_reports_the_longest_prefix_and_the_blocked_op():
    ops = [op(0, w(1), 0, None, 10), op(1, w(2), 20, None, 30), op(2, r(), 40, 1, 50)]
    result, info = check_operations_verbose(R, ops)
    assert result is CheckResult.ILLEGAL
    (part,) = info.partitions
    assert part.outcome.longest == [0, 1]  # w1, w2 linearize; the read of 1 cannot follow
    assert part.outcome.blocked == 2
    assert info.partial_linearizations() == [[[0, 1]]]


def test_check_events_pairs_calls_and_returns():
    events = [Event(0, "call", w(1), 0), Event(1, "call", r(), 1), Event(1, "return", 1, 1),
              Event(0, "return", None, 0), Event(2, "call", r(), 2), Event(2, "return", None, 2)]
    # read of None after both the write returned: stale
    assert check_events(R, events) is CheckResult.ILLEGAL
    events[-1] = Event(2, "return", 1, 2)
    assert check_events(R, events) is CheckResult.OK
    # a call without a return is pending
    result, info = check_events_verbose(R, [Event(0, "call", w(1), 0), Event(1, "call", r(), 1),
                                            Event(1, "return", 1, 1)])
    assert result is CheckResult.OK and info.partitions[0].operations[0].pending
    with pytest.raises(ValueError, match="no earlier call"):
        check_events(R, [Event(0, "return", None, 7)])


def test_unhashable_states_use_the_equal_function():
    # states as lists (unhashable): the memo falls back to the model's equal()
    def step(state, inp, out):
        ok, new = register_step(state[0], inp, out)
        return ok, [new]
    m = Model("register", init=lambda: [None], step=step, equal=lambda a, b: a == b)
    ops = [op(0, w(1), 0, None, 100), op(1, r(), 10, 1, 20), op(2, r(), 30, None, 40)]
    assert check_operations(m, ops) is CheckResult.ILLEGAL
    assert check_operations(m, ops[:2]) is CheckResult.OK


def adversarial(n: int = 24) -> list[Operation]:
    """n overlapping writes, then a read of a value never written: proving it illegal
    means trying every subset of the writes, far beyond any small time budget."""
    writes = [op(i, w(i), i, None, 1000 + i) for i in range(n)]
    return writes + [op(n, r(), 2000, 999, 2001)]


def test_time_budget_answers_unknown_instead_of_running_on():
    started = time.monotonic()
    assert check_operations(R, adversarial(), timeout=0.3) is CheckResult.UNKNOWN
    assert time.monotonic() - started < 5


def test_first_violation_stops_the_whole_check():
    # a hard partition that would run for ages and an easy illegal one: illegal, quickly
    hard = [Operation(o.client_id, (o.input[0], "hard", o.input[2], o.input[3]), o.call, o.output,
                      o.return_time) for o in adversarial()]
    easy = [op(100, w(1, "easy"), 0, None, 10), op(101, r("easy"), 20, 5, 30)]
    for workers in (1, 2):
        started = time.monotonic()
        assert check_operations(R, hard + easy, timeout=60, workers=workers) is CheckResult.ILLEGAL
        assert time.monotonic() - started < 20


def test_worker_processes_agree_with_in_process():
    history = generate_history("cas-register", n_ops=3000, n_processes=10, n_keys=8, seed=5)
    ops = to_operations(history, "cas-register")
    assert check_operations(R, ops, workers=2) is CheckResult.OK
    bad = list(ops)
    i = next(i for i, o in enumerate(bad) if o.input[0] == READ and not o.pending)
    o = bad[i]
    bad[i] = Operation(o.client_id, o.input, o.call, "never-written", o.return_time, o.index)
    assert check_operations(R, bad, workers=2) is CheckResult.ILLEGAL
    assert check_operations(R, bad, workers=1) is CheckResult.ILLEGAL


def test_a_tiny_memo_cap_changes_speed_not_verdicts():
    history = generate_history("cas-register", n_ops=400, n_processes=8, n_keys=1, info_fraction=0.1,
                               seed=11)
    ops = to_operations(history, "cas-register")
    assert check_operations(R, ops, max_cache=10) is check_operations(R, ops) is CheckResult.OK


def test_history_mapping_errors_name_the_op():
    h = [Op(0, 0, 0, "invoke", "write", value=1), Op(1, 1, 0, "invoke", "read")]
    with pytest.raises(HistoryError, match="op index 1 .*still open"):
        to_operations(h, "cas-register")
    with pytest.raises(HistoryError, match="no earlier invocation"):
        to_operations([Op(0, 0, 0, "ok", "read", value=1)], "cas-register")
    with pytest.raises(HistoryError, match="has no operation 'cas'"):
        to_operations([Op(0, 0, 0, "invoke", "cas", value=(1, 2))], "register")
    with pytest.raises(HistoryError, match=r"needs a value \[old new\]"):
        to_operations([Op(0, 0, 0, "invoke", "cas", value=1)], "cas-register")


def test_returns_before_calls_are_rejected():
    with pytest.raises(ValueError, match="before it is called"):
        check_operations(R, [op(0, w(1), 10, None, 5)])


def test_cas_history_with_failed_compare():
    # cas 0->2 returned false while the register held 1: legal; cas 1->2 false: not
    ops = [op(0, w(1), 0, None, 10), op(1, (CAS, None, 0, 2), 20, False, 30)]
    assert check_operations(R, ops) is CheckResult.OK
    ops[1] = op(1, (CAS, None, 1, 2), 20, False, 30)
    assert check_operations(R, ops) is CheckResult.ILLEGAL


def test_many_identical_pending_writes_are_tried_once_each_not_in_every_order():
    # 30 timed-out "write 1"s and "write 2"s then reads alternating 1, 2, 1, 2...:
    # linearizable (each read is explained by one more pending write), and the
    # search must not try the 2^60 subsets of interchangeable pending writes.
    ops = [op(i, w(1 + i % 2), i, UNKNOWN, None) for i in range(60)]
    ops += [op(100 + j, r(), 100 + 10 * j, 1 + j % 2, 105 + 10 * j) for j in range(30)]
    started = time.monotonic()
    assert check_operations(R, ops, timeout=20) is CheckResult.OK
    # one read more than there are pending writes of its value cannot be explained
    ops += [op(200 + j, r(), 500 + 10 * j, 1 + j % 2, 505 + 10 * j) for j in range(32)]
    assert check_operations(R, ops, timeout=20) is CheckResult.ILLEGAL
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("workers", [1, 2])
def test_budget_running_out_with_partitions_never_started_is_unknown(workers):
    ops = []
    for k in range(30):
        ops += [Operation(o.client_id, (o.input[0], k, o.input[2], o.input[3]), o.call, o.output,
                          o.return_time) for o in adversarial()]
    started = time.monotonic()
    # a budget this small runs out during the first round of slices (in-process, and in
    # each forked process, which start at once)
    result, info = check_operations_verbose(R, ops, timeout=0.002, workers=workers)
    assert result is CheckResult.UNKNOWN
    assert time.monotonic() - started < 10
    assert any(not p.checked for p in info.partitions)  # some never got a turn


def test_the_package_exports_the_porcupine_shaped_api():
    import checkers
    for name in checkers.__all__:
        assert getattr(checkers, name) is not None
    assert checkers.check_operations is check_operations
    with pytest.raises(AttributeError):
        checkers.no_such_thing  # noqa: B018


def test_identical_ops_keep_their_freedom_when_one_interval_nests_in_the_other():
    # a = write 1 over [0, 100] contains b = write 1 over [10, 20]; then write 2, then read 1:
    # only a late a explains the read, so a must not be forced before b.
    ops = [op(0, w(1), 0, None, 100), op(1, w(1), 10, None, 20), op(2, w(2), 30, None, 40),
           op(3, r(), 50, 1, 60)]
    assert check_operations(R, ops) is CheckResult.OK
    # once both writes of 1 end before write 2 begins, the read of 1 is stale
    ops[0] = op(0, w(1), 0, None, 15)
    assert check_operations(R, ops) is CheckResult.ILLEGAL
