"""One simulated run per seed: swarm options, clients, faults, history, verdict.

The seed decides everything: the swarm options (node count, timers, batch sizes, snapshot
threshold, network delay/loss/duplication, fault mix and pace, client count and timeouts),
every fault and every op. The history is written in the same JSONL format as a real run
(``checkers.history``), with the same honesty rules as the real clients: ``ok`` took
effect, ``fail`` certainly did not (a definite error), ``info`` unknown (no answer in time;
a lost reply is info), an unknown *read* is a ``fail`` (it changed nothing), and a process
that got ``info`` is retired for a fresh one. It is judged by the workload's own checkers
(``harness.registry.WORKLOADS``) and by the white-box checkers over the nodes' files.

Why here and not in ``ukehi/sim``: the world (``ukehi.sim``) is the system under test run
in virtual time and imports nothing of the harness; workloads, histories, checkers and the
run store are the harness's, so the runner that joins them lives on this side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from checkers.history import Op, dumps_op
from ukehi import wire
from ukehi.raft.types import Role
from ukehi.sim.world import SimWorld, WorldOptions

__all__ = ["SimSettings", "SimResult", "swarm", "run_seed", "NEMESES", "WORKLOADS"]

NEMESES = ("partition", "kill", "pause", "clock", "transfer", "snapshot")
WORKLOADS = ("register",)
TOPOLOGIES = ("halves", "one", "minority", "ring", "bridge", "one-way")


@dataclass(frozen=True)
class SimSettings:
    """What the user fixes; the rest is drawn per seed (swarm)."""

    workload: str = "register"
    nemeses: tuple[str, ...] = NEMESES
    duration: float = 10.0  # virtual seconds of workload + faults (then heal and final reads)
    node_options: tuple[tuple[str, Any], ...] = ()
    whitebox: bool = True

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.node_options).get(name, default)


@dataclass
class SimResult:
    seed: int
    valid: Any
    digest: str
    options: dict[str, Any]
    checkers: dict[str, Any]
    history: list[Op] = field(repr=False)
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    ops: int = 0
    faults: list[str] = field(default_factory=list)
    world: Any = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return self.valid is False

    def failing_checkers(self) -> list[str]:
        return sorted(n for n, r in self.checkers.items() if r.get("valid") is False)


def swarm(seed: int, settings: SimSettings) -> dict[str, Any]:
    """The per-seed options ("swarm testing"): no hand tuning per bug."""
    rng = random.Random(seed * 7919 + 17)
    el = rng.choice([300, 500, 800, 1000])
    opts: dict[str, Any] = {
        "nodes": rng.choice([3, 3, 3, 5, 5, 7]),
        "election_ms": (el, el * 2),
        "heartbeat_ms": max(10, el // rng.choice([5, 10])),
        "snapshot_threshold": rng.choice([25, 100, 400, 10_000]),
        "max_entries_per_message": rng.choice([1, 8, 64]),
        "max_inflight": rng.choice([4, 64, 256]),
        "delay": rng.choice([(0.0005, 0.003), (0.001, 0.02), (0.0005, 0.08)]),
        "loss": rng.choice([0.0, 0.0, 0.01, 0.05]),
        "duplicate": rng.choice([0.0, 0.0, 0.02]),
        "torn_probability": rng.choice([0.0, 0.5]),
    }
    enabled = [n for n in settings.nemeses if rng.random() < 0.75] or list(settings.nemeses[:1])
    opts.update({
        "faults": enabled,
        "fault_interval": rng.choice([0.3, 1.0, 2.0, 4.0]),
        "topologies": [t for t in TOPOLOGIES if rng.random() < 0.6] or ["halves"],
        "clients": rng.choice([3, 5, 8]),
        "think": rng.choice([0.0, 0.01, 0.05]),
        "op_timeout": rng.choice([0.5, 1.0, 2.0]),
        "ops_per_key": rng.choice([20, 60, 150]),
        "threads_per_key": rng.choice([2, 3, 5]),
    })
    return opts


class _History:
    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.ops: list[Op] = []

    def add(self, process: Any, type_: str, f: str, key: Any = None, value: Any = None,
            error: Any = None, **extra: Any) -> Op:
        op = Op(index=len(self.ops), time=int(self.world.now() * 1e9), process=process, type=type_, f=f,
                key=key, value=value, error=error, extra=extra)
        self.ops.append(op)
        return op


def _error_code(body: dict[str, Any]) -> str:
    e = body.get("error")
    if isinstance(e, dict):
        return str(e.get("code", "error"))
    return str(body.get("code") or e or "error")


_DEFINITE = {c.value for c in wire.DEFINITE_ERRORS}


class _Clients:
    """Register workers (jepsen.independent style: groups of workers share a key)."""

    def __init__(self, world: SimWorld, hist: _History, opts: dict[str, Any], rng: random.Random) -> None:
        self.world = world
        self.hist = hist
        self.opts = opts
        self.rng = rng
        self.n = opts["clients"]
        self.group_key: dict[int, int] = {}
        self.group_ops: dict[int, int] = {}
        self.next_key = 0
        self.next_value = 0
        self.last_read: dict[tuple[int, int], Any] = {}
        self.unread: dict[int, int] = {}
        self.keys_used: set[int] = set()

    def _key(self, worker: int) -> int:
        g = worker // self.opts["threads_per_key"]
        if g not in self.group_key or self.group_ops[g] >= self.opts["ops_per_key"]:
            self.group_key[g] = self.next_key
            self.group_ops[g] = 0
            self.next_key += 1
        self.group_ops[g] += 1
        return self.group_key[g]

    def _op(self, worker: int) -> dict[str, Any]:
        key = self._key(worker)
        if self.unread.get(worker) == key:
            return {"f": "read", "key": key}
        f = self.rng.choices(("read", "write", "cas"), weights=(2, 1, 1))[0]
        if f == "read":
            return {"f": f, "key": key}
        self.next_value += 1
        if f == "write":
            return {"f": f, "key": key, "value": self.next_value}
        return {"f": f, "key": key, "value": [self.last_read.get((worker, key)), self.next_value]}

    async def call(self, worker: int, op: dict[str, Any]) -> tuple[str, Any, Any]:
        """(type, value, error) as the real client + workload would record it."""
        names = self.world.names
        node = names[worker % len(names)]
        key = f"register/{op['key']}"  # the wire key the real register client uses
        f = op["f"]
        if f == "read":
            t, body = wire.MsgType.GET, {"key": key}
        elif f == "write":
            t, body = wire.MsgType.PUT, {"key": key, "value": op["value"]}
        else:
            t, body = wire.MsgType.CAS, {"key": key, "expected": op["value"][0], "new": op["value"][1]}
        deadline = self.world.now() + self.opts["op_timeout"]
        for _ in range(3):  # follow a redirect after a definite not_leader, as UkehiClient does
            left = deadline - self.world.now()
            if left <= 0:
                break
            reply = await self.world.request(node, t, body, left)
            if reply is None:
                break
            kind, rbody = reply
            if kind is wire.MsgType.OK:
                value = rbody.get("value")
                return "ok", (value if f == "read" else op.get("value")), None
            code = _error_code(rbody)
            err = rbody.get("error") if isinstance(rbody.get("error"), dict) else {}
            leader = (err or {}).get("leader") or rbody.get("leader")
            if code == "not_leader" and leader in self.world.nodes and leader != node:
                node = leader
                continue
            if code in _DEFINITE:
                return "fail", None, code
            return ("fail" if f == "read" else "info"), None, code
        return ("fail" if f == "read" else "info"), None, "timeout"

    async def worker(self, worker: int, until: float) -> None:
        process = worker
        rng = self.rng
        while self.world.now() < until:
            op = self._op(worker)
            self.keys_used.add(op["key"])
            self.hist.add(process, "invoke", op["f"], op["key"], op.get("value"))
            typ, value, error = await self.call(worker, op)
            if op["f"] == "read" and typ == "ok":
                self.last_read[(worker, op["key"])] = value
                if self.unread.get(worker) == op["key"]:
                    del self.unread[worker]
            elif op["f"] != "read":
                self.unread[worker] = op["key"]
            self.hist.add(process, typ, op["f"], op["key"], value if op["f"] == "read" else op.get("value"),
                          error)
            if typ == "info":
                process += self.n  # retired: a fresh process takes its place
            if self.opts["think"]:
                await asyncio.sleep(rng.uniform(0, self.opts["think"]))
        self._process = process

    async def final_reads(self, worker: int, keys: list[int]) -> None:
        process = worker + 10_000
        for key in keys:
            self.hist.add(process, "invoke", "read", key, None)
            typ, value, error = await self.call(worker, {"f": "read", "key": key})
            self.hist.add(process, typ, "read", key, value, error)
            if typ == "info":
                process += self.n


class _Nemesis:
    def __init__(self, world: SimWorld, hist: _History, opts: dict[str, Any], rng: random.Random) -> None:
        self.world = world
        self.hist = hist
        self.opts = opts
        self.rng = rng
        self.active: list[tuple[str, Any]] = []
        self.log: list[str] = []

    def _leader(self) -> str | None:
        for n in self.world.names:
            h = self.world.nodes[n]
            node = h.current.node if h.up and h.current else None
            if node is not None and node.core is not None and node.core.role is Role.LEADER:
                return n
        return None

    def _target(self) -> str:
        lead = self._leader()
        if lead is not None and self.rng.random() < 0.5:
            return lead
        return self.rng.choice(self.world.names)

    def _record(self, f: str, value: Any) -> None:
        self.hist.add("nemesis", "invoke", f, value=value)
        self.hist.add("nemesis", "info", f, value=value)
        self.log.append(f"{self.world.now():.3f} {f} {value}")

    def _partition(self) -> None:
        from nemeses.topology import bridge, grudge, halves, isolate_one, majorities_ring, random_minority

        names = self.world.names
        shape = self.rng.choice(self.opts["topologies"])
        one_way = shape == "one-way"
        make = {"halves": halves, "one": isolate_one, "minority": random_minority, "ring": majorities_ring,
                "bridge": bridge, "one-way": halves}[shape]
        if len(names) < 3 and shape in ("ring", "bridge"):
            make = halves
        g = grudge(make(names, self.rng), one_way=one_way, rng=self.rng)
        for dst, srcs in sorted(g.items()):
            for src in srcs:
                self.world.block(src, dst)
        self._record("start-partition", {"topology": shape, "one_way": one_way,
                                         "grudge": {k: list(v) for k, v in sorted(g.items())}})
        self.active.append(("partition", None))

    def step(self) -> None:
        # Undo the oldest active fault half of the time (faults overlap otherwise).
        if self.active and (self.rng.random() < 0.5 or len(self.active) >= 2):
            self.undo(self.active.pop(0))
            return
        kind = self.rng.choice(self.opts["faults"])
        w = self.world
        if kind == "partition":
            self._partition()
        elif kind == "kill":
            n = self._target()
            if w.nodes[n].up:
                lost = w.crash(n)
                self._record("kill", {"nodes": [n], "lost": lost})
                self.active.append(("kill", n))
        elif kind == "pause":
            n = self._target()
            if w.nodes[n].up and not w.nodes[n].paused:
                w.pause(n)
                self._record("pause", [n])
                self.active.append(("pause", n))
        elif kind == "clock":
            n = self.rng.choice(w.names)
            rate = self.rng.choice([0.5, 0.7, 1.5, 2.0])
            bump = self.rng.choice([-5.0, 0.0, 0.3, 60.0])
            w.set_clock(n, rate=rate, bump=bump)
            self._record("clock-skew", {"node": n, "rate": rate, "bump": bump})
            self.active.append(("clock", (n, bump)))
        elif kind in ("transfer", "snapshot"):
            lead = self._leader()
            if lead is not None:
                t = wire.MsgType.TRANSFER_LEADER if kind == "transfer" else wire.MsgType.SNAPSHOT
                body: dict[str, Any] = {} if kind == "snapshot" else {"node": None}
                if kind == "transfer":
                    body = {"node": self.rng.choice([n for n in w.names if n != lead])}
                w.loop.create_task(w.request(lead, t, body, 5.0))
                self._record("transfer-leader" if kind == "transfer" else "snapshot", {"node": lead, **body})

    def undo(self, fault: tuple[str, Any]) -> None:
        w = self.world
        kind, arg = fault
        if kind == "partition":
            w.heal()
            self._record("stop-partition", None)
        elif kind == "kill":
            w.restart(arg)
            self._record("start", [arg])
        elif kind == "pause":
            w.resume(arg)
            self._record("resume", [arg])
        elif kind == "clock":
            n, bump = arg
            w.set_clock(n, rate=1.0, bump=-bump)
            self._record("clock-reset", {"node": n})

    def heal_all(self) -> None:
        while self.active:
            self.undo(self.active.pop(0))

    async def run(self, until: float) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.opts["fault_interval"])
            if self.world.now() >= until:
                return
            self.step()


def _world_options(opts: dict[str, Any], settings: SimSettings) -> WorldOptions:
    return WorldOptions(
        nodes=opts["nodes"], election_ms=tuple(opts["election_ms"]), heartbeat_ms=opts["heartbeat_ms"],
        snapshot_threshold=opts["snapshot_threshold"], max_entries_per_message=opts["max_entries_per_message"],
        max_inflight=opts["max_inflight"], delay=tuple(opts["delay"]), loss=opts["loss"],
        duplicate=opts["duplicate"], torn_probability=opts["torn_probability"],
        unsafe_bug=settings.option("unsafe_bug"), read_mode=settings.option("read_mode", "readindex"),
        corruption_policy=settings.option("corruption_policy", "truncate-to-last-good"),
    )


def run_seed(seed: int, settings: SimSettings = SimSettings(), *, keep_world: bool = False) -> SimResult:
    """Simulate one seed and judge it. Deterministic: same seed and settings, same digest."""
    started = time.monotonic()
    opts = swarm(seed, settings)
    world = SimWorld(seed, _world_options(opts, settings))
    hist = _History(world)
    master = random.Random(seed ^ 0xC11E)
    clients = _Clients(world, hist, opts, random.Random(master.getrandbits(64)))
    nemesis = _Nemesis(world, hist, opts, random.Random(master.getrandbits(64)))
    duration = settings.duration
    settle = 3 * opts["election_ms"][1] / 1000.0

    async def scenario() -> None:
        for n in world.names:
            world.start(n)
        await asyncio.sleep(settle)  # first election
        until = world.now() + duration
        tasks = [world.loop.create_task(clients.worker(w, until)) for w in range(clients.n)]
        tasks.append(world.loop.create_task(nemesis.run(until)))
        for t in tasks:
            await t
        nemesis.heal_all()
        await asyncio.sleep(settle)  # let the cluster recover before the final reads
        keys = sorted(clients.keys_used)
        per = max(1, len(keys) // clients.n + 1)
        finals = [world.loop.create_task(clients.final_reads(w, keys[w * per:(w + 1) * per]))
                  for w in range(clients.n)]
        for t in finals:
            await t
        await world.stop_all()

    world.run(scenario())
    # Let callbacks still scheduled (replies in flight) go nowhere: the loop is done.
    result = judge(seed, settings, opts, world, hist.ops)
    result.faults = nemesis.log
    result.wall_seconds = time.monotonic() - started
    if keep_world:
        result.world = world
    return result


def history_text(ops: list[Op]) -> str:
    return "".join(dumps_op(op) + "\n" for op in ops)


def judge(seed: int, settings: SimSettings, opts: dict[str, Any], world: SimWorld, ops: list[Op]) -> SimResult:
    from checkers.results import merge_valid
    from harness.registry import WORKLOADS as REGISTRY

    workload = REGISTRY[settings.workload]([], opts["clients"], {})
    checkers: dict[str, Any] = {}
    options = {"time_limit": 60.0}
    for name, check in workload.checkers.items():
        try:
            checkers[name] = check(ops, options)
        except Exception as err:  # noqa: BLE001 - a crash is an unknown verdict
            checkers[name] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
    if settings.whitebox:
        from checkers.whitebox import check_run_nodes

        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        tmp = tempfile.mkdtemp(prefix="ukj-sim-", dir=base)
        try:
            world.export(os.path.join(tmp, "nodes"))
            wb = check_run_nodes(tmp, world.names, ops, settings.workload)
            checkers.update(wb)
        except Exception as err:  # noqa: BLE001
            checkers["whitebox"] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    valid = merge_valid(r.get("valid", "unknown") for r in checkers.values())
    digest = world.digest(history_text(ops))
    return SimResult(seed=seed, valid=valid, digest=digest, options=opts, checkers=checkers, history=ops,
                     virtual_seconds=world.now(), ops=sum(1 for o in ops if o.type == "invoke" and o.is_client))


def settings_dict(settings: SimSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["node_options"] = dict(settings.node_options)
    return d


def trace_digest(result: SimResult) -> str:
    return hashlib.sha256(result.digest.encode()).hexdigest()[:16]
