"""Simulated clients for the real workloads: kv, fencing, list-append, rw-register.

The clients are the real ones. Each seed builds the workload with ``harness.registry.WORKLOADS``
(the same ``make`` a real run calls), so the op generators (``workloads.generator``,
``workloads.txn.TxnOps``, ...), the workload clients (``KvClient``, ``FencingClient``,
``TxnClient``: how an op becomes requests and how a reply becomes ok/fail/info) and the
checkers are the real run's. Only the transport differs: each workload client's
``UkehiClient`` is swapped for :class:`SimUkehiClient`, the real client's request loop
(deadline, redirects after a definite error, rotation and backoff without a hint) whose one
attempt goes over the simulated client link (``SimWorld.request``) instead of TCP. Request
and reply bodies pass through the wire codec, as on a socket, so the node never shares an
object with the client and a reply can never change after it was recorded.

The driver below records the history as ``harness.interpreter.Interpreter`` does: the
invocation (after the client's ``prepare``, with ``node``: the node the worker is bound to),
then the completion (value kept from the invocation when the reply has none, extras such as a
transaction's ``raft_index``); ``info`` retires the process (process + concurrency); process
ids carry over into the final phase, which reads every key with fresh clients.

Two honest differences from a real run, both about the transport: a request to a node that
is down is a definite ``connect_failed`` (as a refused TCP connect), and a request in flight
to a node that dies gets no answer until the deadline (``timeout``, unknown) where a socket
would report ``connection_lost`` (also unknown) sooner.

The register workload keeps its own driver in ``harness.sim.runner`` (its seeds' digests,
shrunk schedules and the planted-bug seed figures were measured with it).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable, Mapping

from ukehi import wire
from ukehi.client import CONNECT_FAILED, FAIL, TIMEOUT, UNKNOWN, Result, UkehiClient, _fmt
from ukehi.config import format_address
from ukehi.sim.world import SimWorld
from workloads.base import bound_node

__all__ = ["SimUkehiClient", "WorkloadClients", "SIM_WORKLOADS", "workload_options"]

#: workloads driven by :class:`WorkloadClients` (register has its own driver in runner.py)
SIM_WORKLOADS = ("kv", "fencing", "list-append", "rw-register")
#: ops that change nothing: an ok one is no acknowledged write for the crash-after-ack trigger
_READS = frozenset(("read", "get"))


def workload_options(workload: str, seed: int, op_timeout: float) -> dict[str, Any]:
    """The workload's options for one seed (swarm testing, like the node options). Drawn from
    their own RNG, so the other swarm draws stay as they were. Values a real run would take
    with ``--workload-option``; stored in test.json so ``analyze`` builds the same checkers."""
    rng = random.Random(seed * 7919 + 29)
    opts: dict[str, Any] = {"op_timeout": op_timeout}
    if workload == "kv":
        opts["keys"] = rng.choice([3, 10, 100])
    elif workload == "fencing":
        opts.update(keys=rng.choice([1, 3]), ttl_ms=rng.choice([300, 500, 1000]),
                    stall_probability=rng.choice([0.05, 0.1, 0.3]))
    elif workload in ("list-append", "rw-register"):
        opts.update(key_count=rng.choice([3, 8]), max_txn_length=rng.choice([2, 4]),
                    max_writes_per_key=rng.choice([8, 32]), read_fraction=rng.choice([0.3, 0.5]))
    return opts


def _through_wire(msg_type: wire.MsgType, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` as the other end decodes it: encoded and decoded as on a socket."""
    return wire.decode_frame(wire.encode_frame(msg_type, 1, body)).body


class SimUkehiClient(UkehiClient):
    """The real ``UkehiClient`` whose single attempt goes over a simulated client link."""

    def __init__(self, world: SimWorld, addresses: list[str], *, timeout: float, rng: random.Random) -> None:
        super().__init__(addresses, timeout=timeout, pinned=True, tls=None)
        self._rng = rng  # backoff jitter: from the seed, not from the OS
        self.world = world
        self._names = {world.addresses[n]: n for n in world.names}
        self.answered_by: str | None = None  # the node that gave the last ok

    async def _attempt(self, addr: tuple[str, int], mt: wire.MsgType, body: Mapping[str, Any],
                       timeout: float, group: int = 0, epoch: int = 0) -> Result:
        # group/epoch: the shard a sharded client routes to; a simulated cluster is one
        # unsharded group (0), so every frame goes to it as before.
        node = _fmt(addr)
        name = self._names.get(addr)
        if name is None or not self.world.nodes[name].up:
            return Result(FAIL, error=CONNECT_FAILED, message=f"cannot connect to {node}: not running", node=node)
        reply = await self.world.request(name, mt, _through_wire(mt, body), timeout)
        if reply is None:
            return Result(UNKNOWN, error=TIMEOUT, message=f"no answer from {node} within {timeout:.3f}s", node=node)
        kind, rbody = reply
        result = self._interpret(wire.Frame(kind, 1, _through_wire(kind, rbody), 0), node)
        if result.ok:
            self.answered_by = name
        return result

    async def close(self) -> None:
        return None  # no connections to close


def shrunk_schedule_step(only: frozenset[tuple[int, int]] | None, last: int, worker: int, n: int) -> str | None:
    """Under a shrunk schedule (``only``: the (worker, n) ops kept), what to do with a worker's
    n-th drawn op: None (issue it), "skip" (drawn, so later draws stay the same, but not
    issued) or "stop" (this worker's part of the schedule is done)."""
    if only is None or (worker, n) in only:
        return None
    return "stop" if n > last else "skip"


