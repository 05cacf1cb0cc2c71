"""register: read, write and cas over independent keys (jepsen.independent style).

Workers come in groups that share a key; each key gets a bounded number of
ops, then the group moves to a fresh key. Every key's sub-history is checked
for linearizability against a cas-register; the final phase reads every key.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from .base import Outcome, Workload, completion, pinned_client
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


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    group = int(options.get("threads_per_key", min(concurrency, 5)))
    per_key = int(options.get("ops_per_key", 150))
    timeout = float(options.get("op_timeout", 2.0))
    values = options.get("values", VALUES)
    if type(values) is not int or values < 2:
        raise ValueError(f"register workload option values must be a whole number >= 2, got {values!r}")
    makers = {"read": _read, "write": _writes(values), "cas": _cases(values)}
    fs = options.get("ops", ("read", "write", "cas"))
    fs = fs.split(",") if isinstance(fs, str) else list(fs)
    unknown = [f for f in fs if f not in makers]
    if unknown or not fs:
        raise ValueError(f"register workload option ops must name some of read, write, cas; got {fs!r}")
    independent = Independent(mix(*(makers[f] for f in fs)), group_size=group, ops_per_key=per_key)

    async def open_client(worker: int) -> RegisterClient:
        return RegisterClient(addresses, worker, timeout)

    return Workload(
        name="register",
        generator=independent,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(independent.keys_used), lambda k: {"f": "read"}),
        checkers={"linearizable": linearizable("cas-register"), "stats": stats()},
    )
