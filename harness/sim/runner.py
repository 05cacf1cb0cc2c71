"""One simulated run per seed: swarm options, clients, faults, history, verdict.

The seed decides everything: the swarm options (node count, timers, batch sizes, snapshot
threshold, network delay/loss/duplication, fault mix and pace, client count and timeouts),
every fault and every op. The history is written in the same JSONL format as a real run
(``checkers.history``), with the same honesty rules as the real clients: ``ok`` took
effect, ``fail`` certainly did not (a definite error), ``info`` unknown (no answer in time;
a lost reply is info), an unknown *read* is a ``fail`` (it changed nothing), and a process
that got ``info`` is retired for a fresh one. It is judged by the workload's own checkers
(``harness.registry.WORKLOADS``) and by the white-box checkers over the nodes' files.
register's clients are below; kv, fencing, list-append and rw-register run the real
workload's generator and clients over simulated links (``harness.sim.workloads``).

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

from checkers.history import Op, dumps_op
from checkers.probes import check_probes
from checkers.results import merge_valid
from ukehi import wire
from ukehi.raft.types import Role
from ukehi.sim.loop import EventBudgetExceeded
from ukehi.storage import vfs
from ukehi.sim.world import SimWorld, WorldOptions

from ..probes import run_sim_battery
from .targeted import FAMILIES, make_families
from .workloads import WorkloadClients, shrunk_schedule_step, workload_options

__all__ = ["SimSettings", "SimResult", "swarm", "run_seed", "resolve_workload", "NEMESES", "WORKLOADS", "SWARM"]

# Fault families. Besides the real nemeses' families, triggered ones that aim at the
# moments Raft is fragile, without knowing any bug: crash a voter right after it granted a
# vote (a quick restart, while the election may still run), power-cut the node that just
# acknowledged a write (alone, with a majority, or all nodes), cut the leader off right
# after it sent entries (some followers have them, some do not), and damage a stopped
# node's WAL (bit flip, zeroed or copied chunk) before it restarts under the seed's
# CorruptionPolicy.
NEMESES = ("partition", "kill", "pause", "clock", "transfer", "snapshot", "membership",
           "crash-after-vote", "crash-after-ack", "partition-in-flight", "damage", "slow",
           *FAMILIES)
# The leader-targeted families (harness.sim.targeted: fall-after-append, stale-leader,
# vote-flip, slow-leader-clock): the moments the real targeted nemeses (figure-8,
# stale-append, double-vote, slow-leader) aim at, as general faults. Each is drawn with
# probability 1/2 from an RNG of their own (before "slow"'s), so the seed's other option
# draws are unchanged and a seed that draws none of them runs exactly as before they existed.
TARGETED = tuple(FAMILIES)
# "slow": one node's links (both ways, outbound or inbound) deliver every message 0.5-3
# election timeouts late for a while, as a congested TCP link or netem delay does: messages
# of a deposed leader, an old term's candidate or an old window arrive after elections moved
# on, which per-message delays of at most 80 ms never produce. Drawn per seed from its own
# RNG (after the others), so a seed that does not draw it runs exactly as before it existed.
_OWN_DRAW = ("slow", *TARGETED)
MIN_VOTERS = 3  # membership never leaves fewer voters (as nemeses.membership)
# register has its own driver (_Clients below); the others run the real workload's
# generator and clients over simulated links (harness.sim.workloads).
WORKLOADS = ("register", "kv", "fencing", "list-append", "rw-register")
# SimSettings.workload = SWARM: each seed draws one of WORKLOADS (its own RNG, so every other
# draw of the seed is what the drawn workload gives when named). `sim` without --workload.
SWARM = "swarm"
TOPOLOGIES = ("halves", "one", "minority", "ring", "bridge", "one-way", "leader")
# Drawn per seed unless --node-option corruption_policy=... fixes it. AlertAndContinue is
# opt-in: it skips a bad entry and the node keeps voting with the hole, which can lose
# committed entries by design (DESIGN.md: "exactly what the harness must expose"), so a
# sweep meant to find bugs in the correct build draws only the two safe policies.
POLICIES = ("truncate-to-last-good", "refuse-start")
_SEG_HEADER = 12  # bytes of a WAL segment's header (ukehi.storage.format)
FINAL_PHASE_S = 15.0  # virtual seconds for the final reads (TestSpec.final_time_limit's default)


@dataclass(frozen=True)
class SimSettings:
    """What the user fixes; the rest is drawn per seed (swarm)."""

    workload: str = "register"
    nemeses: tuple[str, ...] = NEMESES
    duration: float = 10.0  # virtual seconds of workload + faults (then heal and final reads)
    node_options: tuple[tuple[str, Any], ...] = ()
    whitebox: bool = True
    # A shrunk schedule (harness.sim.shrink): nemesis steps (by number) left out, and, when
    # set, the only client ops issued ((worker, n): the n-th op that worker draws). Each
    # step draws from its own RNG and every op is still drawn, so leaving some out changes
    # nothing else that was drawn.
    skip_faults: tuple[int, ...] = ()
    only_ops: tuple[tuple[int, int], ...] | None = None
    # Loop iterations a seed may run before it is stopped as a runaway (0: automatic, about
    # ten times the busiest correct seed measured). Seed 1181 once grew past 1 GB in minutes:
    # a wiped follower and its leader trading millions of appends and rejections per virtual
    # second over reordering links. Counted in iterations, so every machine stops it alike.
    max_steps: int = 0

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
    wall_seconds: float = 0.0  # the whole seed: simulation and judging
    judge_seconds: float = 0.0  # of which judging (export, checkers, digest)
    ops: int = 0
    faults: list[str] = field(default_factory=list)
    world: Any = field(default=None, repr=False)
    fault_steps: int = 0  # nemesis steps taken (skipped ones included)
    client_ops: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (worker, n) issued
    idle: dict[str, Any] = field(default_factory=dict, repr=False)  # idle_work's record (busy-when-idle)

    @property
    def failed(self) -> bool:
        return self.valid is False

    def failing_checkers(self) -> list[str]:
        return sorted(n for n, r in self.checkers.items() if r.get("valid") is False)


def resolve_workload(seed: int, settings: SimSettings) -> SimSettings:
    """The settings a seed really runs with: with ``workload=SWARM`` the seed draws its
    workload, so the seed with that workload named replays it exactly (the replay command
    and the stored run name it)."""
    if settings.workload != SWARM:
        return settings
    drawn = random.Random(seed * 6151 + 41).choice(WORKLOADS)
    return replace(settings, workload=drawn)


# WAL segment sizes a seed draws from (bytes; 1024 is the WAL's minimum, the last the node's default).
WAL_SEGMENT_SIZES = (1024, 4096, 16384, 64 * 1024 * 1024)


def swarm(seed: int, settings: SimSettings) -> dict[str, Any]:
    """The per-seed options ("swarm testing"): no hand tuning per bug."""
    settings = resolve_workload(seed, settings)
    rng = random.Random(seed * 7919 + 17)
    el = rng.choice([300, 500, 800, 1000])
    opts: dict[str, Any] = {
        "workload": settings.workload,  # drawn when SWARM: part of the seed's options
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
    drawn = tuple(n for n in settings.nemeses if n not in _OWN_DRAW)
    enabled = [n for n in drawn if rng.random() < 0.5] or ([rng.choice(drawn)] if drawn else [])
    targeted = random.Random(seed * 3571 + 11)
    enabled += [n for n in TARGETED if (targeted.random() < 0.5 or not enabled) and n in settings.nemeses]
    own = random.Random(seed * 2713 + 5)
    enabled += [n for n in ("slow",) if n in settings.nemeses and (own.random() < 0.5 or not enabled)]
    opts.update({
        "faults": enabled,
        "fault_interval": rng.choice([0.3, 1.0, 2.0, 4.0]),
        "topologies": [t for t in TOPOLOGIES if rng.random() < 0.6] or ["halves"],
        "clients": rng.choice([3, 5, 8]),
        "think": rng.choice([0.0, 0.01, 0.05]),
        "op_timeout": rng.choice([0.5, 1.0, 2.0]),
        "ops_per_key": rng.choice([20, 60, 150]),
        "threads_per_key": rng.choice([2, 3, 5]),
        # how soon a triggered crash's victim comes back (fractions of the election timeout)
        "quick_restart": rng.choice([0.05, 0.3, 1.0]),
        "corruption_policy": settings.option("corruption_policy") or rng.choice(POLICIES),
    })
    # With membership changes, 5 or 7 nodes found the cluster with two spares that start
    # with ``join`` (as nemeses.membership.founding_voters); 3 nodes have none.
    if settings.workload != "register":  # their own RNG: register seeds draw as before
        opts["workload_options"] = workload_options(settings.workload, seed, opts["op_timeout"])
    n = opts["nodes"]
    opts["founders"] = max(MIN_VOTERS, n - 2) if "membership" in enabled and n > MIN_VOTERS else n
    # Small WAL segments so a compaction removes whole segments within a seed (with the
    # node's 64 MB default a seed's WAL never rotates, so compact_to never removes one and
    # the wal-retention checker has nothing to judge). Its own RNG: other draws unchanged.
    opts["wal_segment_size"] = random.Random(seed * 1543 + 29).choice(WAL_SEGMENT_SIZES)
    opts["read_mode"] = settings.option("read_mode") or _draw_read_mode(seed, enabled, settings.nemeses)
    return opts


# Clock faults a lease cannot survive by design: a lease is safe only while clocks drift by
# less than its margin (2 ticks of 10), and ``clock`` skews any node's rate by 0.5-2x, so
# under it even the correct build serves stale lease reads. (``slow-leader-clock`` keeps to
# the bound on a lease seed: harness/sim/targeted.py, SlowLeaderClock.LEASE_RATES.)
_UNBOUNDED_DRIFT = frozenset({"clock"})


def _draw_read_mode(seed: int, faults: Sequence[str], nemeses: Sequence[str]) -> str:
    """Lease reads on three seeds in five whose faults keep clocks within the lease's
    drift bound (ReadIndex otherwise; about one swarm seed in four is a lease seed): the
    lease code (its ack ticks, stalls, transfers, check-quorum) then meets partitions,
    crashes, pauses and membership changes, which no seed did when only ``--node-option
    read_mode=lease`` or a planted bug turned it on. A nemesis run alone (``--nemesis
    figure-eight``, regress's and mutate's ``NAME@SEED`` probes) keeps ReadIndex: it replays
    the situation it was built and measured for. Its own RNG: every other draw, and every
    ReadIndex seed's trace, is unchanged."""
    if _UNBOUNDED_DRIFT & set(faults) or len(nemeses) == 1:
        return "readindex"
    return "lease" if random.Random(seed * 4241 + 3).random() < 0.6 else "readindex"


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


