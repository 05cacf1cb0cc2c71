"""The list-append and rw-register workloads: op shape, options, registry, checker wiring."""

import random

import pytest

from checkers.elle.txn import history_of
from harness.registry import WORKLOADS
from workloads import txn


def test_registered():
    assert {"list-append", "rw-register"} <= set(WORKLOADS)


@pytest.mark.parametrize("model, write_f", [("list-append", "append"), ("rw-register", "w")])
def test_generator_shape_unique_values_and_key_rotation(model, write_f):
    w = WORKLOADS[model](["127.0.0.1:1"], 4, {"key_count": "3", "max_writes_per_key": "2",
                                               "max_txn_length": "3"})
    rng = random.Random(7)
    ops = [w.generator.next(i % 4, rng) for i in range(200)]
    values = [v for op in ops for f, _, v in op["value"] if f == write_f]
    assert len(values) == len(set(values)) > 50  # unique, and plenty of writes
    assert all(op["f"] == "txn" and 1 <= len(op["value"]) <= 3 for op in ops)
    assert all(f in ("r", write_f) for op in ops for f, _, _ in op["value"])
    per_key = {}
    for op in ops:
        for f, k, _ in op["value"]:
            if f == write_f:
                per_key[k] = per_key.get(k, 0) + 1
    assert max(per_key.values()) <= 2 + 3  # retired after 2 writes (a txn may add a few more)
    assert w.generator.keys_used > 3
    final = w.final_generator()
    reads = [final.next(0, rng) for _ in range(w.generator.keys_used)]
    assert [op["value"] for op in reads] == [[["r", k, None]] for k in range(w.generator.keys_used)]
    assert final.next(0, rng) is None


def read_only_share(options, n=2000):
    w = WORKLOADS["list-append"](["127.0.0.1:1"], 4, options)
    rng = random.Random(3)
    ops = [w.generator.next(i % 4, rng)["value"] for i in range(n)]
    return sum(all(f == "r" for f, _, _ in op) for op in ops) / n


def test_read_only_share():
    # half the transactions read only (they take the node's read path, not the log), and the
    # others, drawn micro-op by micro-op, are read-only now and then too: 1..4 micro-ops at
    # read_fraction 0.5 are all reads with probability (1/2 + 1/4 + 1/8 + 1/16) / 4 = 0.23
    assert 0.57 < read_only_share({}) < 0.67
    assert 0.19 < read_only_share({"read_only_fraction": "0"}) < 0.28
    assert read_only_share({"read_only_fraction": "1"}) == 1.0
    assert read_only_share({"read_only_fraction": "0", "read_fraction": "0"}) == 0.0


@pytest.mark.parametrize("options, match", [
    ({"min_txn_length": 5, "max_txn_length": 2}, "min_txn_length"),
    ({"read_fraction": 1.5}, "at most 1"),
    ({"read_only_fraction": 2}, "read_only_fraction=2.0: must be at most 1"),
    ({"keys": 3}, "no option keys"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        WORKLOADS["list-append"](["127.0.0.1:1"], 2, options)


def test_checker_writes_the_cycle_page_when_invalid(tmp_path):
    w = WORKLOADS["list-append"](["127.0.0.1:1"], 2, {})
    bad = history_of([(0, "ok", [("append", 1, 1)], 0, 1), (1, "ok", [("r", 1, ())], 2, 3)])
    result = w.checkers["elle"](bad, {"run_dir": str(tmp_path)})
    assert result["valid"] is False and result["page"] == txn.CYCLE_PAGE
    assert "<svg" in (tmp_path / txn.CYCLE_PAGE).read_text()
    good = history_of([(0, "ok", [("append", 1, 1)], 0, 1), (1, "ok", [("r", 1, (1,))], 2, 3)])
    assert w.checkers["elle"](good, {"run_dir": str(tmp_path)})["valid"] is True


class FakeClient:
    def __init__(self, result):
        self.result = result
        self.sent = None

    async def txn(self, ops):
        self.sent = ops
        return self.result


def test_client_maps_keys_reads_and_raft_index():
    import asyncio

    from ukehi.client import FAIL, OK, UNKNOWN, Result
    c = txn.TxnClient(["127.0.0.1:1"], 0, 1.0, "la/", [])
    c.client = FakeClient(Result(OK, value={"ops": [["r", "la/3", None], ["append", "la/4", 9]], "index": 12}))
    out = asyncio.run(c.invoke({"f": "txn", "value": [["r", 3, None], ["append", 4, 9]]}))
    assert c.client.sent == [["r", "la/3", None], ["append", "la/4", 9]]
    assert out.type == "ok" and out.value == [["r", 3, []], ["append", 4, 9]] and out.extra == {"raft_index": 12}
    c.client = FakeClient(Result(UNKNOWN, error="timeout"))
    assert asyncio.run(c.invoke({"f": "txn", "value": [["append", 4, 9]]})).type == "info"
    assert asyncio.run(c.invoke({"f": "txn", "value": [["r", 4, None]]})).type == "fail"  # reads change nothing
    c.client = FakeClient(Result(FAIL, error="not_leader"))
    assert asyncio.run(c.invoke({"f": "txn", "value": [["append", 4, 9]]})).type == "fail"
