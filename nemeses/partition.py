"""Network partitions: kernel-level packet drops from a grudge (who cannot hear whom)."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .topology import TOPOLOGIES, components, grudge

START, STOP = "start-partition", "stop-partition"
SHADING = Shading("partition", start=(START,), stop=(STOP,))


def package(ctx: FaultContext, topologies: Sequence[str] = tuple(TOPOLOGIES),
            one_way_fraction: float = 0.2) -> NemesisPackage:
    unknown = [t for t in topologies if t not in TOPOLOGIES]
    if unknown:
        raise ValueError(f"unknown partition topology {', '.join(unknown)}; "
                         f"choose from {', '.join(TOPOLOGIES)}")
    names = sorted(ctx.nodes)

    def start(rng: random.Random) -> OpDict:
        topology = rng.choice(list(topologies))
        one_way = rng.random() < one_way_fraction
        g = grudge(TOPOLOGIES[topology](names, rng), one_way=one_way, rng=rng)
        return {"f": START, "value": {"topology": topology, "one_way": one_way, "grudge": g}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == STOP:
            await asyncio.gather(*(asyncio.to_thread(node.heal_network) for node in ctx.nodes.values()))
            return {"healed": names}
        g: dict[str, list[str]] = op["value"]["grudge"]

        def apply(node_name: str, peers: list[str]) -> None:
            ctx.nodes[node_name].drop_from([ctx.nodes[p].address for p in peers], "in")

        await asyncio.gather(*(asyncio.to_thread(apply, n, peers) for n, peers in g.items()))
        return {**op["value"], "components": components(g, names)}

    return NemesisPackage(
        name="partition",
        generator=alternate(start, {"f": STOP}),
        final=lambda: [{"f": STOP}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({START, STOP}),
    )
