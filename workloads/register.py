"""register: read, write, cas and delete over independent keys (jepsen.independent style).

Workers come in groups that share a key; each key gets a bounded number of ops, then the
group moves to a fresh key. Every key's sub-history is checked for linearizability (the kv
model: a register with cas and delete, nil when absent); the final phase reads every key.

The op stream is shaped to expose lost and phantom writes (:class:`RegisterOps`):

- reads outnumber writes (default weights ``read:2,write:1,cas:1,delete:0.2``, plus the
  forced reads below);
- every written value is unique (a counter), so a read names the one write it saw, and a
  lost write cannot hide behind an unacknowledged write of the same value;
- after a worker writes, cas-es or deletes a key, its next op on that key is a read, and it
  mutates the key again only once a read of it has completed ok: a lost write shows up in
  its own worker's read before another write of that worker can overwrite it;
- a cas compares with the value the worker last read (nil when it never read one, or read
  an absent key), so cas from nil is a create-if-absent, and a delete, its read (nil) and
  the cas after it are delete-then-cas.

``values=N`` switches back to values drawn from ``range(N)`` (Jepsen's register draws from
five; some settings in harness/regress.py pin it).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .base import Outcome, Workload, completion, number, pinned_client, read_options
from .checks import linearizable, stats
from .generator import EachKeyOnce, Independent, mix

#: "unique": every write a fresh value; a number N: values drawn from range(N)
VALUES = "unique"
#: op weights when --workload-option ops is not given
DEFAULT_OPS = (("read", 2.0), ("write", 1.0), ("cas", 1.0), ("delete", 0.2))
MUTATIONS = ("write", "cas", "delete")


@dataclass
class Memory:
    """What each worker knows from its own completed ops. The generator reads it and the
    clients write it (both belong to this workload; the interpreter asks a worker for its
    next op only after its previous op completed)."""

    #: worker -> the key it mutated and has not read ok since
    unread: dict[int, Any] = field(default_factory=dict)
    #: (worker, key) -> the value of its last ok read of that key
    last_read: dict[tuple[int, Any], Any] = field(default_factory=dict)

    def mutated(self, worker: int, key: Any) -> None:
        self.unread[worker] = key

    def read_ok(self, worker: int, key: Any, value: Any) -> None:
        self.last_read[(worker, key)] = value
        if self.unread.get(worker) == key:
            del self.unread[worker]

    def must_read(self, worker: int, key: Any) -> bool:
        return self.unread.get(worker) == key


def key_name(key: Any) -> str:
    return f"register/{key}"


class RegisterClient:
    def __init__(self, addresses: Sequence[str], worker: int, timeout: float,
                 memory: Memory | None = None) -> None:
        self.client = pinned_client(addresses, worker, timeout)
        self.worker = worker
        self.memory = memory if memory is not None else Memory()

    async def invoke(self, op: Mapping[str, Any]) -> Outcome:
        key = key_name(op["key"])
        f = op["f"]
        if f == "read":
            outcome = completion(await self.client.get(key), read=True)
            if outcome.type == "ok":
                self.memory.read_ok(self.worker, op["key"], outcome.value)
            return outcome
        if f == "write":
            return completion(await self.client.put(key, op["value"]), value=op["value"])
        if f == "cas":
            old, new = op["value"]
            return completion(await self.client.cas(key, old, new), value=list(op["value"]))
        if f == "delete":
            outcome = completion(await self.client.delete(key))
            return Outcome(outcome.type, None, outcome.error)  # whether it existed: not modelled
        raise ValueError(f"register workload has no op {f!r}")

    async def close(self) -> None:
        await self.client.close()


@dataclass
class RegisterOps:
    """Independent keys, each op shaped by what its worker knows (see the module doc)."""

    keyed: Independent
    memory: Memory
    values: int | None  # None: unique values
    _counter: Any = field(default_factory=lambda: itertools.count(1))

    def value(self, rng: random.Random) -> int:
        return next(self._counter) if self.values is None else rng.randrange(self.values)

    def next(self, worker: int, rng: random.Random) -> dict[str, Any] | None:
        op = self.keyed.next(worker, rng)
        if op is None:
            return None
        key, f = op["key"], op["f"]
        if f in MUTATIONS and self.memory.must_read(worker, key):
            return {"f": "read", "key": key}
        if f == "write":
            op = {"f": "write", "key": key, "value": self.value(rng)}
        elif f == "cas":
            op = {"f": "cas", "key": key, "value": [self.memory.last_read.get((worker, key)), self.value(rng)]}
        if f in MUTATIONS:
            self.memory.mutated(worker, key)
        return op

    @property
    def keys_used(self) -> int:
        return self.keyed.keys_used


def _maker(f: str) -> Any:
    def make(rng: random.Random) -> dict[str, Any]:
        return {"f": f}
    return make


def _ops(raw: Any) -> tuple[tuple[str, float], ...]:
    """``read,write`` or ``read:3,write:1``: which ops, and how likely each is (default 1)."""
    if isinstance(raw, str):
        items = [tuple(i.strip().partition(":")[::2]) for i in raw.split(",")]
    else:
        items = [tuple(i) if isinstance(i, (tuple, list)) else tuple(str(i).strip().partition(":")[::2])
                 for i in raw]
    choices = "name some of read, write, cas, delete (comma list; NAME:WEIGHT to weigh them)"
    parsed = []
    for name, weight in items:
        if not name:
            continue
        if name not in ("read",) + MUTATIONS:
            raise ValueError(choices)
        try:
            w = float(weight) if weight not in ("", None) else 1.0
        except ValueError:
            raise ValueError(f"weight {weight!r} of {name} is not a number") from None
        if not w > 0:
            raise ValueError(f"weight of {name} must be above 0")
        parsed.append((name, w))
    if not parsed:
        raise ValueError(choices)
    return tuple(parsed)


def _values(raw: Any) -> int | None:
    if raw in (None, "unique"):
        return None
    return number(int, 2)(raw)


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options("register", options, {
        "threads_per_key": (number(int, 1), min(concurrency, 5)),
        "ops_per_key": (number(int, 1), 150),
        "op_timeout": (number(float, 0.001), 2.0),
        "values": (_values, VALUES),
        "ops": (_ops, DEFAULT_OPS),
    })
    timeout = opts["op_timeout"]
    chosen = opts["ops"]
    weights = [w for _, w in chosen]
    memory = Memory()
    # equal weights: plain choice, so seeded op streams stay as they were before weights existed
    keyed = Independent(mix(*(_maker(f) for f, _ in chosen), weights=None if len(set(weights)) == 1 else weights),
                        group_size=opts["threads_per_key"], ops_per_key=opts["ops_per_key"])
    generator = RegisterOps(keyed, memory, opts["values"])

    async def open_client(worker: int) -> RegisterClient:
        return RegisterClient(addresses, worker, timeout, memory)

    return Workload(
        name="register",
        generator=generator,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(generator.keys_used), lambda k: {"f": "read"}),
        # kv: a register with cas and delete (nil = absent), checked key by key
        checkers={"linearizable": linearizable("kv"), "stats": stats()},
    )
