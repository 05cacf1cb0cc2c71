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


def _write(rng: random.Random) -> dict[str, Any]:
    return {"f": "write", "value": rng.randrange(VALUES)}


def _cas(rng: random.Random) -> dict[str, Any]:
    return {"f": "cas", "value": [rng.randrange(VALUES), rng.randrange(VALUES)]}


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    group = int(options.get("threads_per_key", min(concurrency, 5)))
    per_key = int(options.get("ops_per_key", 150))
    timeout = float(options.get("op_timeout", 2.0))
    independent = Independent(mix(_read, _write, _cas), group_size=group, ops_per_key=per_key)

    async def open_client(worker: int) -> RegisterClient:
        return RegisterClient(addresses, worker, timeout)

    return Workload(
        name="register",
        generator=independent,
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(independent.keys_used), lambda k: {"f": "read"}),
        checkers={"linearizable": linearizable("cas-register"), "stats": stats()},
    )
