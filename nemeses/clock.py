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
from .package import NemesisPackage, OpDict, Shading
from .targets import resolve

BUMPS_S = (0.005, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0)
RATES = (0.5, 0.75, 1.5, 2.0)
FS = ("bump-clock", "skew-clock-rate", "strobe-clock", "reset-clock")
SHADING = Shading("clock", start=("bump-clock", "skew-clock-rate"), stop=("reset-clock",),
                  instant=("strobe-clock",))


def package(ctx: FaultContext, modes: Sequence[str] = ("bump", "rate", "strobe"),
            targets: Sequence[str] = ("one", "minority"), strobe_seconds: float = 2.0) -> NemesisPackage:
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

    async def readings(names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            reading = await ctx.node_clock(name)
            if reading is not None:
                out[name] = reading - time.time()
        return out

    async def invoke(op: OpDict) -> Any:
        f = op["f"]
        if f == "reset-clock":
            names = sorted(ctx.nodes)
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].reset_clock) for n in names))
            rates.clear()
            return {"offsets": {n: 0.0 for n in names}, "measured": await readings(names)}
        value = op["value"]
        names = await resolve(ctx, value["target"], random.Random(value["seed"]))
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
        return {"nodes": names, "offsets": offsets, "measured": await readings(names)}

    return NemesisPackage(
        name="clock",
        generator=generator,
        final=lambda: [{"f": "reset-clock"}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset(FS),
    )
