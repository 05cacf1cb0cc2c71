"""Network partitions: kernel-level packet drops from a grudge (who cannot hear whom).

Topologies (nemeses/topology.py) are drawn at random, repeats weighing one more. They are
computed when the op is generated, except ``primaries``: the nodes that claim leadership at
the moment of the fault (node status) are cut off from the rest, so the op's value records
whom it found. Most Raft bugs need a leader change with entries in flight, so the default
mix isolates the leader(s) half the time.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import primaries
from .topology import TOPOLOGIES, components, grudge, isolate

START, STOP = "start-partition", "stop-partition"
SHADING = Shading("partition", start=(START,), stop=(STOP,))
#: resolved at the moment of the fault, from node status
PRIMARIES = "primaries"
ALL_TOPOLOGIES = tuple(TOPOLOGIES) + (PRIMARIES,)
#: the default draw: the leader(s) cut off as often as every other topology together
LEADER_HEAVY = (PRIMARIES,) * len(TOPOLOGIES) + tuple(TOPOLOGIES)


async def apply_grudge(ctx: FaultContext, g: dict[str, list[str]]) -> None:
    """DROP rules on each node for the peers it must not hear."""
    def apply(node_name: str, peers: list[str]) -> None:
        ctx.nodes[node_name].drop_from([ctx.nodes[p].address for p in peers], "in")

    await asyncio.gather(*(asyncio.to_thread(apply, n, peers) for n, peers in g.items()))


async def heal(ctx: FaultContext) -> list[str]:
    names = sorted(ctx.nodes)
    await asyncio.gather(*(asyncio.to_thread(node.heal_network) for node in ctx.nodes.values()))
    return names


def package(ctx: FaultContext, topologies: Sequence[str] = LEADER_HEAVY,
            one_way_fraction: float = 0.2) -> NemesisPackage:
    unknown = [t for t in topologies if t not in ALL_TOPOLOGIES]
    if unknown or not topologies:
        raise ValueError(f"unknown partition topology {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(ALL_TOPOLOGIES)}")
    names = sorted(ctx.nodes)

    def start(rng: random.Random) -> OpDict:
        topology = rng.choice(list(topologies))
        one_way = rng.random() < one_way_fraction
        if topology == PRIMARIES:
            return {"f": START, "value": {"topology": topology, "one_way": one_way,
                                          "seed": rng.getrandbits(32)}}
        g = grudge(TOPOLOGIES[topology](names, rng), one_way=one_way, rng=rng)
        return {"f": START, "value": {"topology": topology, "one_way": one_way, "grudge": g}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == STOP:
            return {"healed": await heal(ctx)}
        value = dict(op["value"])
        if value["topology"] == PRIMARIES and "grudge" not in value:
            rng = random.Random(value["seed"])
            found = await primaries(ctx)
            value["primaries"] = found
            if not found:
                value["fallback"] = "no node claimed leadership: one node at random"
                found = [rng.choice(names)]
            value["grudge"] = grudge(isolate(names, found), one_way=value["one_way"], rng=rng)
        await apply_grudge(ctx, value["grudge"])
        return {**value, "components": components(value["grudge"], names)}

    return NemesisPackage(
        name="partition",
        generator=alternate(start, {"f": STOP}),
        final=lambda: [{"f": STOP}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({START, STOP}),
    )
