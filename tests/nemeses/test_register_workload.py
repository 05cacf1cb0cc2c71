"""The register workload's op shape, and the kv model it is checked under (nil and delete)."""

import random

from checkers.history import Op
from checkers.linearizability import check_linearizability
from workloads import register


def drive(workload, workers, n, read_value=lambda w, key: None, seed=3):
    """n ops; every read completes ok (the worker's next op is asked for afterwards)."""
    rng, ops = random.Random(seed), []
    for i in range(n):
        w = i % workers
        op = workload.generator.next(w, rng)
        if op is None:
            break
        if op["f"] == "read":
            workload.generator.memory.read_ok(w, op["key"], read_value(w, op["key"]))
        ops.append((w, op))
    return ops


def test_a_worker_reads_a_key_before_it_mutates_it_again():
    ops = drive(register.make([], 5, {}), 5, 3000)
    last_mutation = {}
    for w, op in ops:
        if op["f"] in ("write", "cas", "delete"):
            assert last_mutation.get((w, op["key"])) in (None, "read"), "mutated twice without a read"
            last_mutation[(w, op["key"])] = op["f"]
        else:
            last_mutation[(w, op["key"])] = "read"


def test_a_failed_read_does_not_count():
    workload = register.make([], 1, {"ops": "write"})
    rng = random.Random(0)
    assert workload.generator.next(0, rng)["f"] == "write"
    # the read fails (never reported as ok): the worker keeps reading
    assert [workload.generator.next(0, rng)["f"] for _ in range(5)] == ["read"] * 5
    workload.generator.memory.read_ok(0, 0, 1)
    assert workload.generator.next(0, rng)["f"] == "write"


def test_reads_outnumber_writes_values_are_unique_and_cas_starts_from_what_was_read():
    ops = [op for _, op in drive(register.make([], 5, {}), 5, 3000, read_value=lambda w, key: 42)]
    fs = [op["f"] for op in ops]
    assert fs.count("read") > fs.count("write") + fs.count("cas") + fs.count("delete")
    written = [op["value"] for op in ops if op["f"] == "write"] + [op["value"][1] for op in ops if op["f"] == "cas"]
    assert len(written) == len(set(written)) and max(written) > 500  # far beyond a handful
    olds = {op["value"][0] for op in ops if op["f"] == "cas"}
    assert olds == {None, 42}  # from nil before a worker read the key, then from what it read


def h(*events):
    return [Op(i, i, p, t, f, key=k, value=v) for i, (p, t, f, k, v) in enumerate(events)]


def test_kv_model_create_if_absent_and_delete_then_cas():
    ok = h((0, "invoke", "cas", 1, [None, 5]), (0, "ok", "cas", 1, [None, 5]),   # create if absent
           (1, "invoke", "read", 1, None), (1, "ok", "read", 1, 5),
           (0, "invoke", "delete", 1, None), (0, "ok", "delete", 1, None),
           (1, "invoke", "read", 1, None), (1, "ok", "read", 1, None),            # nil again
           (0, "invoke", "cas", 1, [None, 6]), (0, "ok", "cas", 1, [None, 6]),   # delete-then-cas
           (1, "invoke", "read", 1, None), (1, "ok", "read", 1, 6))
    assert check_linearizability(ok, "kv")["valid"] is True
    # a cas from nil that succeeds on a present key is not linearizable
    bad = h((0, "invoke", "write", 1, 3), (0, "ok", "write", 1, 3),
            (0, "invoke", "cas", 1, [None, 4]), (0, "ok", "cas", 1, [None, 4]))
    assert check_linearizability(bad, "kv")["valid"] is False
    # a read of a deleted key that returns the old value is a lost delete
    lost = h((0, "invoke", "write", 1, 3), (0, "ok", "write", 1, 3),
             (0, "invoke", "delete", 1, None), (0, "ok", "delete", 1, None),
             (1, "invoke", "read", 1, None), (1, "ok", "read", 1, 3))
    assert check_linearizability(lost, "kv")["valid"] is False
    # a failed cas from nil on an absent key is not linearizable either
    refused = h((0, "invoke", "cas", 1, [None, 4]), (0, "fail", "cas", 1, [None, 4]),
                (1, "invoke", "read", 1, None), (1, "ok", "read", 1, None))
    assert check_linearizability(refused, "kv")["valid"] is True  # a fail did nothing: fine


def test_stale_value_is_distinguishable_with_unique_values():
    """Why unique values: with values from a handful, a stale read can match a newer write."""
    stale = h((0, "invoke", "write", 1, 1), (0, "ok", "write", 1, 1),
              (0, "invoke", "write", 1, 2), (0, "ok", "write", 1, 2),
              (1, "invoke", "read", 1, None), (1, "ok", "read", 1, 1))
    assert check_linearizability(stale, "kv")["valid"] is False