def _outcome(reply: tuple[wire.MsgType, dict[str, Any]] | None) -> str:
    """An admin call's outcome as the simulator records it: ok, the error code, or unknown."""
    return "unknown" if reply is None else ("ok" if reply[0] is wire.MsgType.OK else _error_code(reply[1]))


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
        self.on_ack: Any = None  # (node) -> None: a write was acknowledged by that node
        self.only: frozenset[tuple[int, int]] | None = None
        self.last_op: dict[int, int] = {}
        self.issued: list[tuple[int, int]] = []
        self._answered_by: dict[int, str] = {}

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
                self._answered_by[worker] = node
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
        n = -1
        last = self.last_op.get(worker, -1)
        while self.world.now() < until:
            op = self._op(worker)
            n += 1
            step = shrunk_schedule_step(self.only, last, worker, n)
            if step == "stop":
                break
            if step == "skip":
                continue
            self.issued.append((worker, n))
            self.keys_used.add(op["key"])
            self.hist.add(process, "invoke", op["f"], op["key"], op.get("value"),
                          node=self.world.names[worker % len(self.world.names)])
            typ, value, error = await self.call(worker, op)
            if op["f"] == "read" and typ == "ok":
                self.last_read[(worker, op["key"])] = value
                if self.unread.get(worker) == op["key"]:
                    del self.unread[worker]
            elif op["f"] != "read":
                self.unread[worker] = op["key"]
                if typ == "ok" and self.on_ack is not None:
                    self.on_ack(self._answered_by[worker])
            self.hist.add(process, typ, op["f"], op["key"], value if op["f"] == "read" else op.get("value"),
                          error)
            if typ == "info":
                process += self.n  # retired: a fresh process takes its place
            if self.opts["think"]:
                await asyncio.sleep(rng.uniform(0, self.opts["think"]))
        self._process = process

    async def final_reads(self, worker: int, keys: list[int], until: float = float("inf")) -> None:
        """Read each key until a read succeeds or the final phase's time is up (Jepsen's
        until-ok final generator): one lost reply must not leave a key unread, nor make the
        availability checker see a final phase in which nothing succeeded."""
        process = worker + 10_000
        for key in keys:
            while True:
                self.hist.add(process, "invoke", "read", key, None)
                typ, value, error = await self.call(worker, {"f": "read", "key": key})
                self.hist.add(process, typ, "read", key, value, error)
                if typ == "info":
                    process += self.n
                if typ == "ok" or self.world.now() >= until:
                    break
                await asyncio.sleep(0.05)  # a short back-off before the next try


