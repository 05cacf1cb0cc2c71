"""list-append and rw-register on a sharded cluster (issue 15): each transaction's keys sit in
one shard (a sharded node refuses a transaction across shards), every shard gets
transactions, the harness tells the workload the shard count, and an unsharded run's
generator draws exactly what it drew before sharding existed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from harness.sharding import SHARDED_TXN_WORKLOADS, SHARDED_WORKLOADS, sharded_workload_options
from harness.spec import SpecError
from ukehi.shardmap import MAX_SHARDS, shard_of
from workloads import list_append, rw_register

MODELS = {"list-append": list_append, "rw-register": rw_register}
ROOT = os.geteuid() == 0


def ops_of(module, options, *, seed: int, count: int, workers: int = 10) -> tuple[list[dict], list[dict]]:
    """``count`` main-phase ops and then the whole final phase, drawn as the interpreter does
    (one rng for every worker)."""
    workload = module.make([], workers, options)
    rng = random.Random(seed)
    main = [workload.generator.next(i % workers, rng) for i in range(count)]
    final_gen = workload.final_generator()
    final = []
    while (op := final_gen.next(0, rng)) is not None:
        final.append(op)
    return main, final


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("shards", [1, 3, 8, 16])
def test_every_transaction_stays_in_one_shard_and_every_shard_is_used(model, shards):
    module = MODELS[model]
    # few writes per key: keys retire often, so fresh keys are drawn for every shard many times
    main, final = ops_of(module, {"shards": shards, "max_writes_per_key": 3, "max_txn_length": 6},
                         seed=5, count=3000)
    per_shard: dict[int, int] = {}
    written: set[int] = set()
    for op in main:
        keys = {k for _, k, _ in op["value"]}
        homes = {shard_of(module.key_name(k), shards) for k in keys}
        assert len(homes) == 1, op
        assert op["key"] in keys  # the key the checkers place the transaction by
        home = homes.pop()
        per_shard[home] = per_shard.get(home, 0) + 1
        written |= {k for f, k, _ in op["value"] if f != "r"}
    assert set(per_shard) == set(range(shards))
    # shards are drawn uniformly: none gets less than half its share
    assert min(per_shard.values()) > len(main) / shards / 2, per_shard
    # many keys retired and were replaced in their own shard, and the final phase reads every
    # key a transaction touched
    assert len(written) > 3 * shards * 8
    final_keys = [op["value"][0][1] for op in final]
    assert all(op["value"] == [["r", op["key"], None]] for op in final)
    assert {k for op in main for _, k, _ in op["value"]} <= set(final_keys)
    assert len(final_keys) == len(set(final_keys))


def test_the_wire_key_is_what_the_client_sends():
    assert list_append.key_name(7) == "la/7" and rw_register.key_name(7) == "rw/7"


def test_a_sharded_client_sends_one_shards_keys():
    """The client turns history keys into wire keys with the same key_name the generator
    placed them by, so the node sees a transaction inside one shard."""
    import asyncio

    from workloads import txn

    sent = []

    class Recorder:
        async def txn(self, mops):
            sent.append(mops)

            class Result:
                ok, failed, error = True, False, None
                value = {"ops": [[f, k, [] if f == "r" else v] for f, k, v in mops]}
            return Result()

    client = txn.TxnClient.__new__(txn.TxnClient)
    client.client, client.prefix, client.empty_read = Recorder(), txn.PREFIXES["list-append"], []
    main, _ = ops_of(list_append, {"shards": 8}, seed=2, count=50)
    for op in main:
        outcome = asyncio.run(client.invoke(op))
        assert outcome.type == "ok"
    for mops in sent:
        assert len({shard_of(k, 8) for _, k, _ in mops}) == 1 and all(k.startswith("la/") for _, k, _ in mops)


# sha256 of the ops (main and final) drawn by `ops_of` *before* sharding existed
# (workloads/txn.py at commit 2fa0020): an unsharded run must draw the very same ops.
UNSHARDED_DIGESTS = {
    ("list-append", 1, ()): "68a26b0ff981efe3098d960fca8bd361d69abca085de6d8c20d36b3ad182690c",
    ("list-append", 7, (("key_count", 3), ("max_txn_length", 6), ("max_writes_per_key", 4))):
        "5d292c5d295c3c3be240a87c944f5ebf394348367e8fc879263c251526dd09ea",
    ("rw-register", 1, ()): "ae111d3927c1d3da9e4423d51f586ad0b4a7011a24cae10c55797ba47cfbe51d",
    ("rw-register", 7, (("key_count", 3), ("max_txn_length", 6), ("max_writes_per_key", 4))):
        "e82be6e30abcdabe49e31343a8a3c8e40353bd4435825668bb4f49c62eae7476",
}


@pytest.mark.parametrize("case", sorted(UNSHARDED_DIGESTS))
def test_unsharded_generation_is_unchanged(case):
    model, seed, options = case
    main, final = ops_of(MODELS[model], dict(options), seed=seed, count=400)
    assert all("key" not in op for op in main)  # no shard, no key on a main-phase transaction
    digest = hashlib.sha256(json.dumps(main + final, sort_keys=True).encode()).hexdigest()
    assert digest == UNSHARDED_DIGESTS[case]


def test_the_harness_tells_a_sharded_transactional_workload_the_shard_count():
    assert set(SHARDED_TXN_WORKLOADS) <= set(SHARDED_WORKLOADS)
    sharded = {"shards": 8, "replication_factor": 3}
    for workload in SHARDED_TXN_WORKLOADS:
        assert sharded_workload_options(workload, sharded, {"key_count": "4"}) == {"key_count": "4", "shards": 8}
        assert sharded_workload_options(workload, sharded, {"shards": "8"})["shards"] == 8
        assert sharded_workload_options(workload, {}, {"key_count": 4}) == {"key_count": 4}
        with pytest.raises(SpecError, match="disagrees with --shards 8"):
            sharded_workload_options(workload, sharded, {"shards": 4})
        with pytest.raises(SpecError, match="give --shards S instead"):
            sharded_workload_options(workload, {}, {"shards": 4})
    # one key per op: nothing to tell the workload
    assert sharded_workload_options("register", sharded, {"values": 5}) == {"values": 5}


def test_the_shards_option_is_checked():
    for bad, message in ((0, "at least 1"), (MAX_SHARDS + 1, f"at most {MAX_SHARDS}"), ("x", "whole number")):
        with pytest.raises(ValueError, match=message):
            list_append.make([], 4, {"shards": bad})
    assert list_append.make([], 4, {"shards": "4"}).generator.shards == 4


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="partitions need root (network namespaces)")
def test_a_sharded_list_append_run_spreads_one_shard_transactions_and_elle_judges_it(tmp_path):
    from checkers.history import load_jsonl

    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--workload", "list-append", "--nodes", "5",
                           "--shards", "8", "--replication-factor", "3", "--nemesis", "partition,kill",
                           "--nemesis-interval", "3", "--time-limit", "15", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300)
    run = (results / "latest").resolve()
    assert (run / "results.json").exists(), done.stdout + done.stderr
    spec = json.loads((run / "test.json").read_text())
    assert spec["workload_options"]["shards"] == 8
    verdict = json.loads((run / "results.json").read_text())
    assert verdict["checkers"]["elle"]["valid"] is True, verdict["checkers"]["elle"]
    # every checker, the per-group white-box ones and replica-agreement included, places a
    # transaction in its shard by the workload's key naming
    assert done.returncode == 0 and verdict["valid"] is True, {n: r.get("explanation") for n, r in
                                                               verdict["checkers"].items() if r.get("valid") is not True}
    history = load_jsonl(str(run / "history.jsonl"))
    txns = [op for op in history if op.is_client and op.type == "ok" and op.f == "txn"]
    # no node refused a transaction across shards, and the acknowledged ones span the shards
    refused = [op for op in history if op.is_client and "across shards" in str(op.error or "")]
    assert not refused, refused[:3]
    homes = set()
    for op in txns:
        shards = {shard_of(list_append.key_name(k), 8) for _, k, _ in op.value}
        assert len(shards) == 1, op
        homes |= shards
    assert len(homes) >= 6, homes
    assert sum(1 for op in txns if any(f == "append" for f, _, _ in op.value)) >= 50
