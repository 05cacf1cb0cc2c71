"""Packet faults with tc netem: delay with jitter, loss, duplication, reordering.

Targets are whole nodes (one, a minority, all: every packet they send is shaped)
or a single link (``link``: one node's packets to one peer only), so a test can
make one replication path slow or lossy while the rest of the cluster is fine.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import resolve

NETEM_SETTINGS = ("delay_ms", "jitter_ms", "loss_pct", "duplicate_pct", "reorder_pct")
SHADING = Shading("packet", start=("start-packet",), stop=("stop-packet",))
PROFILES: dict[str, dict[str, float]] = {
    "delay": {"delay_ms": 50.0, "jitter_ms": 10.0},
    "slow": {"delay_ms": 200.0, "jitter_ms": 50.0},
    "loss": {"loss_pct": 20.0},
    "duplicate": {"duplicate_pct": 20.0},
    "reorder": {"delay_ms": 20.0, "reorder_pct": 30.0},
}


def package(ctx: FaultContext, profiles: Sequence[str] = tuple(PROFILES),
            targets: Sequence[str] = ("one", "minority", "all", "link")) -> NemesisPackage:
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ValueError(f"unknown packet fault {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    shaped: set[str] = set()

    def start(rng: random.Random) -> OpDict:
        profile = rng.choice(list(profiles))
        return {"f": "start-packet", "value": {"profile": profile, **PROFILES[profile],
                                                "target": rng.choice(list(targets)),
                                                "seed": rng.getrandbits(32)}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == "stop-packet":
            names = sorted(ctx.nodes)
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].clear_netem) for n in names))
            shaped.clear()
            return {"cleared": names}
        value = op["value"]
        settings = {k: v for k, v in value.items() if k in NETEM_SETTINGS}
        rng = random.Random(value["seed"])
        if value["target"] == "link":
            source, dest = rng.sample(sorted(ctx.nodes), 2)
            await asyncio.to_thread(ctx.nodes[source].set_netem, **settings,
                                    to=[ctx.nodes[dest].address])
            shaped.add(source)
            return {"profile": value["profile"], "nodes": [source], "link": [source, dest], **settings}
        names = await resolve(ctx, value["target"], rng)
        await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].set_netem, **settings) for n in names))
        shaped.update(names)
        return {"profile": value["profile"], "nodes": names, **settings}

    return NemesisPackage(
        name="packet",
        generator=alternate(start, {"f": "stop-packet"}),
        final=lambda: [{"f": "stop-packet"}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({"start-packet", "stop-packet"}),
    )