def _replay_sees_damage(files: dict[str, bytes]) -> bool:
    """Would start-up replay see the damage in these WAL segments (name -> bytes after the
    damage), or read it as a crash's torn or zeroed tail, which every policy cuts silently?

    Replayed under RefuseStart on a scratch in-memory file system: it refuses exactly when it
    finds corruption, not a crash tail. A mid-log kind that lands in the last entry of the
    last segment can read as a crash (a zeroed chunk to the end of the file, a length field
    flipped past the end): the node then drops entries it acknowledged without a word, which
    is the stable-storage breach ``_damage`` keeps out (sim seeds 209, 231, 237 and 4551 made
    one; about one damage in eleven)."""
    from ukehi.sim.fs import SimFS
    from ukehi.storage import vfs
    from ukehi.storage.errors import CorruptionRefusedError
    from ukehi.storage.scan import scan_wal

    scratch = SimFS()
    scratch.makedirs("/wal")
    for name, data in files.items():
        fd = scratch.open(f"/wal/{name}", scratch.O_CREAT | scratch.O_WRONLY)
        scratch.write(fd, data)
        scratch.close(fd)
    with vfs.use(scratch):
        try:
            scan_wal("/wal", "refuse-start")
        except CorruptionRefusedError:
            return True
    return False


class _DamageRestart:
    """The pending restart of one ``damage`` fault: its token's argument, equal only to itself."""

    __slots__ = ("node", "restart")

    def __init__(self, node: str) -> None:
        self.node = node
        self.restart: Callable[..., None] = lambda from_undo=False: None

    def __repr__(self) -> str:
        return f"damaged({self.node})"


