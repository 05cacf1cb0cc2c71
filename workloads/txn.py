"""Transactional workloads (Elle's shape), shared by list-append and rw-register.

Each op is one transaction of ``min_txn_length``..``max_txn_length`` micro-ops over a pool
of ``key_count`` active keys; a key that has taken ``max_writes_per_key`` writes is retired
and a fresh key takes its place, so lists stay short and every key's history is small.
Writes and appends carry unique values (a counter), so a read names the write it saw.
A share of the transactions (``read_only_fraction``, half by default) only read: a database
answers those on a path of their own (Ukehi: a ReadIndex barrier, no log entry; elsewhere a
lease or a snapshot read), and a bug there shows only when such a read reaches the node at
the wrong moment, e.g. a leader cut off by a partition, in the fraction of a second before
it steps down. A client that sends a write to such a leader waits for its time-out, so each
client gets about ``p / (1 - p)`` reads in before it is stuck, ``p`` the share of read-only
transactions: 0.3 with micro-ops drawn one by one (``read_fraction`` 0.5, 1..4 micro-ops
give p = 0.23), 1.6 with half the transactions read-only (p = 0.62).
The final phase reads every key used, each in its own transaction: an acknowledged append
that no final read shows is a lost write, and the checker says so.

On a sharded cluster (``shards`` S, which ``run --shards S`` sets: harness/sharding.py
``sharded_workload_options``) a node refuses a transaction whose keys sit in different
shards, so each transaction first picks a shard (uniformly, so every shard is used) and then
its keys from that shard's own pool of ``key_count`` active keys; a key belongs to the shard
of its wire name (``key_name``, e.g. ``la/7``) under ``ukehi.shardmap.shard_of``, the function
the node and the client route by. Fresh keys are the next unused integers, each kept for the
shard it hashes to. Single-shard transactions on independent Raft groups compose (each group
is linearizable), so the Elle checker judges the whole history as one. Without ``shards`` the
generator draws exactly as it did before sharding existed (same ops for the same seed).

History: ``f`` is ``txn``, the value a list of ``[f, key, value]`` micro-ops (keys are
ints; Ukehi stores key k as ``la/k`` or ``rw/k``: ``key_name``). A sharded run's
transactions also carry ``key``: one of their keys (all are in one shard), so the checkers
that place a client op in its shard by its key (checkers/shard_availability.py, the
per-group white-box checkers) place a transaction too; the final reads carry ``key`` in every
run. An ``ok`` completion carries what the
reads saw and ``raft_index``, the log index (or, per micro-op, indices) its writes were
applied at, which the rw-register checker uses as the version order.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from checkers.elle import check as elle_check
from checkers.elle.page import cycle_page
from checkers.history import Op

from .base import Check, Workload, number, pinned_client, read_options
from .checks import stats
from .generator import EachKeyOnce

CYCLE_PAGE = "elle.html"
#: where Ukehi stores each model's keys (key k is ``la/k`` or ``rw/k``)
PREFIXES = {"list-append": "la/", "rw-register": "rw/"}


def key_name(model: str, key: Any) -> str:
    """The key a transaction of ``model`` sends for history key ``key`` (the wire key)."""
    return f"{PREFIXES[model]}{key}"


@dataclass(frozen=True)
class TxnOutcome:
    """A completion (shaped like harness.interpreter.Completion) plus fields for the
    history line (``raft_index``)."""

    type: str
    value: Any = None
    error: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class TxnOps:
    """The main-phase generator: random transactions over a rotating pool of keys; with
    ``shards``, one pool per shard and each transaction inside one shard (module doc)."""

    write_f: str  # "append" or "w"
    key_count: int
    min_length: int
    max_length: int
    max_writes_per_key: int
    read_fraction: float
    read_only_fraction: float = 0.0
    shards: int | None = None  # None: an unsharded cluster, one pool
    wire_key: Callable[[int], str] | None = None  # history key -> wire key (needed with shards)
    _pool: list[int] = field(default_factory=list)
    _pools: list[list[int]] = field(default_factory=list)  # with shards: shard -> its pool
    _spare: dict[int, deque[int]] = field(default_factory=dict)  # shard -> fresh keys found for it
    _writes: dict[int, int] = field(default_factory=dict)
    _next_key: int = 0
    _values: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        if self.shards is None:
            self._pool = list(range(self.key_count))
            self._next_key = self.key_count
            return
        if self.wire_key is None:
            raise ValueError("a sharded transaction generator needs wire_key (history key -> the key sent)")
        self._pools = [[self._fresh(s) for _ in range(self.key_count)] for s in range(self.shards)]

    def shard_of(self, key: int) -> int:
        """The shard of history key ``key`` (with ``shards`` only): the node's own routing."""
        from ukehi.shardmap import shard_of

        assert self.shards is not None and self.wire_key is not None
        return shard_of(self.wire_key(key), self.shards)

    def _fresh(self, shard: int | None) -> int:
        """A key never used before (in ``shard``, when sharded): the next integer, or, when
        sharded, the next integer that hashes to ``shard`` (integers found on the way for other
        shards wait in their spare queues, so no integer is skipped for good)."""
        if shard is None:
            key = self._next_key
            self._next_key += 1
            return key
        spare = self._spare.setdefault(shard, deque())
        while not spare:
            key = self._next_key
            self._next_key += 1
            self._spare.setdefault(self.shard_of(key), deque()).append(key)
        return spare.popleft()

    def next(self, worker: int, rng: random.Random) -> dict[str, Any] | None:
        ops = []
        read_only = rng.random() < self.read_only_fraction
        # unsharded: no shard draw, so the same seed gives the same ops as before sharding
        shard = None if self.shards is None else rng.randrange(self.shards)
        pool = self._pool if shard is None else self._pools[shard]
        for _ in range(rng.randint(self.min_length, self.max_length)):
            slot = rng.randrange(len(pool))
            key = pool[slot]
            if read_only or rng.random() < self.read_fraction:
                ops.append(["r", key, None])
                continue
            ops.append([self.write_f, key, next(self._values)])
            self._writes[key] = self._writes.get(key, 0) + 1
            if self._writes[key] >= self.max_writes_per_key:
                pool[slot] = self._fresh(shard)
        if shard is None:
            return {"f": "txn", "value": ops}
        return {"f": "txn", "key": ops[0][1], "value": ops}

    @property
    def keys_used(self) -> int:
        """Keys 0 .. keys_used - 1 may have been used (sharded: a few waiting as spares were
        not; the final phase reads them too, an empty read)."""
        return self._next_key


