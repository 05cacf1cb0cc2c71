"""list-append: transactions of appends (unique values) and reads of whole lists, checked
by the Elle-style checker (``checkers.elle``) for strict serializability. See
``workloads.txn`` for the shape and the options (key_count, min_txn_length,
max_txn_length, max_writes_per_key, read_fraction, read_only_fraction, op_timeout, and
``shards``, which a sharded run sets)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import txn
from .base import Workload


def key_name(key: Any) -> str:
    """History key -> the key the client sends (as ``workloads.register.key_name``): what a
    sharded run's checkers map to a shard with ``ukehi.shardmap.shard_of``."""
    return txn.key_name("list-append", key)


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    return txn.make("list-append", addresses, concurrency, options)