class _Nemesis:
    def __init__(self, world: SimWorld, hist: _History, opts: dict[str, Any], rng: random.Random) -> None:
        self.world = world
        self.hist = hist
        self.opts = opts
        self.rng = rng
        self.pace = random.Random(rng.getrandbits(64))  # the times of the steps
        self.base = rng.getrandbits(64)  # step i draws from Random(base + i)
        self.steps = 0
        self.skip: frozenset[int] = frozenset()
        self.active: list[tuple[str, Any]] = []
        self.log: list[str] = []
        self.closed = False  # after heal_all: no trigger fires, no delayed restart runs
        self.arm_vote = False
        self.arm_in_flight = False
        self.arm_ack = False
        self.damaged: str | None = None  # at most one node's disk is damaged per seed
        self.max_skew = 0.0  # seconds: the largest |node wall clock - true time| seen (note_skew)
        self.families = make_families(self)

    def _leader(self) -> str | None:
        """The running leader of the highest term (a deposed one may not know it yet)."""
        best: tuple[int, str] | None = None
        for n in self.world.names:
            h = self.world.nodes[n]
            node = h.current.node if h.up and h.current else None
            if node is not None and node.core is not None and node.core.role is Role.LEADER:
                term = node.core.status().term
                if best is None or term > best[0]:
                    best = (term, n)
        return None if best is None else best[1]

    # ---- triggered faults: armed by a step, fired by what the cluster does next
    def _rearm_watch(self) -> None:
        watching = self.arm_vote or self.arm_in_flight or any(f.watching for f in self.families.values())
        self.world.send_watch = self._watch if watching and not self.closed else None
        self.world.note_health()  # an armed trigger may lose or hold any message: not judged

    def _watch(self, src: str, dst: str, body: dict[str, Any]) -> bool:
        """Every Raft message as it leaves its node (while a trigger is armed); False: the
        message is lost (a family makes a leader die mid-send)."""
        keep = True
        for family in self.families.values():
            if family.watching and family.on_send(src, dst, body) is False:
                keep = False
        t = body.get("type")
        if self.arm_vote and t == "vote_response" and body.get("granted") and not body.get("pre_vote"):
            self.arm_vote = False
            self.world.loop.call_soon(self._crash, [src], "after-vote", True)
        elif self.arm_in_flight and t == "append_entries" and body.get("entries"):
            self.arm_in_flight = False
            self.world.loop.call_soon(self._isolate, src, "in-flight")
        self._rearm_watch()
        return keep

    def acked(self, node: str) -> None:
        """A client just got ok for a write from ``node``."""
        if self.arm_ack and not self.closed:
            self.arm_ack = False
            w = self.world
            others = [n for n in w.names if n != node and w.nodes[n].up]
            size = self.rng.choice(["one", "majority", "all"])
            extra = {"one": 0, "majority": len(w.names) // 2, "all": len(others)}[size]
            victims = [node] + self.rng.sample(others, min(extra, len(others)))
            w.loop.call_soon(self._crash, victims, f"after-ack-{size}", size != "all")

    def _crash(self, victims: list[str], trigger: str, quick: bool) -> None:
        """Power-cut ``victims`` (un-fsynced writes lost); ``quick``: restart them soon after."""
        w = self.world
        if self.closed:
            return
        victims = [n for n in victims if w.nodes[n].up]
        if not victims:
            return
        lost = {n: w.crash(n) for n in victims}
        self._record("kill", {"nodes": victims, "lost": lost, "trigger": trigger})
        for n in victims:
            self.active.append(("kill", n))
        if quick:
            el = self.opts["election_ms"][0] / 1000.0
            w.loop.call_later(self.rng.uniform(0.5, 1.5) * self.opts["quick_restart"] * el, self._restart, victims)

    def _restart(self, victims: list[str]) -> None:
        if self.closed:
            return
        back = [n for n in victims if ("kill", n) in self.active]
        for n in back:
            self.active.remove(("kill", n))
            self.undo(("kill", n))

    def _isolate(self, node: str, why: str) -> None:
        """Cut ``node`` (the leader) off: both ways, or only its outbound or inbound links."""
        w = self.world
        if self.closed or not w.nodes[node].up:
            return
        way = self.rng.choice(["both", "outbound", "inbound"])
        for other in w.names:
            if other != node:
                if way in ("both", "outbound"):
                    w.block(node, other)
                if way in ("both", "inbound"):
                    w.block(other, node)
        self._record("start-partition", {"topology": f"leader-{why}", "node": node, "way": way})
        self.active.append(("partition", None))

    def _damage(self) -> None:
        """Power-cut a node, damage one WAL segment, restart it under the seed's policy, and
        record it as the disk nemesis does (``corrupt-wal``, node -> segment, changes, pid
        of the restart, how the restart ended), so the CorruptionPolicy checker and the
        white-box checkers read it alike. Only one node's disk is ever damaged in a seed:
        damaged disks on a majority may lose committed entries under any policy, which no
        checker should blame on Raft (the real disk nemesis's default targets one node)."""
        w = self.world
        n = self.damaged or self.rng.choice(w.names)
        if not w.nodes[n].up and ("kill", n) not in self.active:
            return  # it exited on its own (refused to start): it stays down, as for real
        if not any(len(w.fs.read_bytes(p) or b"") > _SEG_HEADER + 1 for p in w.fs.files(w.nodes[n].prefix)
                   if p.endswith(".seg")):
            return  # nothing written yet (a spare, say): nothing to damage
        self.damaged = n
        if w.nodes[n].up:
            w.crash(n)
        else:
            self.active.remove(("kill", n))
        # The disk nemesis's own damage (nemeses.disk.damage: bit flips, zeroed or copied
        # chunks that really change bytes, truncation, torn tail) on the bytes the disk holds.
        # Only damage the CRC can see (bit flips, zeroed or copied chunks in the middle):
        # a truncated file or torn tail cut at any time looks like a crash and is cut
        # silently under every policy, so it silently drops acknowledged entries from
        # one node; with one more node lacking them, a majority elects a leader without
        # committed entries. That breaks Raft's stable-storage assumption, not Ukehi. So a
        # mid-log kind that would still read as a crash's tail (it hit the last entry of the
        # last segment) is not applied either (_replay_sees_damage).
        from nemeses.disk import MID_LOG_KINDS as KINDS
        from nemeses.disk import DiskFaultError
        from nemeses.disk import damage as disk_damage

        kind = self.rng.choice(sorted(KINDS))
        segs = sorted(p for p in w.fs.files(w.nodes[n].prefix) if p.endswith(".seg"))
        path = self.rng.choice(segs)
        entry: dict[str, Any] = {"kind": kind, "file": path, "segment": path.rsplit("/", 1)[-1]}
        spot = None
        after = None
        hit = None
        try:
            hit = disk_damage(w.fs.read_bytes(path) or b"", kind, self.rng)
        except DiskFaultError as err:
            entry["error"] = str(err)
        else:
            wal_dir = path.rsplit("/", 1)[0]
            files = {p.rsplit("/", 1)[-1]: hit.data if p == path else (w.fs.read_bytes(p) or b"")
                     for p in segs if p.rsplit("/", 1)[0] == wal_dir}
            if not _replay_sees_damage(files):
                hit = None
                entry["error"] = ("this damage would read as a crash's torn or zeroed tail (in the last entry "
                                  "of the last segment), which every policy cuts silently: not applied")
                w.event(f"damage {n} {path} {kind} not applied: reads as a crash tail")
        if hit is not None:
            w.fs.overwrite(path, hit.data)
            w.event(f"damage {n} {path} {kind} {[(c['offset'], c['before_len'], c['after_len']) for c in hit.changes]}")
            spot = {"path": path}
            entry["changes"] = hit.changes
            after = hit.data
        self.hist.add("nemesis", "invoke", "corrupt-wal", value={"nodes": [n]})
        # Its own kind of active fault: only this op restarts the node (on its timer, or
        # when an undo or the final heal gets to it first), so the restart is recorded.
        # The token is this damage's own (compared by identity): with ("damaged", n), the
        # timer of an earlier damage that an undo had already restarted took a later
        # damage's token, restarted the node as the earlier damage's and rewrote that
        # record's pid, so the policy checker judged the wrong process (sim seed 5574).
        pending = _DamageRestart(n)
        token = ("damaged", pending)
        self.active.append(token)

        def restart(from_undo: bool = False) -> None:
            if not from_undo:
                if self.closed or token not in self.active:
                    return
                self.active.remove(token)
            w.restart(n)
            h = w.nodes[n]
            entry["pid"] = h.current.node.pid if h.current and h.current.node else None
            w.loop.call_later(0.05, observe, h.current, 100)

        def observe(inc: Any, tries: int) -> None:
            # Until the restarted process serves (phase running) or exits on its own, as the
            # disk nemesis's await_start; another fault may kill it first (end unknown).
            if inc.crashed:
                entry.update({"started": None, "error": "killed by another fault before it served"})
            elif inc.dead and inc.exit_code is not None:
                entry.update({"started": False, "exit_code": inc.exit_code, "refused": inc.exit_code == 4})
                if spot is not None:
                    entry["wal_unchanged"] = w.fs.read_bytes(spot["path"]) == after
            elif inc.node is not None and inc.node.phase == "running":
                entry["started"] = True
            elif tries > 0:
                w.loop.call_later(0.05, observe, inc, tries - 1)
                return
            else:
                entry.update({"started": None, "error": "neither serving nor exited 5 s after restart"})
            # A copy: the history holds what was observed now, whatever happens to ``entry`` later.
            value = {"nodes": {n: dict(entry)} if spot is not None else {},
                     "policy": self.opts["corruption_policy"], "victim": n}
            self.hist.add("nemesis", "info", "corrupt-wal", value=value)
            self.log.append(f"{w.now():.3f} corrupt-wal {value}")

        pending.restart = restart
        el = self.opts["election_ms"][0] / 1000.0
        w.loop.call_later(self.rng.uniform(0.5, 1.5) * self.opts["quick_restart"] * el, restart)

    def _target(self) -> str:
        lead = self._leader()
        if lead is not None and self.rng.random() < 0.5:
            return lead
        return self.rng.choice(self.world.names)

    def _record(self, f: str, value: Any) -> None:
        self.hist.add("nemesis", "invoke", f, value=value)
        self.hist.add("nemesis", "info", f, value=value)
        self.log.append(f"{self.world.now():.3f} {f} {value}")

    def _leader_membership(self) -> tuple[str, Any] | None:
        """The leader (``_leader``) and the configuration its core holds; None: no leader."""
        lead = self._leader()
        if lead is None:
            return None
        inc = self.world.nodes[lead].current
        assert inc is not None and inc.node is not None and inc.node.core is not None
        return lead, inc.node.core.membership

    def _membership(self) -> None:
        """Add a spare (a node outside the configuration) or remove a voter (the leader
        too) while more than MIN_VOTERS remain; a removed node is stopped, its data dir
        wiped, and it comes back as a spare that may be added again later."""
        from ukehi.config import format_address

        w = self.world
        found = self._leader_membership()
        if found is None:
            return
        lead, m = found
        if m.joint:
            return
        spares = [n for n in w.names if n not in m.all_nodes() and w.nodes[n].up]
        voters = sorted(m.voters)
        if spares and (len(voters) <= MIN_VOTERS or self.rng.random() < 0.5):
            n = self.rng.choice(spares)
            f, body = "add-node", {"node": n, "address": format_address(w.addresses[n])}
            t = wire.MsgType.ADD_NODE
        elif len(voters) > MIN_VOTERS:
            n = self.rng.choice(voters)
            f, body, t = "remove-node", {"node": n}, wire.MsgType.REMOVE_NODE
        else:
            return
        self.hist.add("nemesis", "invoke", f, value={"node": n, "via": lead})

        async def call() -> None:
            outcome = _outcome(await w.request(lead, t, body, 15.0))
            self.hist.add("nemesis", "info", f, value={"node": n, "via": lead, "outcome": outcome})
            self.log.append(f"{w.now():.3f} {f} {n} via {lead}: {outcome}")
            if f == "remove-node" and outcome == "ok" and not self.closed and w.nodes[n].up:
                w.crash(n)
                w.wipe(n)
                w.restart(n)
                self._record("wipe-and-rejoin", {"node": n})

        w.loop.create_task(call())

    def _transfer(self) -> None:
        """Ask the leader to hand leadership to a voter; the answer is recorded when it comes
        (the availability verdict's transfer-refused rule judges the outcomes)."""
        w = self.world
        found = self._leader_membership()
        if found is None:
            return
        lead, membership = found
        # Any other node, as every seed drew it before transfers were judged (the same draw
        # keeps every seed's schedule); a target that is no voter is refused by design and
        # recorded as skipped, not judged.
        n = self.rng.choice([n for n in w.names if n != lead])
        voter = n in membership.voters
        self.hist.add("nemesis", "invoke", "transfer-leader", value={"node": n, "via": lead})

        async def call() -> None:
            outcome = _outcome(await w.request(lead, wire.MsgType.TRANSFER_LEADER, {"node": n}, 5.0))
            value: dict[str, Any] = {"node": n, "via": lead, "outcome": outcome}
            if not voter:
                value["skipped"] = f"{n} was not a voter of {lead}'s configuration"
            self.hist.add("nemesis", "info", "transfer-leader", value=value)
            self.log.append(f"{w.now():.3f} transfer-leader to {n} via {lead}: {outcome}")

        w.loop.create_task(call())

    def _partition(self) -> None:
        from nemeses.topology import bridge, grudge, halves, isolate_one, majorities_ring, random_minority

        names = self.world.names
        shape = self.rng.choice(self.opts["topologies"])
        one_way = shape == "one-way"
        if shape == "leader":
            lead = self._leader()
            if lead is not None:
                self._isolate(lead, "now")
                return
            shape = "one"
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
            self.note_skew()
            w.set_clock(n, rate=rate, bump=bump)
            self.note_skew()
            self._record("clock-skew", {"node": n, "rate": rate, "bump": bump})
            self.active.append(("clock", (n, bump)))
        elif kind == "crash-after-vote":
            self.arm_vote = True
            self._rearm_watch()
        elif kind == "partition-in-flight":
            self.arm_in_flight = True
            self._rearm_watch()
        elif kind == "crash-after-ack":
            self.arm_ack = True
        elif kind == "damage":
            self._damage()
        elif kind == "slow":
            n = self.rng.choice(w.names)
            way = self.rng.choice(["both", "outbound", "inbound"])
            extra = round(self.rng.uniform(0.5, 3.0) * self.opts["election_ms"][1] / 1000.0, 4)
            for other in w.names:
                if other != n:
                    if way in ("both", "outbound"):
                        w.slow_link(n, other, extra)
                    if way in ("both", "inbound"):
                        w.slow_link(other, n, extra)
            self._record("start-slow", {"node": n, "way": way, "extra_s": extra})
            self.active.append(("slow", None))
        elif kind == "membership":
            self._membership()
        elif kind in self.families:
            self.families[kind].arm(random.Random(self.rng.getrandbits(64)))
        elif kind == "transfer":
            self._transfer()
        elif kind == "snapshot":
            lead = self._leader()
            if lead is not None:
                w.loop.create_task(w.request(lead, wire.MsgType.SNAPSHOT, {}, 5.0))
                self._record("snapshot", {"node": lead})

    def undo(self, fault: tuple[str, Any]) -> None:
        w = self.world
        kind, arg = fault
        if kind == "partition":
            w.heal()
            self._record("stop-partition", None)
        elif kind == "kill":
            w.restart(arg)
            self._record("start", [arg])
        elif kind == "damaged":
            arg.restart(from_undo=True)
        elif kind == "pause":
            w.resume(arg)
            self._record("resume", [arg])
        elif kind == "slow":
            w.unslow()  # messages already sent still arrive late
            self._record("stop-slow", None)
        elif kind == "clock":
            n, bump = arg
            self.note_skew()
            w.set_clock(n, rate=1.0, bump=-bump)
            self.note_skew()
            self._record("clock-reset", {"node": n})

    def note_skew(self) -> None:
        """Track the largest wall-clock error any node had. Between clock changes an error
        grows linearly, so its largest value is at a change or at the end: noting it
        around every change (and once at the end) finds the maximum."""
        now = self.world.now()
        for h in self.world.nodes.values():
            error = h.wall_offset + h.mono_base + h.rate * (now - h.rate_since) - now
            self.max_skew = max(self.max_skew, abs(error))

    def heal_all(self) -> None:
        self.closed = True
        self.arm_vote = self.arm_in_flight = self.arm_ack = False
        for family in self.families.values():
            family.stop()  # its cuts and held links undone; its crashed nodes restart below
        self._rearm_watch()
        while self.active:
            self.undo(self.active.pop(0))

    async def run(self, until: float) -> None:
        while True:
            await asyncio.sleep(self.pace.uniform(0.5, 1.5) * self.opts["fault_interval"])
            if self.world.now() >= until:
                return
            i = self.steps
            self.steps += 1
            if i in self.skip:
                continue
            # Its own RNG per step (triggers that fire later draw from the latest step's),
            # so a shrunk schedule without some steps keeps the others' choices.
            self.rng = random.Random(self.base + i)
            self.log.append(f"{self.world.now():.3f} step {i}")
            self.step()


def _world_options(opts: dict[str, Any], settings: SimSettings) -> WorldOptions:
    return WorldOptions(
        nodes=opts["nodes"], election_ms=tuple(opts["election_ms"]), heartbeat_ms=opts["heartbeat_ms"],
        snapshot_threshold=opts["snapshot_threshold"], max_entries_per_message=opts["max_entries_per_message"],
        max_inflight=opts["max_inflight"], delay=tuple(opts["delay"]), loss=opts["loss"],
        duplicate=opts["duplicate"], torn_probability=opts["torn_probability"],
        founders=opts["founders"], unsafe_bug=settings.option("unsafe_bug"), read_mode=opts.get("read_mode") or settings.option("read_mode", "readindex"),
        corruption_policy=opts["corruption_policy"],
        wal_segment_size=opts.get("wal_segment_size", WorldOptions.wal_segment_size),
    )


def run_seed(seed: int, settings: SimSettings = SimSettings(), *, keep_world: bool = False) -> SimResult:
    """Simulate one seed and judge it. Deterministic: same seed and settings, same digest."""
    started = time.monotonic()
    settings = resolve_workload(seed, settings)
    opts = swarm(seed, settings)
    world = SimWorld(seed, _world_options(opts, settings))
    hist = _History(world)
    master = random.Random(seed ^ 0xC11E)
    client_rng = random.Random(master.getrandbits(64))
    clients: Any
    if settings.workload == "register":
        clients = _Clients(world, hist, opts, client_rng)
    else:
        clients = WorkloadClients(world, hist, opts, client_rng, settings.workload, opts["workload_options"])
    nemesis = _Nemesis(world, hist, opts, random.Random(master.getrandbits(64)))
    clients.on_ack = nemesis.acked
    if settings.only_ops is not None:
        clients.only = frozenset((int(w), int(n)) for w, n in settings.only_ops)
        for w, n in clients.only:
            clients.last_op[w] = max(clients.last_op.get(w, -1), n)
    nemesis.skip = frozenset(settings.skip_faults)
    duration = settings.duration
    settle = 3 * opts["election_ms"][1] / 1000.0

    probes: list[dict[str, Any]] = []  # the bad-input battery's records (harness/probes.py)
    idle: dict[str, Any] = {}  # each node's work in the idle window (busy-when-idle)

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
        if settings.workload == "register":
            keys = sorted(clients.keys_used)
            per = max(1, len(keys) // clients.n + 1)
            final_until = world.now() + FINAL_PHASE_S
            finals = [world.loop.create_task(clients.final_reads(w, keys[w * per:(w + 1) * per], final_until))
                      for w in range(clients.n)]
            for t in finals:
                await t
        else:
            await clients.final_phase(FINAL_PHASE_S)
        await consistency_check(world, settle)
        await final_transfers(world, nemesis, hist, opts)
        probes.extend(await run_sim_battery(world))
        idle.update(await idle_work(world, nemesis, settle))
        await world.stop_all()

    world.loop.max_steps = settings.max_steps or auto_max_steps(duration)
    runaway = None
    try:
        world.run(scenario())
    except EventBudgetExceeded as err:
        runaway = str(err)
        with vfs.use(world.fs):  # the nodes' shutdown code must close simulated files, not real fds
            world.loop.abandon()
    # Let callbacks still scheduled (replies in flight) go nowhere: the loop is done.
    nemesis.note_skew()
    # Two leaders' clocks may be off in opposite directions: they disagree by up to twice that.
    opts["clock_skew_ms"] = round(2000 * nemesis.max_skew, 3)
    judging = time.monotonic()
    result = judge(seed, settings, opts, world, hist.ops, idle=idle)
    if probes:  # judged as in a real run (checkers/probes.py)
        result.checkers["bad-input"] = check_probes(probes)
        result.valid = merge_valid(r.get("valid", "unknown") for r in result.checkers.values())
    if runaway is not None:
        # What happened up to the stop is still judged (a safety violation found there
        # stands); the seed as a whole is at most unknown, never valid.
        result.checkers["event-budget"] = {
            "valid": "unknown",
            "explanation": f"stopped as a runaway after {runaway} (budget: --max-steps); the history "
                           "up to there was judged. A livelock is a liveness problem worth a look: "
                           "replay the seed and read its trace."}
        if result.valid is not False:
            result.valid = "unknown"
    result.faults = nemesis.log
    result.fault_steps = nemesis.steps
    result.client_ops = clients.issued
    result.idle = idle
    result.wall_seconds = time.monotonic() - started
    result.judge_seconds = result.wall_seconds - (judging - started)
    if keep_world:
        result.world = world
    return result


async def consistency_check(world: SimWorld, settle: float, timeout: float = 5.0) -> bool:
    """As at the end of a real run (harness/consistency.py): the leader commits one checksum
    entry, every replica logs its state's digest there (the replica-agreement checker
    compares them); then ``settle`` virtual seconds for the followers to apply it. True when a
    leader answered. Asks each node in turn and follows a leader hint; a lost answer is asked
    again (a second checksum entry is harmless)."""
    deadline = world.now() + timeout
    order = list(world.names)
    done = False
    while not done and world.now() < deadline:
        node = order[0]
        order = order[1:] + order[:1]
        for _ in range(3):
            reply = await world.request(node, wire.MsgType.CHECKSUM, {}, max(0.05, min(1.0, deadline - world.now())))
            if reply is None:
                break
            kind, body = reply
            if kind is wire.MsgType.OK:
                done = True
                break
            err = body.get("error") if isinstance(body.get("error"), dict) else {}
            leader = (err or {}).get("leader") or body.get("leader")
            if leader not in world.nodes or leader == node:
                break
            node = leader
    await asyncio.sleep(settle)
    return done


#: leadership transfers asked for at the end of every seed (the transfer-refused rule needs 3)
FINAL_TRANSFERS = 3


async def final_transfers(world: SimWorld, nemesis: "_Nemesis", hist: _History, opts: dict[str, Any]) -> None:
    """With every fault healed, ask the leader to hand leadership to another running voter,
    up to FINAL_TRANSFERS times (a new target each time) until one is done, each recorded as
    a ``transfer-leader`` the availability verdict's transfer-refused rule judges: a whole
    cluster hands leadership over, and a build that never does would otherwise pass every
    seed whose nemesis drew no transfer in a quiet moment. The target runs, is not paused and
    is not recovering from a WAL cut (it would not campaign); none is asked while the
    configuration is joint or no such voter exists."""
    el = opts["election_ms"][1] / 1000.0
    for attempt in range(FINAL_TRANSFERS):
        found = nemesis._leader_membership()
        if found is None:
            await asyncio.sleep(el)
            continue
        lead, membership = found
        targets = [n for n in sorted(membership.voters) if n != lead and _can_lead(world, n)]
        if membership.joint or not targets:
            return
        target = targets[attempt % len(targets)]
        hist.add("nemesis", "invoke", "transfer-leader", value={"node": target, "via": lead, "final": True})
        outcome = _outcome(await world.request(lead, wire.MsgType.TRANSFER_LEADER, {"node": target}, 4 * el + 1.0))
        hist.add("nemesis", "info", "transfer-leader",
                 value={"node": target, "via": lead, "final": True, "outcome": outcome})
        if outcome == "ok":
            return


#: busy-when-idle (checkers/availability.py): virtual seconds each node's work is counted, as
#: in a real run (harness/run.py IDLE_WINDOW_S)
IDLE_WINDOW_S = 2.0


def _idle_status(node: Any) -> dict[str, Any]:
    """What idle_work needs of a running node's status, under the names of ukehi's status
    answer (ukehi/node/api.py), so a real run's helpers (checkers/availability.py
    ``idle_caught_up``, ``idle_record``) read it the same way."""
    from ukehi.node.driver import ROLE_NAMES

    st = node.core.status() if node.core is not None else None
    out: dict[str, Any] = {"readies": node.driver.readies, "messages_sent": node.driver.messages_sent,
                           "heartbeat_ms": node.config.heartbeat_ms,
                           "election_timeout_ms": list(node.config.election_timeout_ms),
                           "applied_index": node.driver.applied}
    if st is None:  # no core yet: as the status answer of a node still opening its data
        return {**out, "role": "follower", "term": 0, "commit_index": 0, "members": [], "learners": []}
    return {**out, "role": ROLE_NAMES.get(st.role, st.role.value), "term": st.term, "commit_index": st.commit,
            "members": sorted(st.membership.voters | st.membership.outgoing),
            "learners": sorted(st.membership.learners)}


async def idle_work(world: SimWorld, nemesis: "_Nemesis", settle: float) -> dict[str, Any]:
    """As at the end of a real run (harness/run.py ``_idle_work``, with the same record and
    caught-up test): once every running member of the leader's configuration has applied
    what the leader committed (or ``settle`` virtual seconds passed), each running node's
    Readies handled and peer messages sent per virtual second over IDLE_WINDOW_S, with no
    client and no fault."""
    from checkers.availability import idle_caught_up, idle_record

    def running() -> dict[str, Any]:
        return {n: h.current.node for n in world.names
                if (h := world.nodes[n]).up and not h.paused and h.current is not None and h.current.node is not None}

    deadline = world.now() + settle
    while True:
        nodes = running()
        first = {n: _idle_status(node) for n, node in nodes.items()}
        caught_up = idle_caught_up(first)
        if caught_up or world.now() >= deadline:
            break
        await asyncio.sleep(0.05)
    start = world.now()
    await asyncio.sleep(IDLE_WINDOW_S)
    # a node restarted in the window has a new driver whose counters started again: left out
    second = {n: _idle_status(node) for n, node in running().items() if n in nodes and node.driver is nodes[n].driver}
    return idle_record(first, second, world.now() - start, caught_up=caught_up, virtual=True)


def _can_lead(world: SimWorld, name: str) -> bool:
    h = world.nodes[name]
    inc = h.current
    core = inc.node.core if h.up and not h.paused and inc is not None and inc.node is not None else None
    return core is not None and not core.recovering


def auto_max_steps(duration: float) -> int:
    """The default loop-iteration budget of a seed: correct seeds of 10 virtual seconds ran
    8,000-81,000 iterations when measured; this leaves about ten times that."""
    return int(400_000 + 40_000 * max(duration, 0.0))


def history_text(ops: list[Op]) -> str:
    return "".join(dumps_op(op) + "\n" for op in ops)


def judge(seed: int, settings: SimSettings, opts: dict[str, Any], world: SimWorld, ops: list[Op], *,
          idle: dict[str, Any] | None = None) -> SimResult:
    from checkers.results import merge_valid
    from harness.registry import WORKLOADS as REGISTRY

    workload = REGISTRY[settings.workload]([], opts["clients"], opts.get("workload_options", {}))
    checkers: dict[str, Any] = {}
    # Lock leases are stamped with the leader's wall clock, so the lock-exclusion checker may
    # only hold the cluster to exclusion within the clock disagreement the seed's clock
    # faults made (measured, not guessed); without clock faults it is the default slack.
    from checkers.locks import DEFAULT_SLACK_MS

    options = {"time_limit": 60.0, "clock_slack_ms": DEFAULT_SLACK_MS + opts.get("clock_skew_ms", 0.0)}
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="ukj-sim-", dir=base) if settings.whitebox else None
    try:
        exported = None
        if tmp is not None:
            try:
                world.export(os.path.join(tmp, "nodes"))
                exported = tmp
            except Exception as err:  # noqa: BLE001 - the white-box verdicts are unknown, not a crash
                checkers["whitebox"] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
        cluster = _read_cluster(world, exported, settings.workload)
        _judge_history(settings, world, ops, workload.checkers, options, exported, checkers, cluster)
        if exported is not None:
            _judge_nodes(settings, opts, world, ops, options, exported, checkers, cluster)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    loop = world.loop
    if loop.max_steps is None or loop.steps <= loop.max_steps:  # a runaway's seed is unknown anyway
        # As a real run's availability checker: a cluster that never served, never served one
        # kind of op, refused every membership change, or served nothing after the heal.
        from checkers.availability import check_sim_availability

        checkers["availability"] = check_sim_availability(ops, **availability_inputs(world, ops, opts, settings),
                                                          idle=idle)
    # Wasted work no other verdict sees (checkers/whitebox/wasted.py): fsyncs of clean
    # files, needless re-sends and oversized appends, from the simulator's own records.
    from checkers.whitebox.wasted import check_wasted_work

    checkers.update(check_wasted_work(world.fs.clean_fsyncs, {n: h.prefix for n, h in world.nodes.items()},
                                      world.waste.summary()))
    if settings.whitebox:
        # Replay never drops fsynced, undamaged bytes (checkers/whitebox/durable_cut.py); log
        # lines find their incarnation by the simulated pid (sim_pid(index, k), SimWorld.start).
        from checkers.whitebox.durable_cut import NAME as DURABLE_CUT, check_durable_cut
        from ukehi.sim.world import sim_pid

        checkers[DURABLE_CUT] = check_durable_cut(
            {n: h.log.getvalue() for n, h in world.nodes.items()},
            {n: world.fs.starts.get(h.prefix, []) for n, h in world.nodes.items()}, world.fs.damaged,
            {n: sim_pid(h.index, 0) for n, h in world.nodes.items()})
    valid = merge_valid(r.get("valid", "unknown") for r in checkers.values())
    digest = world.digest(history_text(ops))
    return SimResult(seed=seed, valid=valid, digest=digest, options=opts, checkers=checkers, history=ops,
                     virtual_seconds=world.now(), ops=sum(1 for o in ops if o.type == "invoke" and o.is_client))


#: how long, in maximum election timeouts, a majority of voters that is up with nothing
#: impaired may go without serving before the liveness rule judges it
LIVENESS_GRACE_TIMEOUTS = 3
#: the same where the seed's links lose messages: each election round then fails with some
#: chance (a lost pre-vote, vote or grant), so a correct pair of nodes took 3 rounds (seed
#: 260 at 1% loss, seed 3 of the figure-eight family at 5%)
LIVENESS_GRACE_TIMEOUTS_LOSSY = 8


def availability_inputs(world: SimWorld, ops: list[Op], opts: dict[str, Any], settings: SimSettings) -> dict[str, Any]:
    """The availability verdict's inputs for a simulated seed (``check_sim_availability``'s
    keyword arguments besides the history; harness/sim/store.py stores them)."""
    settle = 3 * opts["election_ms"][1] / 1000.0  # run_seed: the first election's wait
    timeouts = LIVENESS_GRACE_TIMEOUTS if not opts.get("loss") else LIVENESS_GRACE_TIMEOUTS_LOSSY
    return {"logs": {n: world.nodes[n].log.getvalue() for n in world.names},
            "main_end_s": settle + settings.duration,
            "healthy": healthy_stretches(world, ops, opts, settle + settings.duration),
            "grace_s": timeouts * opts["election_ms"][1] / 1000.0,
            # kind-never-served: how long after a fault window ends its effect may last
            "recovery_s": opts["election_ms"][1] / 1000.0}


def connected_majority(voters: set[str], down: frozenset[str], cut: frozenset[tuple[str, str]],
                       slow: frozenset[tuple[str, str]], skewed: frozenset[str],
                       watched: bool = False) -> frozenset[str] | None:
    """The voters Raft must let elect a leader in this fault state, or None: a majority M of
    ``voters``, all up, with every link between two of them whole (not cut, held or slowed)
    and clocks at the normal rate, and every other running voter cut off from every member of
    M both ways. A voter that can still reach part of M (a bridge, a one-way cut) may keep
    a leadership M cannot take over, so such states are not judged; nor are those in which a
    fault trigger watches the messages (``watched``: it may lose any of them)."""
    if watched:
        return None
    up = {n for n in voters if n not in down}
    # The running voters' groups: who can still exchange anything (cut one way is not cut).
    groups: list[set[str]] = []
    for n in sorted(up):
        linked = [g for g in groups if any((n, m) not in cut or (m, n) not in cut for m in g)]
        merged = {n}.union(*linked)
        groups = [g for g in groups if g not in linked] + [merged]
    for g in groups:
        if 2 * len(g) > len(voters):
            whole = not (g & skewed) and not any(a in g and b in g for a, b in cut | slow)
            return frozenset(g) if whole else None
    return None


def healthy_stretches(world: SimWorld, ops: list[Op], opts: dict[str, Any],
                      until: float) -> list[tuple[float, float, frozenset[str]]]:
    """(start, end, nodes outside the majority) of the spans before ``until`` in which a
    majority of the founding voters was up and connected (``connected_majority``): Raft
    promises a leader there. None in a seed whose configuration changed (add/remove) or
    whose disk was damaged (a recovering node does not vote): who may vote is then more than
    this timeline knows."""
    if any(not o.is_client and o.f in ("add-node", "remove-node", "wipe-and-rejoin", "corrupt-wal") for o in ops):
        return []
    voters = set(world.names[:opts["founders"]])
    out: list[tuple[float, float, frozenset[str]]] = []
    marks = [(t, connected_majority(voters, *state)) for t, *state in world.health]
    marks.append((until, None))
    for (t, majority), (t_next, _) in zip(marks, marks[1:]):
        end = min(t_next, until)
        if majority is None or end <= t:
            continue
        outside = frozenset(world.names) - majority
        if out and out[-1][1] == t and out[-1][2] == outside:
            out[-1] = (out[-1][0], end, outside)  # only the nodes outside it changed: one span
        else:
            out.append((t, end, outside))
    return out


def _read_cluster(world: SimWorld, tmp: str | None, workload: str) -> Any:
    """The exported node files read once (``checkers.whitebox.read_cluster``) for both readers
    below, or None: the resolution of info writes (``resolve_from_files``) and the white-box
    checkers (``check_run_nodes``) each read and parse every node's files, the same files
    under the same names, and parsing the logs was a tenth of a seed's judging. Shared, as
    both functions' own bodies would read it: neither reader changes the cluster but for
    ``mark_damaged``, which both apply with the same history (idempotent), so the second
    reader sees what a fresh read would give it. None (each reads on its own, as before)
    when only one of them reads (a workload without a resolution), the export failed, or
    reading fails (each then reports the failure its own way)."""
    from checkers.whitebox import read_cluster
    from checkers.whitebox.resolve import RESOLVABLE

    if tmp is None or workload not in RESOLVABLE:
        return None
    base = os.path.join(tmp, "nodes")
    # check_run_nodes reads the names it is given plus every other directory there: the same
    # list here, or no sharing.
    dirs = sorted(e.name for e in os.scandir(base) if e.is_dir()) if os.path.isdir(base) else []
    if list(dict.fromkeys([*world.names, *dirs])) != list(world.names):
        return None
    try:
        return read_cluster(base, list(world.names))
    except Exception:  # noqa: BLE001 - the readers below meet the same failure and report it
        return None


def _judge_history(settings: SimSettings, world: SimWorld, ops: list[Op], workload_checkers: dict[str, Any],
                   options: dict[str, Any], tmp: str | None, checkers: dict[str, Any], cluster: Any = None) -> None:
    """The workload's checkers, as in a real run: linearizable and elle judge the view where
    each info write that no node's files ever held is a fail (checkers/whitebox/resolve.py),
    when the node files were exported (``cluster``: those files already read, _read_cluster)."""
    from checkers.whitebox.resolve import (JUDGE_RESOLVED_VIEW, RESOLVABLE, Resolution, judge_resolved,
                                           resolve_from_files, resolve_info)

    resolution: Resolution | None = None
    if tmp is not None and settings.workload in RESOLVABLE:
        if cluster is not None:
            try:  # as resolve_from_files over files already read
                resolution = resolve_info(cluster, ops, settings.workload, world.names)
            except Exception as err:  # noqa: BLE001 - no resolution is the safe answer
                resolution = Resolution(refused=f"the node files could not be read ({type(err).__name__}: {err})")
        else:
            resolution = resolve_from_files(os.path.join(tmp, "nodes"), world.names, ops, settings.workload,
                                            world.names)
    view = resolution.view(ops) if resolution is not None else ops
    for name, check in workload_checkers.items():
        try:
            if resolution is not None and name in JUDGE_RESOLVED_VIEW:
                checkers[name] = judge_resolved(check, ops, view, resolution, options)
            else:
                checkers[name] = check(ops, options)
        except Exception as err:  # noqa: BLE001 - a crash is an unknown verdict
            checkers[name] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}


