"""Clock faults through libfaketime: offsets (bumps), rate skew, strobe, reset.

Each node's process runs under libfaketime with its own timestamp file (the
backend's ``clock_env``), so writing that file moves that node's clock only.
Every op records the offsets it set and, when the node answers, the node's own
clock reading, which ``clock.png`` plots.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import LEADER_HEAVY, check_targets, primaries, resolve_detail

BUMPS_S = (0.005, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0)
RATES = (0.5, 0.75, 1.5, 2.0)
FS = ("bump-clock", "skew-clock-rate", "strobe-clock", "reset-clock")
SHADING = Shading("clock", start=("bump-clock", "skew-clock-rate"), stop=("reset-clock",),
                  instant=("strobe-clock",))


async def readings(ctx: FaultContext, names: Sequence[str]) -> dict[str, float]:
    """Each answering node's clock minus ours (seconds), as the node itself reports it."""
    out: dict[str, float] = {}
    for name in names:
        sent = time.time()
        reading = await ctx.node_clock(name)
        if reading is not None:
            # Against the middle of the round trip: the node read its clock in between.
            out[name] = reading - (sent + time.time()) / 2
    return out


def package(ctx: FaultContext, modes: Sequence[str] = ("bump", "rate", "strobe"),
            targets: Sequence[str] = LEADER_HEAVY, strobe_seconds: float = 2.0) -> NemesisPackage:
    """Clock bumps, rate skews and strobes of some nodes (targets: nemeses/targets.py; by
    default mostly the leader(s), whose clock stamps lock leases and times lease reads)."""
    targets = check_targets(targets, "clock")
    unknown = [m for m in modes if m not in ("bump", "rate", "strobe")]
    if unknown:
        raise ValueError(f"unknown clock fault {', '.join(unknown)}; choose bump, rate or strobe")
    state = {"skewed": False}
    # The rate each node's clock runs at: set_clock() takes offset and rate together, so a bump
    # must repeat the current rate or it would silently undo an earlier rate skew.
    rates: dict[str, float] = {}

    def generator(rng: random.Random) -> OpDict:
        if state["skewed"] and rng.random() < 0.5:
            state["skewed"] = False
            return {"f": "reset-clock"}
        state["skewed"] = True
        mode = rng.choice(list(modes))
        target = {"target": rng.choice(list(targets)), "seed": rng.getrandbits(32)}
        if mode == "bump":
            delta = rng.choice(BUMPS_S) * rng.choice((-1, 1))
            return {"f": "bump-clock", "value": {**target, "offset_s": delta}}
        if mode == "rate":
            return {"f": "skew-clock-rate", "value": {**target, "rate": rng.choice(RATES)}}
        return {"f": "strobe-clock", "value": {**target, "offset_s": rng.choice(BUMPS_S[2:]),
                                                "period_s": 0.05, "duration_s": strobe_seconds}}

    async def invoke(op: OpDict) -> Any:
        f = op["f"]
        if f == "reset-clock":
            names = sorted(ctx.nodes)
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].reset_clock) for n in names))
            rates.clear()
            return {"offsets": {n: 0.0 for n in names}, "measured": await readings(ctx, names)}
        value = op["value"]
        names, how = await resolve_detail(ctx, value["target"], random.Random(value["seed"]))
        if f == "bump-clock":
            for n in names:
                node = ctx.nodes[n]
                await asyncio.to_thread(node.set_clock, node.clock_offset() + value["offset_s"],
                                        rates.get(n, 1.0))
        elif f == "skew-clock-rate":
            for n in names:
                node = ctx.nodes[n]
                await asyncio.to_thread(node.set_clock, node.clock_offset(), value["rate"])
                rates[n] = value["rate"]
        elif f == "strobe-clock":
            # Flip between the current offset and offset + delta every period (Jepsen's strobe).
            deadline = time.monotonic() + value["duration_s"]
            flip = False
            base = {n: ctx.nodes[n].clock_offset() for n in names}
            while time.monotonic() < deadline:
                flip = not flip
                for n in names:
                    await asyncio.to_thread(ctx.nodes[n].set_clock,
                                            base[n] + (value["offset_s"] if flip else 0.0),
                                            rates.get(n, 1.0))
                await asyncio.sleep(value["period_s"])
            for n in names:
                await asyncio.to_thread(ctx.nodes[n].set_clock, base[n], rates.get(n, 1.0))
        else:
            raise ValueError(f"clock nemesis cannot perform {f!r}")
        offsets = {n: ctx.nodes[n].clock_offset() for n in sorted(ctx.nodes)}
        return {"nodes": names, "offsets": offsets, "measured": await readings(ctx, names), **how}

    return NemesisPackage(
        name="clock",
        generator=generator,
        final=lambda: [{"f": "reset-clock"}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset(FS),
    )


ISOLATE_SLOW_LEADER, HEAL_SLOW_LEADER = "isolate-slow-leader", "heal-slow-leader"
SLOW_LEADER_SHADING = Shading("slow-leader", start=(ISOLATE_SLOW_LEADER,), stop=(HEAL_SLOW_LEADER,))
#: how much slower than real time the isolated leader's clock runs
SLOW_LEADER_RATE = 0.02
#: how long slow-leader waits for a leader when an election is under way
LEADER_WAIT_S = 3.0


def slow_leader_package(ctx: FaultContext, rate: float = SLOW_LEADER_RATE) -> NemesisPackage:
    """The lease-read hazard: the leader's clock runs slow while it is cut off from its peers.

    A lease is counted in ticks of the leader's own clock (libfaketime slows its monotonic
    clock too). Slowed by RATE, the leader believes its lease for 1/RATE times as long in
    real time, while the others, on true clocks, time out, elect a new leader and commit
    writes: in lease read mode the old leader keeps answering reads from its stale state.
    In ReadIndex mode the same fault only makes its reads wait (no quorum to confirm them).
    The isolation is symmetric, with drops in the kernel as in the partition family.
    """
    if not 0 < rate:
        raise ValueError(f"slow-leader clock rate must be positive, got {rate}")
    skewed: set[str] = set()

    def start(rng: random.Random) -> OpDict:
        return {"f": ISOLATE_SLOW_LEADER, "value": {"rate": rate}}

    async def invoke(op: OpDict) -> Any:
        names = sorted(ctx.nodes)
        if op["f"] == HEAL_SLOW_LEADER:
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].heal_network) for n in names))
            reset = sorted(skewed)
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].reset_clock) for n in reset))
            skewed.clear()
            return {"healed": names, "clocks_reset": reset}
        if op["f"] != ISOLATE_SLOW_LEADER:
            raise ValueError(f"slow-leader nemesis cannot perform {op['f']!r}")
        # The leader of the newest term; during an election (another fault just moved
        # leadership) wait for the next one rather than skip the fault.
        deadline = time.monotonic() + LEADER_WAIT_S
        found = await primaries(ctx)
        while not found and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            found = await primaries(ctx)
        leader = found[0] if found else None
        if leader not in ctx.nodes:
            return {"skipped": f"no leader to isolate within {LEADER_WAIT_S:g} s"}
        node = ctx.nodes[leader]
        # Clock first: the lease is then already stretched when the last heartbeat is acked.
        await asyncio.to_thread(node.set_clock, node.clock_offset(), op["value"]["rate"])
        skewed.add(leader)
        others = [n for n in names if n != leader]
        grudge = {leader: others, **{n: [leader] for n in others}}
        await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].drop_from,
                                                 [ctx.nodes[p].address for p in peers], "in")
                               for n, peers in grudge.items()))
        return {"leader": leader, "rate": op["value"]["rate"], "grudge": grudge,
                "measured": await readings(ctx, [leader])}

    return NemesisPackage(
        name="slow-leader",
        generator=alternate(start, {"f": HEAL_SLOW_LEADER}),
        final=lambda: [{"f": HEAL_SLOW_LEADER}],
        invoke=invoke,
        shading=SLOW_LEADER_SHADING,
        fs=frozenset({ISOLATE_SLOW_LEADER, HEAL_SLOW_LEADER}),
    )