class WorkloadClients:
    """The workers of one seed: the real workload's generator and clients over the sim links.

    The same interface as the register driver (``runner._Clients``): ``worker``,
    ``final_phase``, ``on_ack``, ``only`` / ``last_op`` / ``issued`` for shrinking."""

    def __init__(self, world: SimWorld, hist: Any, opts: dict[str, Any], rng: random.Random,
                 workload: str, options: Mapping[str, Any]) -> None:
        from harness.registry import WORKLOADS as REGISTRY

        self.world = world
        self.hist = hist
        self.opts = opts
        self.n = opts["clients"]
        self.addresses = [format_address(world.addresses[n]) for n in world.names]
        self.workload = REGISTRY[workload](self.addresses, self.n, dict(options))
        self.timeout = float(options["op_timeout"])
        # Per worker: its op draws, its think times and its client's backoff jitter, so one
        # worker's draws do not depend on how the others' ops interleave.
        self.rngs = [random.Random(rng.getrandbits(64)) for _ in range(self.n)]
        self.think = [random.Random(rng.getrandbits(64)) for _ in range(self.n)]
        self.jitter = [random.Random(rng.getrandbits(64)) for _ in range(self.n)]
        self.process = list(range(self.n))  # carried over into the final phase, as the interpreter does
        self.on_ack: Callable[[str], None] | None = None
        self.only: frozenset[tuple[int, int]] | None = None
        self.last_op: dict[int, int] = {}
        self.issued: list[tuple[int, int]] = []

    async def _open(self, worker: int) -> Any:
        """The workload's own client for ``worker``, its transport swapped for the sim's."""
        client = await self.workload.open_client(worker)
        real = getattr(client, "client", None)
        if not isinstance(real, UkehiClient):
            raise TypeError(f"{type(client).__name__} keeps no UkehiClient in .client; the simulator "
                            "cannot give it a simulated transport")
        client.client = SimUkehiClient(self.world, [_fmt(a) for a in real.addresses], timeout=real.timeout,
                                       rng=self.jitter[worker])
        return client

    async def _invoke(self, worker: int, client: Any, op: dict[str, Any]) -> str:
        """One op, recorded as ``Interpreter._invoke`` records it; returns its completion type."""
        process = self.process[worker]
        prepare = getattr(client, "prepare", None)
        if prepare is not None:
            op = prepare(op)
        f, key, value = op["f"], op.get("key"), op.get("value")
        node = self.world.names[bound_node(worker, len(self.world.names))]
        self.hist.add(process, "invoke", f, key, value, node=node)
        try:
            done = await client.invoke(op)
        except Exception as err:  # noqa: BLE001 - unknown outcome, recorded as such
            done = _Info(f"{type(err).__name__}: {err}")
        completed = done.value if done.value is not None else value
        self.hist.add(process, done.type, f, key, completed, done.error, **(getattr(done, "extra", None) or {}))
        if done.type == "ok" and self.on_ack is not None and _writes(f, value):
            answered = client.client.answered_by
            if answered is not None:
                self.on_ack(answered)
        if done.type == "info":
            self.process[worker] = process + self.n
        return str(done.type)

    async def worker(self, worker: int, until: float) -> None:
        client = await self._open(worker)
        rng = self.rngs[worker]
        think = self.opts["think"]
        last = self.last_op.get(worker, -1)
        n = -1
        while self.world.now() < until:
            op = self.workload.generator.next(worker, rng)
            if op is None:
                break
            n += 1
            step = shrunk_schedule_step(self.only, last, worker, n)
            if step == "stop":
                break
            if step == "skip":
                continue
            self.issued.append((worker, n))
            before = self.world.now()
            await self._invoke(worker, client, op)
            if think:
                await asyncio.sleep(self.think[worker].uniform(0, think))
            elif self.world.now() == before:
                # An op that took no virtual time (a client that fails at once, e.g. raises)
                # must still give the loop a turn: otherwise this loop spins inside one
                # callback for ever, where the iteration budget (--max-steps) never sees it.
                await asyncio.sleep(0)
        await client.close()

    async def final_phase(self, limit: float) -> None:
        """The workload's final generator (a read of every key), every worker pulling from it
        with a fresh client, until it is empty or ``limit`` virtual seconds passed. A final
        read that did not succeed is tried again (until-ok, as Jepsen's final generators):
        one lost reply must not leave a key unread, nor make the availability checker see a
        final phase in which nothing succeeded (sim seed 4193: one read, its answer lost)."""
        if self.workload.final_generator is None:
            return
        gen = self.workload.final_generator()
        until = self.world.now() + limit

        async def run(worker: int) -> None:
            client = await self._open(worker)
            rng = self.rngs[worker]
            while self.world.now() < until:
                op = gen.next(worker, rng)
                if op is None:
                    break
                while await self._invoke(worker, client, dict(op)) != "ok" and self.world.now() < until:
                    await asyncio.sleep(0.05)  # a short back-off before the next try
            await client.close()

        tasks = [self.world.loop.create_task(run(w)) for w in range(self.n)]
        for t in tasks:
            await t


class _Info:
    type = "info"
    value = None

    def __init__(self, error: str) -> None:
        self.error = error


def _writes(f: str, value: Any) -> bool:
    """Whether an ok op of this shape acknowledged a write (a txn with a non-read micro-op)."""
    if f == "txn":
        return any(m[0] != "r" for m in value or ())
    return f not in _READS
