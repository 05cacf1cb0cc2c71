"""Power cut: kill nodes and drop every write they never fsynced (Jepsen's LazyFS fault).

Needs the nodes' data directories on LazyFS (harness/lazyfs): ``ukehi-jepsen run`` mounts
them when this nemesis is chosen (local backend only). A ``lose-unfsynced`` op SIGKILLs
its target nodes and then drops the un-fsynced data of each (what a power cut loses: the
page cache); the matching ``power-on`` op restarts them from what was fsynced. Each op
records, per node, how many un-fsynced bytes were lost in which files.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate
from .targets import check_targets, resolve_detail

SHADING = Shading("lazyfs", start=("lose-unfsynced",), stop=("power-on",))


def package(ctx: FaultContext, targets: Sequence[str] = ("all", "majority", "leader")) -> NemesisPackage:
    """Power cuts of some nodes; ``all`` and ``majority`` can lose a write every replica held."""
    targets = check_targets(targets, "lazyfs")
    down: set[str] = set()

    def cut(rng: random.Random) -> OpDict:
        return {"f": "lose-unfsynced", "value": {"target": rng.choice(list(targets)), "seed": rng.getrandbits(32)}}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == "lose-unfsynced":
            names, how = await resolve_detail(ctx, op["value"]["target"], random.Random(op["value"]["seed"]))
            # Kill first, all at once, so no node fsyncs anything after the cut.
            await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].kill) for n in names))
            down.update(names)
            drop = getattr(ctx, "drop_unfsynced")
            lost = {n: await drop(n) for n in names}
            return {"target": op["value"]["target"], **how, "lost": {n: {"bytes": r.get("lost_bytes", 0),
                                                                   "files": sorted(r.get("lost", {}))}
                                                               for n, r in lost.items()}}
        dead = sorted(n for n, node in ctx.nodes.items() if n in down or not node.is_running())
        started = {n: await ctx.start_node(n) for n in dead}
        down.clear()
        return {"started": started}

    return NemesisPackage(
        name="lazyfs",
        generator=alternate(cut, {"f": "power-on"}),
        final=lambda: [{"f": "power-on"}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({"lose-unfsynced", "power-on"}),
    )
