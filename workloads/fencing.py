"""fencing: lock holders write with their fencing token; some stall like a deposed holder.

Each worker acquires a lock (getting a token), then writes to the lock's key
with ``fenced-put [value token]``. At random a worker stalls between its
invocation and the send, longer than the lock's TTL, and then writes with its
old token: another worker may have taken the lock meanwhile, and the node must
refuse the stale write. The fencing checker judges tokens and write order;
the fenced-register model judges linearizability; the lock-exclusion checker
(checkers/locks.py) judges the locks themselves: no two owners' leases overlap, and an
acquire is refused only while another owner may hold the lock. An acquire records its
owner and lease in its invocation (``{"owner": "w3", "ttl_ms": 500}``) for that checker.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any, Mapping, Sequence

from .base import Outcome, Workload, completion, number, pinned_client, read_options
from .checks import fencing, linearizable, lock_exclusion, stats
from .generator import EachKeyOnce, mix


def key_name(key: Any) -> str:
    return f"fenced/{key}"


def lock_name(key: Any) -> str:
    # The key's wire name as a hash tag (ukehi.shardmap.hash_tag): on a sharded cluster the
    # lock is in the key's shard, so a fenced write is judged by the Raft group that minted
    # its token. Unsharded, it is just a name.
    return f"lock/{{{key_name(key)}}}"


class FencingClient:
    def __init__(self, worker: int, addresses: Sequence[str], timeout: float, ttl_ms: int) -> None:
        self.worker = worker
        self.client = pinned_client(addresses, worker, timeout)
        self.ttl_ms = ttl_ms
        self.tokens: dict[Any, int] = {}  # key -> the token this worker last acquired

    def prepare(self, op: dict[str, Any]) -> dict[str, Any]:
        """Stamp fenced writes with the token held (recorded in the invocation)."""
        if op["f"] == "fenced-put":
            token = self.tokens.get(op["key"])
            if token is None:
                return self.acquire_op(op["key"])
            return {**op, "value": [op["value"], token]}
        if op["f"] == "acquire":
            return self.acquire_op(op["key"])
        return op

    def acquire_op(self, key: Any) -> dict[str, Any]:
        return {"f": "acquire", "key": key, "value": {"owner": self.owner, "ttl_ms": self.ttl_ms}}

    @property
    def owner(self) -> str:
        return f"w{self.worker}"

    async def invoke(self, op: Mapping[str, Any]) -> Outcome:
        key, f = op["key"], op["f"]
        if f == "acquire":
            result = await self.client.acquire(lock_name(key), self.owner, self.ttl_ms)
            outcome = completion(result)
            if outcome.type == "ok":
                self.tokens[key] = int(result.value)
            return outcome
        if f == "fenced-put":
            value, token = op["value"]
            stall = op.get("stall_s")
            if stall:
                await asyncio.sleep(stall)  # play the deposed holder: the lease runs out meanwhile
            return completion(await self.client.fenced_put(key_name(key), value, token),
                              value=[value, token])
        if f == "read":
            return completion(await self.client.get(key_name(key)), read=True)
        raise ValueError(f"fencing workload has no op {f!r}")

    async def close(self) -> None:
        await self.client.close()


def make(addresses: Sequence[str], concurrency: int, options: Mapping[str, Any]) -> Workload:
    opts = read_options("fencing", options, {
        "keys": (number(int, 1), 3),
        "ttl_ms": (number(int, 1), 500),
        "stall_probability": (number(float, 0.0), 0.1),
        "op_timeout": (number(float, 0.001), 2.0),
        # set by --shards (harness/sharding.py): tokens are per Raft group, so per lock
        "shards": (number(int, 0), 0),
    })
    keys, ttl_ms, stall_probability, timeout = (
        opts["keys"], opts["ttl_ms"], opts["stall_probability"], opts["op_timeout"])
    counter = itertools.count(1)

    def acquire(rng: random.Random) -> dict[str, Any]:
        return {"f": "acquire", "key": rng.randrange(keys)}

    def fenced_put(rng: random.Random) -> dict[str, Any]:
        op: dict[str, Any] = {"f": "fenced-put", "key": rng.randrange(keys), "value": next(counter)}
        if rng.random() < stall_probability:
            op["stall_s"] = ttl_ms / 1000.0 * (1.0 + rng.random())
        return op

    def read(rng: random.Random) -> dict[str, Any]:
        return {"f": "read", "key": rng.randrange(keys)}

    async def open_client(worker: int) -> FencingClient:
        return FencingClient(worker, addresses, timeout, ttl_ms)

    return Workload(
        name="fencing",
        generator=mix(acquire, fenced_put, read, weights=[2, 5, 3]),
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(keys), lambda k: {"f": "read"}),
        checkers={"fencing": fencing(per_lock_tokens=opts["shards"] > 0),
                  "linearizable": linearizable("fenced-register"),
                  "lock-exclusion": lock_exclusion(ttl_ms), "stats": stats()},
    )
