"""Process faults: kill -9 then restart, and pause (SIGSTOP) then resume (SIGCONT)."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import LEADER_HEAVY, check_targets, resolve_detail

KILL_SHADING = Shading("kill", start=("kill",), stop=("start",))
PAUSE_SHADING = Shading("pause", start=("pause",), stop=("resume",))


def kill_package(ctx: FaultContext, targets: Sequence[str] = LEADER_HEAVY) -> NemesisPackage:
    """SIGKILL some nodes; the matching ``start`` op restarts every dead node from its data dir.

    ``targets`` (nemeses/targets.py) are drawn from at random, repeats weighing a target more;
    the default hits the current leader(s) half the time."""
    targets = check_targets(targets, "kill")
    killed: set[str] = set()

    def start(rng: random.Random) -> OpDict:
        return {"f": "kill", "value": {"target": rng.choice(list(targets)), "seed": rng.getrandbits(32)}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == "kill":
            names, how = await resolve_detail(ctx, op["value"]["target"], random.Random(op["value"]["seed"]))
            pids = {n: ctx.nodes[n].pid for n in names}
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].kill) for n in names))
            killed.update(names)
            return {"target": op["value"]["target"], "killed": pids, **how}
        dead = sorted(n for n, node in ctx.nodes.items() if n in killed or not node.is_running())
        pids = {}
        for name in dead:
            pids[name] = await ctx.start_node(name)
        killed.clear()
        return {"started": pids}

    return NemesisPackage(
        name="kill",
        generator=alternate(start, {"f": "start"}),
        final=lambda: [{"f": "start"}],
        invoke=invoke,
        shading=KILL_SHADING,
        fs=frozenset({"kill", "start"}),
    )


def pause_package(ctx: FaultContext, targets: Sequence[str] = LEADER_HEAVY) -> NemesisPackage:
    """SIGSTOP some nodes (targets as for kill); the matching ``resume`` op continues them."""
    targets = check_targets(targets, "pause")
    paused: set[str] = set()

    def start(rng: random.Random) -> OpDict:
        return {"f": "pause", "value": {"target": rng.choice(list(targets)), "seed": rng.getrandbits(32)}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == "pause":
            names, how = await resolve_detail(ctx, op["value"]["target"], random.Random(op["value"]["seed"]))
            names = [n for n in names if ctx.nodes[n].is_running()]
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].pause) for n in names))
            paused.update(names)
            return {"target": op["value"]["target"], "paused": names, **how}
        names = sorted(paused)
        await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].resume) for n in names
                               if ctx.nodes[n].is_running()))
        paused.clear()
        return {"resumed": names}

    return NemesisPackage(
        name="pause",
        generator=alternate(start, {"f": "resume"}),
        final=lambda: [{"f": "resume"}],
        invoke=invoke,
        shading=PAUSE_SHADING,
        fs=frozenset({"pause", "resume"}),
    )
