"""Choosing which nodes a fault hits, as Jepsen's combined nemesis does.

Targets:

- ``one``: one node at random;
- ``minority``: a random minority (1 to (n-1)//2 nodes);
- ``majority``: a random majority (n//2+1 nodes);
- ``minority-third``: fewer than a third of the nodes, (n-1)//3 (Jepsen's), but at least one,
  so on 3 nodes it is one node rather than a fault that does nothing;
- ``primaries``: every node that reports itself leader at the moment of the fault (an old,
  cut-off leader that still believes it leads is a primary too); ``leader`` is its old name;
- ``all``: every node.

``primaries`` asks node status at the moment of the fault. A node the kernel shows stopped
(SIGSTOP) is not asked: it would cost the whole status time-out. When nobody claims to lead
(an election is under way), one random node is hit and the record says so.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from .context import FaultContext

TARGETS = ("one", "minority", "majority", "minority-third", "primaries", "all")
#: accepted as a target name too: the single-leader spelling of ``primaries``
ALIASES = {"leader": "primaries"}
#: What a fault family hits when the user names no target: leader-targeted most of the time,
#: because most Raft bugs need a leader change with entries in flight; the other draws keep
#: follower and quorum-loss faults in the mix.
LEADER_HEAVY = ("primaries", "primaries", "primaries", "one", "minority", "majority")


def check_targets(targets: Sequence[str], what: str) -> tuple[str, ...]:
    """The targets, validated (ValueError naming the bad one and the choices)."""
    bad = [t for t in targets if t not in TARGETS and t not in ALIASES]
    if bad or not targets:
        raise ValueError(f"{what} targets {list(targets)}: choose from {', '.join(TARGETS)}")
    return tuple(targets)


def pick_target_kind(rng: random.Random, allowed: Sequence[str] = LEADER_HEAVY) -> str:
    return rng.choice(list(allowed))


def count(kind: str, n: int) -> int:
    """How many nodes a fixed-size target names on ``n`` nodes (``primaries`` is not fixed)."""
    kind = ALIASES.get(kind, kind)
    if kind == "one":
        return 1
    if kind == "minority":
        return max(1, (n - 1) // 2)
    if kind == "majority":
        return n // 2 + 1
    if kind == "minority-third":
        return max(1, (n - 1) // 3)
    if kind == "all":
        return n
    raise ValueError(f"target {kind!r} names no fixed number of nodes; choose one of {', '.join(TARGETS)}")


def stopped(ctx: FaultContext, name: str) -> bool:
    """Whether the node's process is paused (SIGSTOP) or gone: not worth a status call."""
    node = ctx.nodes[name]
    try:
        if not node.is_running():
            return True
        state = getattr(node, "process_state", None)
        return state is not None and state() == "T"
    except Exception:  # noqa: BLE001 - a backend that cannot tell: ask the node
        return False


def claimed_leaders(statuses: Any) -> list[str]:
    """Every node whose status says it leads (any term), newest term first."""
    found = sorted(((int(s.get("term", 0)), n) for n, s in statuses.items()
                    if s and s.get("role") == "leader"), reverse=True)
    return [n for _, n in found]


async def primaries(ctx: FaultContext) -> list[str]:
    """The nodes that claim leadership now (newest term first); [] when none does."""
    statuses_of = getattr(ctx, "statuses", None)
    if statuses_of is None:  # a minimal context: only the newest leader is known
        leader = await ctx.leader()
        return [leader] if leader in ctx.nodes else []
    live = [n for n in sorted(ctx.nodes) if not stopped(ctx, n)]
    if not live:
        return []
    return [n for n in claimed_leaders(await statuses_of(live)) if n in ctx.nodes]


async def resolve_detail(ctx: FaultContext, kind: str, rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    """(node names, a record of how they were chosen) for a target kind."""
    names = sorted(ctx.nodes)
    kind = ALIASES.get(kind, kind)
    if kind == "primaries":
        found = await primaries(ctx)
        if found:
            return sorted(found), {"primaries": found}
        return [rng.choice(names)], {"primaries": [], "fallback": "no node claimed leadership: one at random"}
    if kind == "minority":
        return sorted(rng.sample(names, rng.randint(1, count(kind, len(names))))), {}
    if kind in TARGETS:
        return sorted(rng.sample(names, count(kind, len(names)))), {}
    raise ValueError(f"unknown fault target {kind!r}; choose one of {', '.join(TARGETS)}")


async def resolve(ctx: FaultContext, kind: str, rng: random.Random) -> list[str]:
    """Node names for a target kind (``primaries`` falls back to one random node when none leads)."""
    return (await resolve_detail(ctx, kind, rng))[0]
