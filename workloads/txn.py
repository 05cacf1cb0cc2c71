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

History: ``f`` is ``txn``, the value a list of ``[f, key, value]`` micro-ops (keys are
ints; Ukehi stores key k as ``la/k`` or ``rw/k``). An ``ok`` completion carries what the
reads saw and ``raft_index``, the log index (or, per micro-op, indices) its writes were
applied at, which the rw-register checker uses as the version order.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from checkers.elle import check as elle_check
from checkers.elle.page import cycle_page
from checkers.history import Op

from .base import Check, Workload, number, pinned_client, read_options
from .checks import stats
from .generator import EachKeyOnce

CYCLE_PAGE = "elle.html"


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
    """The main-phase generator: random transactions over a rotating pool of keys."""

    write_f: str  # "append" or "w"
    key_count: int
    min_length: int
    max_length: int
    max_writes_per_key: int
    read_fraction: float
    read_only_fraction: float = 0.0
    _pool: list[int] = field(default_factory=list)
    _writes: dict[int, int] = field(default_factory=dict)
    _next_key: int = 0
    _values: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._pool = list(range(self.key_count))
        self._next_key = self.key_count

    def next(self, worker: int, rng: random.Random) -> dict[str, Any] | None:
        ops = []
        read_only = rng.random() < self.read_only_fraction
        for _ in range(rng.randint(self.min_length, self.max_length)):
            slot = rng.randrange(len(self._pool))
            key = self._pool[slot]
            if read_only or rng.random() < self.read_fraction:
                ops.append(["r", key, None])
                continue
            ops.append([self.write_f, key, next(self._values)])
            self._writes[key] = self._writes.get(key, 0) + 1
            if self._writes[key] >= self.max_writes_per_key:
                self._pool[slot] = self._next_key
                self._next_key += 1
        return {"f": "txn", "value": ops}

    @property
    def keys_used(self) -> int:
        return self._next_key


class TxnClient:
    def __init__(self, addresses: Sequence[str], worker: int, timeout: float, prefix: str,
                 empty_read: Any) -> None:
        self.client = pinned_client(addresses, worker, timeout)
        self.prefix = prefix
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


def make(model: str, addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options(model, options, {
        "key_count": (number(int, 1), 8),
        "min_txn_length": (number(int, 1), 1),
        "max_txn_length": (number(int, 1), 4),
        "max_writes_per_key": (number(int, 1), 32),
        "read_fraction": (number(float, 0.0), 0.5),
        "read_only_fraction": (number(float, 0.0), 0.5),
        "op_timeout": (number(float, 0.001), 2.0),
    })
    if opts["min_txn_length"] > opts["max_txn_length"]:
        raise ValueError(f"{model} workload: min_txn_length {opts['min_txn_length']} is above "
                         f"max_txn_length {opts['max_txn_length']}")
    for name in ("read_fraction", "read_only_fraction"):
        if opts[name] > 1:
            raise ValueError(f"{model} workload option {name}={opts[name]}: must be at most 1")
    append = model == "list-append"
    generator = TxnOps("append" if append else "w", opts["key_count"], opts["min_txn_length"],
                       opts["max_txn_length"], opts["max_writes_per_key"], opts["read_fraction"],
                       opts["read_only_fraction"])
    prefix = "la/" if append else "rw/"
    timeout = opts["op_timeout"]

    async def open_client(worker: int) -> TxnClient:
        return TxnClient(addresses, worker, timeout, prefix, [] if append else None)

    return Workload(
        name=model,
        generator=generator,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(generator.keys_used),
                                            lambda k: {"f": "txn", "value": [["r", k, None]]}),
        checkers={"elle": elle(model), "stats": stats()},
    )
