"""rw-register: transactions of writes (unique values) and reads, checked by the
Elle-style checker (``checkers.elle``) with the Raft index each write reports as the
version order. See ``workloads.txn`` for the shape and the options (``shards``, which a
sharded run sets, keeps each transaction in one shard)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import txn
from .base import Workload


def key_name(key: Any) -> str:
    """History key -> the key the client sends (as ``workloads.register.key_name``): what a
    sharded run's checkers map to a shard with ``ukehi.shardmap.shard_of``."""
    return txn.key_name("rw-register", key)


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    return txn.make("rw-register", addresses, concurrency, options)
