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

Now and then a worker releases its lock: half the time with its token
(``{"owner": "w3", "token": 17}``), half the time without one (``{"owner": "w3"}``: the
API's release by owner alone), recorded in the invocation so the lock checker can judge
the answer: a release by the holder while its lease surely holds must not be refused, a
release by someone who surely is not the holder must not succeed, and an acquire after a
release took effect must not be refused as held. A worker with no token, or whose lease
ran out by its own clock (half of those times; the other half it releases anyway, as a
deposed holder would), acquires instead and releases at its next op if it got the lock;
otherwise most releases would come from deposed holders and a short seed could see none
succeed. A worker forgets its token only when a release of it succeeds; a refused release
leaves it with the stale token, which is what the stalls are for. Releases are drawn 1 op
in 6, so the stale writes stay the point of the workload.
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
        # key -> loop time when the acquire that got that token was sent: its lease surely
        # started after that, so it surely still holds for ttl from then (if no one erred)
        self.acquired_at: dict[Any, float] = {}
        # (key, with_token) of a release drawn while this worker had no live lease: it
        # acquired instead, and releases at its next op if that acquire got the lock
        self.due: tuple[Any, bool] | None = None

    def prepare(self, op: dict[str, Any]) -> dict[str, Any]:
        """Stamp fenced writes and releases with the token held (recorded in the invocation)."""
        due, self.due = self.due, None
        if due is not None and due[0] in self.tokens and self._fresh(due[0]):
            return self.release_op(due[0], due[1])  # the release this worker acquired for
        if op["f"] == "fenced-put":
            token = self.tokens.get(op["key"])
            if token is None:
                return self.acquire_op(op["key"])
            return {**op, "value": [op["value"], token]}
        if op["f"] == "acquire":
            return self.acquire_op(op["key"])
        if op["f"] == "release":
            key, with_token = op["key"], op.get("with_token", True)
            if key in self.tokens and (self._fresh(key) or op.get("if_stale", True)):
                return self.release_op(key, with_token)
            # No token, or a lease run out by this worker's clock (half the time: the other
            # half is a deposed holder's release): take the lock first, release it next op.
            # So most releases come from live holders, and most of those succeed.
            self.due = (key, with_token)
            return self.acquire_op(key)
        return op

    def release_op(self, key: Any, with_token: bool) -> dict[str, Any]:
        value: dict[str, Any] = {"owner": self.owner}
        if with_token:
            value["token"] = self.tokens[key]
        return {"f": "release", "key": key, "value": value}

    def _fresh(self, key: Any) -> bool:
        started = self.acquired_at.get(key)
        return started is not None and asyncio.get_running_loop().time() - started < self.ttl_ms / 1000.0

    def acquire_op(self, key: Any) -> dict[str, Any]:
        return {"f": "acquire", "key": key, "value": {"owner": self.owner, "ttl_ms": self.ttl_ms}}

    @property
    def owner(self) -> str:
        return f"w{self.worker}"

    async def invoke(self, op: Mapping[str, Any]) -> Outcome:
        key, f = op["key"], op["f"]
        if f == "acquire":
            sent = asyncio.get_running_loop().time()
            result = await self.client.acquire(lock_name(key), self.owner, self.ttl_ms)
            outcome = completion(result)
            if outcome.type == "ok":
                self.tokens[key] = int(result.value)
                self.acquired_at[key] = sent
            return outcome
        if f == "fenced-put":
            value, token = op["value"]
            stall = op.get("stall_s")
            if stall:
                await asyncio.sleep(stall)  # play the deposed holder: the lease runs out meanwhile
            return completion(await self.client.fenced_put(key_name(key), value, token),
                              value=[value, token])
        if f == "release":
            value = op["value"]
            result = await self.client.release(lock_name(key), value["owner"], value.get("token"))
            if result.ok:
                # Released: the next write acquires again. A refused or unknown release keeps
                # the token (a deposed holder writing with it is what the fence must stop).
                self.tokens.pop(key, None)
            return completion(result, value=value)
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

    def release(rng: random.Random) -> dict[str, Any]:
        # with or without the token: both are the API's release (ukehi/kv.py)
        return {"f": "release", "key": rng.randrange(keys), "with_token": rng.random() < 0.5,
                "if_stale": rng.random() < 0.5}

    async def open_client(worker: int) -> FencingClient:
        return FencingClient(worker, addresses, timeout, ttl_ms)

    return Workload(
        name="fencing",
        generator=mix(acquire, fenced_put, read, release, weights=[2, 5, 3, 2]),
        open_client=open_client,
        final_generator=lambda: EachKeyOnce(range(keys), lambda k: {"f": "read"}),
        checkers={"fencing": fencing(per_lock_tokens=opts["shards"] > 0),
                  "linearizable": linearizable("fenced-register"),
                  "lock-exclusion": lock_exclusion(ttl_ms), "stats": stats()},
    )
