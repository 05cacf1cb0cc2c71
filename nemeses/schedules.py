"""Fast schedules aimed where Raft breaks: flapping partitions, leader churn, crashes right
after an acknowledgement.

- ``flapping``: one op cuts and heals the network every few hundred milliseconds
  (``period_ms``) for ``duration_s``, shorter than a client's time-out, so requests start
  under one topology and finish under another. Each cut is drawn like the partition
  family's default (the leader(s) half the time); every step is recorded.
- ``leader-churn``: one op deposes the leader again and again, once per election timeout
  (read from node status), for ``duration_s``: it either isolates the leader with as many
  followers as keeps its side a minority (on 3 nodes, the leader alone), or kills it; it
  waits until another node leads, records the new leader and how long the election took,
  then heals (reconnects or restarts) and goes on. Every round is a leader change with
  entries in flight. The moment the new leader is seen (while the heal runs) the op fires
  ``reads`` reads and ``writes`` write of keys the workload just wrote straight at it,
  recorded in the history as client ops of the nemesis's own processes
  (nemeses/leader_reads.py; in runs, whose context has ``client_ops``), so a new leader
  that answers before its term's no-op commits, or on a stale lease, shows in the
  linearizability check.
- ``crash-after-ack`` / ``lazyfs-after-ack``: crash points at the durability boundary. The
  op polls the leader's status until its applied index moves (it has just applied, so
  acknowledged, new writes) and at once kills it with SIGKILL (``crash-after-ack``) or cuts
  the power of every node, dropping what none of them fsynced (``lazyfs-after-ack``, data
  directories on LazyFS). A node that acknowledges before its write is durable loses an
  acknowledged write at exactly the moment a random schedule only sometimes hits.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from . import partition
from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import claimed_leaders, primaries, stopped
from .topology import TOPOLOGIES, grudge, isolate
from .watch import schedule_package

FLAP, STOP_FLAP = "flap-partition", "stop-flapping"
FLAP_SHADING = Shading("flapping", start=(FLAP,), stop=(STOP_FLAP,))
CHURN, STOP_CHURN = "churn-leader", "stop-churn"
CHURN_SHADING = Shading("leader-churn", start=(CHURN,), stop=(STOP_CHURN,))
CRASH_AFTER_ACK, RESTART = "crash-after-ack", "restart-after-crash"
CRASH_SHADING = Shading("crash-after-ack", start=(CRASH_AFTER_ACK,), stop=(RESTART,))
POWER_CUT_AFTER_ACK, POWER_ON = "power-cut-after-ack", "power-on-after-cut"
POWER_SHADING = Shading("lazyfs-after-ack", start=(POWER_CUT_AFTER_ACK,), stop=(POWER_ON,))


def _elapsed_ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


async def _live_statuses(ctx: FaultContext) -> dict[str, Any]:
    live = [n for n in sorted(ctx.nodes) if not stopped(ctx, n)]
    return dict(await ctx.statuses(live)) if live else {}


def flapping_package(ctx: FaultContext, period_ms: tuple[float, float] = (150.0, 400.0),
                     duration_s: float = 3.0) -> NemesisPackage:
    """Partition and heal every ``period_ms`` (drawn per phase) for ``duration_s`` per op."""
    names = sorted(ctx.nodes)
    paused: set[str] = set()

    async def flap(op: OpDict) -> dict[str, Any]:
        rng = random.Random(op["value"].get("seed", 0))
        t0 = time.monotonic()
        steps: list[dict[str, Any]] = []
        while time.monotonic() - t0 < op["value"].get("duration_s", duration_s):
            topology = rng.choice(partition.LEADER_HEAVY)
            if topology == partition.PRIMARIES:
                found = await primaries(ctx) or [rng.choice(names)]
                g = grudge(isolate(names, found))
            else:
                g = grudge(TOPOLOGIES[topology](names, rng))
            await partition.apply_grudge(ctx, g)
            steps.append({"at_ms": _elapsed_ms(t0), "cut": topology, "grudge": g})
            await asyncio.sleep(rng.uniform(*period_ms) / 1000)
            await partition.heal(ctx)
            steps.append({"at_ms": _elapsed_ms(t0), "healed": True})
            await asyncio.sleep(rng.uniform(*period_ms) / 1000)
        return {"steps": steps, "flaps": sum(1 for s in steps if "cut" in s)}

    package = schedule_package(ctx, "flapping", FLAP, STOP_FLAP, FLAP_SHADING, flap, paused)
    base = package.generator
    package.generator = lambda rng: _seeded(base(rng), rng)
    return package


def _seeded(op: OpDict, rng: random.Random) -> OpDict:
    if op["f"] in (FLAP, CHURN):
        return {**op, "value": {**op.get("value", {}), "seed": rng.getrandbits(32)}}
    return op


def leader_churn_package(ctx: FaultContext, duration_s: float = 4.0, kill_fraction: float = 0.3,
                         election_wait_s: float = 3.0, poll_s: float = 0.02, reads: int = 4,
                         writes: int = 1, read_timeout_s: float = 1.0) -> NemesisPackage:
    """Depose the leader once per election timeout for ``duration_s`` per op (module doc)."""
    names = sorted(ctx.nodes)
    minority_side = max(1, (len(names) - 1) // 2)  # nodes on the leader's side, leader included
    paused: set[str] = set()

    async def churn(op: OpDict) -> dict[str, Any]:
        rng = random.Random(op["value"].get("seed", 0))
        t0 = time.monotonic()
        rounds: list[dict[str, Any]] = []
        while time.monotonic() - t0 < duration_s:
            statuses = await _live_statuses(ctx)
            leaders = claimed_leaders(statuses)
            if not leaders:
                await asyncio.sleep(poll_s)
                continue
            leader = leaders[0]
            timeout_ms = (statuses[leader] or {}).get("election_timeout_ms") or [1000, 2000]
            term = int(statuses[leader].get("term", 0))
            step: dict[str, Any] = {"at_ms": _elapsed_ms(t0), "leader": leader, "term": term}
            if rng.random() < kill_fraction:
                step["killed"] = {leader: ctx.nodes[leader].pid}
                await asyncio.to_thread(ctx.nodes[leader].kill)
            else:
                followers = [n for n in names if n != leader]
                side = [leader] + rng.sample(followers, minority_side - 1)
                g = grudge(isolate(names, side))
                await partition.apply_grudge(ctx, g)
                step["isolated"] = sorted(side)
            deposed = time.monotonic()
            others = [n for n in names if n not in step.get("isolated", [leader])]

            def elected(s: Any) -> Any:
                found = [n for n in claimed_leaders(s) if n in others and int(s[n].get("term", 0)) > term]
                return found[0] if found else None

            new = None
            while time.monotonic() - deposed < election_wait_s and new is None:
                new = elected(await ctx.statuses([n for n in others if not stopped(ctx, n)]))
                if new is None:
                    await asyncio.sleep(poll_s)
            step["new_leader"] = new
            step["election_ms"] = _elapsed_ms(deposed) if new else None
            # Reads (and a write) at the new leader the moment it leads, while the heal runs:
            # the window before its own term's no-op commits (nemeses/leader_reads.py).
            client_ops = getattr(ctx, "client_ops", None)
            fired_ms = _elapsed_ms(deposed)  # since the deposition; election_ms is when it was seen
            burst = asyncio.ensure_future(client_ops.burst(ctx.endpoint(new), new, reads, writes, read_timeout_s)) \
                if new is not None and client_ops is not None and reads + writes > 0 else None
            # Heal at once: the deposed leader comes back with whatever it did not replicate.
            try:
                if "killed" in step:
                    step["restarted"] = await ctx.start_node(leader)
                else:
                    await partition.heal(ctx)
            finally:
                if burst is not None:
                    step["at_new_leader"] = {"fired_ms": fired_ms, **await burst}
            rounds.append(step)
            # One round per election timeout: the cluster never settles for long.
            low, high = (list(timeout_ms) * 2)[:2]
            await asyncio.sleep(rng.uniform(low, high) / 1000)
        return {"rounds": rounds, "changes": sum(1 for r in rounds if r.get("new_leader"))}

    package = schedule_package(ctx, "leader-churn", CHURN, STOP_CHURN, CHURN_SHADING, churn, paused)
    base = package.generator
    package.generator = lambda rng: _seeded(base(rng), rng)
    return package


async def _await_ack(ctx: FaultContext, watch_s: float, poll_s: float) -> dict[str, Any]:
    """Poll the leader until its applied index moves; returns what it saw (leader None: none)."""
    deadline = time.monotonic() + watch_s
    leader, base = None, None
    while time.monotonic() < deadline:
        if leader is None:
            leaders = claimed_leaders(await _live_statuses(ctx))
            if not leaders:
                await asyncio.sleep(poll_s)
                continue
            leader = leaders[0]
        status = (await ctx.statuses([leader])).get(leader)
        if not status or status.get("role") != "leader":
            leader, base = None, None
            continue
        applied = int(status.get("applied_index", 0))
        if base is None:
            base = applied
        elif applied > base:
            return {"leader": leader, "applied_before": base, "applied": applied,
                    "commit_index": status.get("commit_index"), "last_index": status.get("last_index")}
        await asyncio.sleep(poll_s)
    return {"leader": leader, "applied_before": base, "timed_out": True}


def crash_after_ack_package(ctx: FaultContext, watch_s: float = 5.0, poll_s: float = 0.002) -> NemesisPackage:
    """SIGKILL the leader right after it applies (acknowledges) new writes; restart it next op."""
    killed: set[str] = set()

    async def invoke(op: OpDict) -> Any:
        if op["f"] == RESTART:
            dead = sorted(n for n in ctx.nodes if n in killed or not ctx.nodes[n].is_running())
            killed.clear()
            return {"started": {n: await ctx.start_node(n) for n in dead}}
        seen = await _await_ack(ctx, watch_s, poll_s)
        if seen.get("timed_out") or seen["leader"] is None:
            return {"skipped": "the leader acknowledged nothing while watched", **seen}
        leader = seen["leader"]
        pid = ctx.nodes[leader].pid
        await asyncio.to_thread(ctx.nodes[leader].kill)
        killed.add(leader)
        return {**seen, "killed": {leader: pid}}

    return NemesisPackage(name="crash-after-ack",
                          generator=alternate(lambda rng: {"f": CRASH_AFTER_ACK, "value": {}}, {"f": RESTART}),
                          final=lambda: [{"f": RESTART}], invoke=invoke, shading=CRASH_SHADING,
                          fs=frozenset({CRASH_AFTER_ACK, RESTART}))


def power_cut_after_ack_package(ctx: FaultContext, watch_s: float = 5.0, poll_s: float = 0.002) -> NemesisPackage:
    """Cut the power of every node right after the leader acknowledges (LazyFS data dirs)."""
    down: set[str] = set()

    async def invoke(op: OpDict) -> Any:
        if op["f"] == POWER_ON:
            dead = sorted(n for n in ctx.nodes if n in down or not ctx.nodes[n].is_running())
            down.clear()
            return {"started": {n: await ctx.start_node(n) for n in dead}}
        seen = await _await_ack(ctx, watch_s, poll_s)
        if seen.get("timed_out") or seen["leader"] is None:
            return {"skipped": "the leader acknowledged nothing while watched", **seen}
        names = sorted(ctx.nodes)
        await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].kill) for n in names))  # all at once
        down.update(names)
        drop = getattr(ctx, "drop_unfsynced")
        lost = {n: await drop(n) for n in names}
        return {**seen, "lost": {n: {"bytes": r.get("lost_bytes", 0), "files": sorted(r.get("lost", {}))}
                                 for n, r in lost.items()}}

    return NemesisPackage(name="lazyfs-after-ack",
                          generator=alternate(lambda rng: {"f": POWER_CUT_AFTER_ACK, "value": {}}, {"f": POWER_ON}),
                          final=lambda: [{"f": POWER_ON}], invoke=invoke, shading=POWER_SHADING,
                          fs=frozenset({POWER_CUT_AFTER_ACK, POWER_ON}))


__all__ = ["flapping_package", "leader_churn_package", "crash_after_ack_package",
           "power_cut_after_ack_package"]