class TxnClient:
    def __init__(self, addresses: Sequence[str], worker: int, timeout: float, prefix: str,
                 empty_read: Any) -> None:
        self.client = pinned_client(addresses, worker, timeout)
        self.prefix = prefix  # history key k is sent as f"{prefix}{k}" (key_name)
        self.empty_read = empty_read  # what a read of an absent key records: [] or nil

    async def invoke(self, op: Mapping[str, Any]) -> TxnOutcome:
        mops = op["value"]
        result = await self.client.txn([[f, f"{self.prefix}{k}", v] for f, k, v in mops])
        if result.ok:
            done = result.value or {}
            seen = [[f, k, self.empty_read if f == "r" and v is None else v]
                    for (f, _, v), (_, k, _) in zip(done.get("ops", []), mops)]
            if len(seen) != len(mops):
                return TxnOutcome("info", error=f"reply has {len(seen)} micro-ops for {len(mops)}")
            index = done.get("index")
            return TxnOutcome("ok", value=seen, extra={"raft_index": index} if index is not None else {})
        read_only = all(f == "r" for f, _, _ in mops)
        if result.failed or read_only:  # a read-only transaction has no effect
            return TxnOutcome("fail", error=result.error or "error")
        return TxnOutcome("info", error=result.error or "error")

    async def close(self) -> None:
        await self.client.close()


def elle(model: str) -> Check:
    """The Elle-style checker; writes the anomaly page (cycles drawn) when invalid."""

    def check(history: Sequence[Op], options: Mapping[str, Any]) -> dict[str, Any]:
        client = [op for op in history if op.is_client]
        result = elle_check(client, model, time_limit=options.get("time_limit") or 30.0)
        run_dir = options.get("run_dir")
        if result["valid"] is False and run_dir:
            page = Path(run_dir) / CYCLE_PAGE
            page.write_text(cycle_page(result, title=f"{model} run"), encoding="utf-8")
            result["page"] = page.name
        return result

    return check


def _shard_count(raw: Any) -> int | None:
    """The ``shards`` option: absent (unsharded) or 1 .. ukehi.shardmap.MAX_SHARDS."""
    from ukehi.shardmap import MAX_SHARDS

    if raw is None:
        return None
    value = number(int, 1)(raw)
    if value > MAX_SHARDS:
        raise ValueError(f"must be at most {MAX_SHARDS}")
    return value


def make(model: str, addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options(model, options, {
        "key_count": (number(int, 1), 8),
        "min_txn_length": (number(int, 1), 1),
        "max_txn_length": (number(int, 1), 4),
        "max_writes_per_key": (number(int, 1), 32),
        "read_fraction": (number(float, 0.0), 0.5),
        "read_only_fraction": (number(float, 0.0), 0.5),
        "op_timeout": (number(float, 0.001), 2.0),
        # set by the harness for a sharded run (harness/sharding.py), not usually by hand
        "shards": (_shard_count, None),
    })
    if opts["min_txn_length"] > opts["max_txn_length"]:
        raise ValueError(f"{model} workload: min_txn_length {opts['min_txn_length']} is above "
                         f"max_txn_length {opts['max_txn_length']}")
    for name in ("read_fraction", "read_only_fraction"):
        if opts[name] > 1:
            raise ValueError(f"{model} workload option {name}={opts[name]}: must be at most 1")
    append = model == "list-append"

    def wire_key(key: Any) -> str:
        return key_name(model, key)

    generator = TxnOps("append" if append else "w", opts["key_count"], opts["min_txn_length"],
                       opts["max_txn_length"], opts["max_writes_per_key"], opts["read_fraction"],
                       opts["read_only_fraction"], shards=opts["shards"], wire_key=wire_key)
    timeout = opts["op_timeout"]

    async def open_client(worker: int) -> TxnClient:
        return TxnClient(addresses, worker, timeout, PREFIXES[model], [] if append else None)

    return Workload(
        name=model,
        generator=generator,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(generator.keys_used),
                                            lambda k: {"f": "txn", "value": [["r", k, None]]}),
        checkers={"elle": elle(model), "stats": stats()},
    )
