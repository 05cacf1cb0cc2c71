"""Client operation generators: what each worker invokes next.

A generator is asked, per worker, for the next operation (a dict with ``f``
and optionally ``key`` and ``value``) and answers ``None`` when that worker is
done. Generators are deterministic given the RNG, so a seed repeats a test's
operation stream (not its timing: that is the system's).

Combinators cover what the workloads need, after Jepsen's generator library:
:func:`mix` picks among op makers by weight, :class:`Independent` gives each
group of workers its own key for a bounded number of ops (jepsen.independent,
which keeps each key's history small enough to check), :class:`Limit` caps
the number of ops, and :class:`EachKeyOnce` is the final read of every key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

OpDict = dict[str, Any]
OpMaker = Callable[[random.Random], OpDict]


class Generator(Protocol):
    def next(self, worker: int, rng: random.Random) -> OpDict | None:
        """The next op for ``worker``, or None when that worker has nothing more to do."""


@dataclass
class Mix:
    """Pick one op maker per call, by weight."""

    makers: Sequence[OpMaker]
    weights: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if not self.makers:
            raise ValueError("Mix needs at least one op maker")
        if self.weights is not None and len(self.weights) != len(self.makers):
            raise ValueError("Mix: give one weight per op maker")

    def next(self, worker: int, rng: random.Random) -> OpDict | None:
        maker = rng.choices(self.makers, weights=self.weights)[0] if self.weights else rng.choice(self.makers)
        return maker(rng)


def mix(*makers: OpMaker, weights: Sequence[float] | None = None) -> Mix:
    return Mix(list(makers), weights)


@dataclass
class Limit:
    """At most ``count`` ops in total from ``inner``, across all workers."""

    inner: Generator
    count: int
    _issued: int = 0

    def next(self, worker: int, rng: random.Random) -> OpDict | None:
        if self._issued >= self.count:
            return None
        self._issued += 1
        return self.inner.next(worker, rng)


@dataclass
class Independent:
    """Workers in groups of ``group_size`` share a key; each key gets ``ops_per_key`` ops.

    When a group's key has had its ops, the group moves on to a fresh key, so
    every key's sub-history stays small (linearizability checking is
    exponential in concurrency per key, not in the length of the test).
    Keys are ints 0, 1, 2, ...; ``max_keys`` bounds them (None: unbounded).
    """

    inner: Generator
    group_size: int
    ops_per_key: int
    max_keys: int | None = None
    _group_key: dict[int, int] = field(default_factory=dict)
    _group_count: dict[int, int] = field(default_factory=dict)
    _next_key: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.ops_per_key < 1:
            raise ValueError("Independent: group_size and ops_per_key must be at least 1")

    def next(self, worker: int, rng: random.Random) -> OpDict | None:
        group = worker // self.group_size
        count = self._group_count.get(group, 0)
        if group not in self._group_key or count >= self.ops_per_key:
            if self.max_keys is not None and self._next_key >= self.max_keys:
                return None
            self._group_key[group] = self._next_key
            self._next_key += 1
            count = 0
        op = self.inner.next(worker, rng)
        if op is None:
            return None
        self._group_count[group] = count + 1
        return {**op, "key": self._group_key[group]}

    @property
    def keys_used(self) -> int:
        return self._next_key


@dataclass
class EachKeyOnce:
    """The final phase: one op per key (e.g. a read of every key written), spread over workers."""

    keys: Iterable[Any]
    make: Callable[[Any], OpDict]
    _pending: list[Any] = field(default_factory=list)
    _started: bool = False

    def next(self, worker: int, rng: random.Random) -> OpDict | None:
        if not self._started:
            self._pending = list(self.keys)
            self._pending.reverse()
            self._started = True
        if not self._pending:
            return None
        key = self._pending.pop()
        return {**self.make(key), "key": key}
