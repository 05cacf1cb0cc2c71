"""Network partitions: kernel-level packet drops from a grudge (who cannot hear whom).

Topologies (nemeses/topology.py) are drawn at random, repeats weighing one more. They are
computed when the op is generated, except ``primaries``: the nodes that claim leadership at
the moment of the fault (node status) are cut off from the rest, so the op's value records
whom it found. Most Raft bugs need a leader change with entries in flight, so the default
mix isolates the leader(s) half the time.

When the leaders are cut off and the run records client ops of the nemesis's own
(``ctx.client_ops``, nemeses/leader_reads.py), the nemesis reads the keys the workload has
been writing straight at each cut-off leader, in bursts, for about an election timeout
after the cut: the window in which a leader that has lost its quorum still believes it
leads. A node that answers reads from local state (stale reads), trusts a lease it no
longer holds, or serves uncommitted writes shows it there; the workload's own clients reach
that window only by chance (the ones pinned to the old leader are mostly stuck in writes to
it). A correct node answers none of these reads (they time out, recorded ``fail``).
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
#: reads at a cut-off leader: CUT_OFF_READ_BURSTS bursts spread over CUT_OFF_READ_WINDOW
#: election timeouts from the cut (the longest the leader's status reports: a check-quorum
#: step-down comes within one), each reading CUT_OFF_READ_KEYS recent keys with
#: CUT_OFF_READ_TIMEOUT_S to answer (a correct leader answers none of them: they time out)
CUT_OFF_READ_BURSTS = 8
CUT_OFF_READ_WINDOW = 1.25
CUT_OFF_READ_KEYS = 3
CUT_OFF_READ_TIMEOUT_S = 0.5
#: the election timeout assumed when the leader's status does not say (ukehi's default max)
FALLBACK_ELECTION_TIMEOUT_S = 2.0


async def cut_off_reads(ctx: FaultContext, leaders: Sequence[str]) -> list[dict[str, Any]] | None:
    """Bursts of reads at each cut-off leader (module doc); None when the run has no client ops."""
    client_ops = getattr(ctx, "client_ops", None)
    if client_ops is None or not leaders:
        return None
    statuses_of = getattr(ctx, "statuses", None)  # a minimal context has none: the fallback
    statuses = await statuses_of(list(leaders)) if statuses_of is not None else {}
    longest_ms = max((max((st or {}).get("election_timeout_ms") or [0]) for st in statuses.values()), default=0)
    window_s = CUT_OFF_READ_WINDOW * (longest_ms / 1000 if longest_ms > 0 else FALLBACK_ELECTION_TIMEOUT_S)
    gap_s = window_s / (CUT_OFF_READ_BURSTS - 1)

    async def at(node: str) -> dict[str, Any]:
        bursts = []
        for n in range(CUT_OFF_READ_BURSTS):
            if n:
                await asyncio.sleep(gap_s)
            bursts.append(asyncio.ensure_future(client_ops.burst(ctx.endpoint(node), node, CUT_OFF_READ_KEYS, 0,
                                                                 CUT_OFF_READ_TIMEOUT_S)))
        done = await asyncio.gather(*bursts)
        return {"node": node, "bursts": len(done), "window_ms": round(window_s * 1000),
                "ops": sum(len(d.get("ops", ())) for d in done),
                "ok": sum(d.get("ok", 0) for d in done),
                **({"skipped": done[0]["skipped"]} if all("skipped" in d for d in done) else {})}

    return list(await asyncio.gather(*(at(n) for n in leaders)))


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
        value["components"] = components(value["grudge"], names)
        reads = await cut_off_reads(ctx, value.get("primaries") or []) if value["topology"] == PRIMARIES else None
        if reads is not None:
            value["cut_off_reads"] = reads
        return value

    return NemesisPackage(
        name="partition",
        generator=alternate(start, {"f": STOP}),
        final=lambda: [{"f": STOP}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({START, STOP}),
    )
