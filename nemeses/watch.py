"""For targeted nemeses, which steer a cluster by what its nodes report: status polling and
the heal that undoes every step of a schedule."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Mapping, Sequence

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading, alternate

__all__ = ["Statuses", "wait_for", "status_field", "leaders", "heal_all", "schedule_package"]

Statuses = Mapping[str, Mapping[str, Any] | None]


async def wait_for(ctx: FaultContext, seconds: float, poll_s: float,
                   done: Callable[[Statuses], Any], names: Sequence[str] | None = None) -> tuple[Any, Statuses]:
    """Poll every node's status (or only those of ``names``) until ``done`` returns something
    truthy, or ``seconds`` pass.

    Returns what ``done`` returned last (falsy on time-out) and the statuses it saw.
    """
    deadline = time.monotonic() + seconds
    while True:
        statuses = await ctx.statuses(names)
        found = done(statuses)
        if found or time.monotonic() >= deadline:
            return found, statuses
        await asyncio.sleep(poll_s)


def status_field(statuses: Statuses, name: str, key: str, default: int = 0) -> int:
    """An integer field of one node's status (``default`` if the node did not answer)."""
    s = statuses.get(name)
    return int(s.get(key, default)) if s else default


def leaders(statuses: Statuses, above_term: int = -1, among: Any = None) -> list[tuple[int, str]]:
    """(term, name) of every node that reports itself leader of a term above ``above_term``."""
    return sorted((int(s["term"]), n) for n, s in statuses.items()
                  if s and s.get("role") == "leader" and int(s.get("term", 0)) > above_term
                  and (among is None or n in among))


async def heal_all(ctx: FaultContext, paused: set[str]) -> dict[str, Any]:
    """Resume the nodes in ``paused``, drop every rule and shaping, start every stopped node."""
    names = sorted(ctx.nodes)
    resumed = sorted(paused)
    await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].resume) for n in resumed
                           if ctx.nodes[n].is_running()))
    paused.clear()
    await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].heal_network) for n in names))
    await asyncio.gather(*(asyncio.to_thread(ctx.nodes[n].clear_netem) for n in names))
    started = {}
    for name in names:
        if not ctx.nodes[name].is_running():
            started[name] = await ctx.start_node(name)
    return {"healed": names, "resumed": resumed, "started": started}


def schedule_package(ctx: FaultContext, name: str, start: str, stop: str, shading: Shading,
                     schedule: Callable[[OpDict], Awaitable[dict[str, Any]]],
                     paused: set[str]) -> NemesisPackage:
    """A targeted nemesis: ``start`` ops run ``schedule``, alternating with ``stop`` ops that
    undo it (:func:`heal_all`, resuming the nodes in ``paused``); the final phase heals."""

    async def invoke(op: OpDict) -> Any:
        if op["f"] == stop:
            return await heal_all(ctx, paused)
        return await schedule(op)

    return NemesisPackage(
        name=name,
        generator=alternate(lambda rng: {"f": start, "value": {}}, {"f": stop}),
        final=lambda: [{"f": stop}],
        invoke=invoke,
        shading=shading,
        fs=frozenset({start, stop}),
    )
