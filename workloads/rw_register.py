"""rw-register: transactions of writes (unique values) and reads, checked by the
Elle-style checker (``checkers.elle``) with the Raft index each write reports as the
version order. See ``workloads.txn`` for the shape and the options."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import txn
from .base import Workload


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    return txn.make("rw-register", addresses, concurrency, options)
