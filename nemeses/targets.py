"""Choosing which nodes a fault hits: one, a minority, a majority, all, or the leader."""

from __future__ import annotations

import random
from typing import Sequence

from .context import FaultContext

TARGETS = ("one", "minority", "majority", "all", "leader")


def pick_target_kind(rng: random.Random, allowed: Sequence[str] = ("one", "minority", "leader")) -> str:
    return rng.choice(list(allowed))


async def resolve(ctx: FaultContext, kind: str, rng: random.Random) -> list[str]:
    """Node names for a target kind; ``leader`` falls back to one random node when none is known."""
    names = sorted(ctx.nodes)
    if kind == "one":
        return [rng.choice(names)]
    if kind == "minority":
        return sorted(rng.sample(names, rng.randint(1, max(1, (len(names) - 1) // 2))))
    if kind == "majority":
        return sorted(rng.sample(names, len(names) // 2 + 1))
    if kind == "all":
        return names
    if kind == "leader":
        leader = await ctx.leader()
        return [leader] if leader in ctx.nodes else [rng.choice(names)]
    raise ValueError(f"unknown fault target {kind!r}; choose one of {', '.join(TARGETS)}")
