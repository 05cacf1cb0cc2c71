"""register: read, write and cas over independent keys (jepsen.independent style).

Workers come in groups that share a key; each key gets a bounded number of
ops, then the group moves to a fresh key. Every key's sub-history is checked
for linearizability against a cas-register; the final phase reads every key.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from .base import Outcome, Workload, completion, number, pinned_client, read_options
from .checks import linearizable, stats
from .generator import EachKeyOnce, Independent, mix

# Jepsen's register draws values from a handful, so reads often match a write; a schedule
# that loses one acknowledged write among many unacknowledged ones (figure-8) needs more,
# or an unacknowledged write of the same value explains the read (option "values").
VALUES = 5


def key_name(key: Any) -> str:
    return f"register/{key}"


class RegisterClient:
    def __init__(self, addresses: Sequence[str], worker: int, timeout: float) -> None:
        self.client = pinned_client(addresses, worker, timeout)

    async def invoke(self, op: Mapping[str, Any]) -> Outcome:
        key = key_name(op["key"])
        f = op["f"]
        if f == "read":
            return completion(await self.client.get(key), read=True)
        if f == "write":
            return completion(await self.client.put(key, op["value"]), value=op["value"])
        if f == "cas":
            old, new = op["value"]
            return completion(await self.client.cas(key, old, new), value=list(op["value"]))
        raise ValueError(f"register workload has no op {f!r}")

    async def close(self) -> None:
        await self.client.close()


def _read(rng: random.Random) -> dict[str, Any]:
    return {"f": "read"}


def _writes(values: int) -> Any:
    def write(rng: random.Random) -> dict[str, Any]:
        return {"f": "write", "value": rng.randrange(values)}
    return write


def _cases(values: int) -> Any:
    def cas(rng: random.Random) -> dict[str, Any]:
        return {"f": "cas", "value": [rng.randrange(values), rng.randrange(values)]}
    return cas


def _ops(raw: Any) -> tuple[tuple[str, float], ...]:
    """``read,write`` or ``read:3,write:1``: which ops, and how likely each is (default 1)."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    parsed = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name, _, weight = item.partition(":")
        if name not in ("read", "write", "cas"):
            raise ValueError("name some of read, write, cas (comma list; NAME:WEIGHT to weigh them)")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"weight {weight!r} of {name} is not a number") from None
        if not w > 0:
            raise ValueError(f"weight of {name} must be above 0")
        parsed.append((name, w))
    if not parsed:
        raise ValueError("name some of read, write, cas (comma list; NAME:WEIGHT to weigh them)")
    return tuple(parsed)


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options("register", options, {
        "threads_per_key": (number(int, 1), min(concurrency, 5)),
        "ops_per_key": (number(int, 1), 150),
        "op_timeout": (number(float, 0.001), 2.0),
        "values": (number(int, 2), VALUES),
        "ops": (_ops, ("read", "write", "cas")),
    })
    timeout = opts["op_timeout"]
    makers = {"read": _read, "write": _writes(opts["values"]), "cas": _cases(opts["values"])}
    chosen = opts["ops"]
    weights = [w for _, w in chosen]
    # equal weights: plain choice, so seeded op streams stay as they were before weights existed
    independent = Independent(mix(*(makers[f] for f, _ in chosen), weights=None if len(set(weights)) == 1 else weights),
                              group_size=opts["threads_per_key"], ops_per_key=opts["ops_per_key"])

    async def open_client(worker: int) -> RegisterClient:
        return RegisterClient(addresses, worker, timeout)

    return Workload(
        name="register",
        generator=independent,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(independent.keys_used), lambda k: {"f": "read"}),
        checkers={"linearizable": linearizable("cas-register"), "stats": stats()},
    )