def _judge_nodes(settings: SimSettings, opts: dict[str, Any], world: SimWorld, ops: list[Op],
                 options: dict[str, Any], tmp: str, checkers: dict[str, Any], cluster: Any = None) -> None:
    """The white-box checkers over the exported node files (``cluster``: already read, see
    _read_cluster), and the corruption-policy checker after WAL damage, as in a real run
    with the disk nemesis."""
    from pathlib import Path

    from checkers.whitebox import check_run_nodes, check_whitebox

    try:
        if cluster is not None:  # check_run_nodes' own body, over the files already read
            base = Path(tmp) / "nodes"
            wb = check_whitebox(cluster, ops, settings.workload, {n: base / n for n in world.names})
        else:
            wb = check_run_nodes(tmp, world.names, ops, settings.workload)
        checkers.update(wb)
        if any(o.f == "corrupt-wal" and not o.is_client and o.type != "invoke" and (o.value or {}).get("nodes")
               for o in ops):
            # As a real run with the disk nemesis: did each damaged node keep its policy's promise?
            from checkers.policy import policy_checker

            logs = {n: os.path.join(tmp, "nodes", n, "node.log") for n in world.names}
            checkers["corruption-policy"] = policy_checker(logs, opts["corruption_policy"])(ops, options)
    except Exception as err:  # noqa: BLE001
        checkers["whitebox"] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}


def settings_dict(settings: SimSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["node_options"] = dict(settings.node_options)
    return d


def trace_digest(result: SimResult) -> str:
    return hashlib.sha256(result.digest.encode()).hexdigest()[:16]
