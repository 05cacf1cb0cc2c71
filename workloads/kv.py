"""kv: get, put and delete over a fixed pool of keys, at a heavier load.

Every put writes a value no other op writes (worker-op counter), which keeps
the per-key linearizability search narrow even with many clients.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Mapping, Sequence

from .base import Outcome, Workload, completion, number, pinned_client, read_options
from .checks import linearizable, stats
from .generator import EachKeyOnce, mix


def key_name(key: Any) -> str:
    return f"kv/{key}"


class KvClient:
    def __init__(self, addresses: Sequence[str], worker: int, timeout: float) -> None:
        self.client = pinned_client(addresses, worker, timeout)

    async def invoke(self, op: Mapping[str, Any]) -> Outcome:
        key, f = key_name(op["key"]), op["f"]
        if f == "get":
            return completion(await self.client.get(key), read=True)
        if f == "put":
            return completion(await self.client.put(key, op["value"]), value=op["value"])
        if f == "delete":
            return completion(await self.client.delete(key))
        raise ValueError(f"kv workload has no op {f!r}")

    async def close(self) -> None:
        await self.client.close()


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options("kv", options, {"keys": (number(int, 1), 100), "op_timeout": (number(float, 0.001), 2.0)})
    keys, timeout = opts["keys"], opts["op_timeout"]
    counter = itertools.count(1)

    def get(rng: random.Random) -> dict[str, Any]:
        return {"f": "get", "key": rng.randrange(keys)}

    def put(rng: random.Random) -> dict[str, Any]:
        return {"f": "put", "key": rng.randrange(keys), "value": next(counter)}

    def delete(rng: random.Random) -> dict[str, Any]:
        return {"f": "delete", "key": rng.randrange(keys)}

    async def open_client(worker: int) -> KvClient:
        return KvClient(addresses, worker, timeout)

    return Workload(
        name="kv",
        generator=mix(get, put, delete, weights=[5, 4, 1]),
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(keys), lambda k: {"f": "get"}),
        checkers={"linearizable": linearizable("kv"), "stats": stats()},
    )
