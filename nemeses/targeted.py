"""Targeted faults: schedules aimed at one Raft mechanism, as Jepsen aims a nemesis at a bug.

Random partitions, kills and pauses almost never line up the few interleavings some
consensus bugs need (README, "What it catches"). The ops here drive the cluster into such an
interleaving on purpose, reading each node's ``status`` to decide whom to hit and when. Every
step is recorded in the op's value, so the history explains the run.

``double-vote`` (3 nodes): can one voter grant its vote twice in one term?

1. X stops hearing the leader C of term T0 until it lags Y by a few entries (so Y refuses
   X's pre-votes: only Y can campaign). Then C is cut off from both others (it steps down by
   check-quorum and keeps retrying pre-vote for term T0+1 alone), and the link X -> Y is
   delayed by ``delay_ms`` (netem), Y -> X is not.
2. Y's pre-vote and vote request for T = T0+1 reach X at once; X grants. X's grant takes
   ``delay_ms`` to reach Y, so for that long X is a follower of term T that granted a vote
   and has no leader and no entry of term T yet: the nemesis sees this in X's status and
   stops X hearing Y, so Y's first append (its no-op) cannot reach X, and pauses Y before
   the grant reaches it (Y wins T when it resumes, so check-quorum does not depose it while
   the rest of the schedule runs).
3. X is killed and restarted at once (a crash after voting).
4. C is reconnected to X only (X still does not hear Y). Once C leads, X hears Y again and
   Y resumes. C asks X for term T: a node that kept its vote refuses (it
   voted for Y in T); a node that forgot it grants, and C wins T while Y wins T too.
   The delay is cleared and both sides serve clients for ``hold_s`` seconds.

The correct build survives the schedule: X remembers its vote, C never wins T, and C joins
the new leader when the partition heals.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading
from .watch import schedule_package

DOUBLE_VOTE, HEAL = "double-vote", "stop-targeted"
SHADING = Shading("targeted", start=(DOUBLE_VOTE,), stop=(HEAL,))


async def _isolate(ctx: FaultContext, name: str, from_: list[str]) -> None:
    """Two-way cut between ``name`` and each of ``from_``."""
    node = ctx.nodes[name]
    await asyncio.to_thread(node.drop_from, [ctx.nodes[p].address for p in from_], "in")
    await asyncio.gather(*(asyncio.to_thread(ctx.nodes[p].drop_from, [node.address], "in") for p in from_))


def double_vote_package(ctx: FaultContext, delay_ms: float = 200.0, hold_s: float = 4.0,
                        watch_s: float = 8.0, poll_s: float = 0.03, grant_wait_s: float = 0.1) -> NemesisPackage:
    if len(ctx.nodes) != 3:
        raise ValueError("--nemesis double-vote needs exactly 3 nodes (--nodes 3)")
    paused: set[str] = set()

    async def double_vote(op: OpDict) -> dict[str, Any]:
        statuses = await ctx.statuses()
        leaders = sorted((s.get("term", 0), n) for n, s in statuses.items()
                         if s and s.get("role") == "leader")
        if not leaders:
            return {"skipped": "no leader to depose"}
        t0, c = leaders[-1]
        x, y = sorted(n for n in ctx.nodes if n != c)
        steps: dict[str, Any] = {"leader": c, "term": t0, "voter": x, "candidate": y}
        # X falls behind first (it stops hearing C while C commits with Y), so Y refuses X's
        # pre-votes: only Y campaigns, and X can only grant.
        await asyncio.to_thread(ctx.nodes[x].drop_from, [ctx.nodes[c].address], "in")
        lag_began = time.monotonic()
        while time.monotonic() - lag_began < 1.0:
            await asyncio.sleep(0.1)
            now = await ctx.statuses()
            if now.get(x) and now.get(y) and now[y].get("last_index", 0) > now[x].get("last_index", 0):
                steps["lag"] = {x: now[x]["last_index"], y: now[y]["last_index"]}
                break
        await asyncio.to_thread(ctx.nodes[x].set_netem, delay_ms=delay_ms, to=[ctx.nodes[y].address])
        await _isolate(ctx, c, [x, y])
        began = time.monotonic()
        voted_term = None
        while time.monotonic() - began < watch_s:
            s = (await ctx.statuses()).get(x)
            if (s and s.get("raft_role") == "follower" and s.get("term", 0) > t0
                    and s.get("leader") is None):
                voted_term = s["term"]
                break
            await asyncio.sleep(poll_s)
        if voted_term is None:
            steps["missed"] = "the voter never showed a granted vote without a leader"
            return steps
        steps["voted_term"] = voted_term
        steps["seen_at_s"] = round(time.monotonic() - began, 2)
        # Y's first append (its no-op) must not reach X before the crash: X stops hearing Y.
        # X's grant is already on its way out (it is persisted first, then sent).
        await asyncio.to_thread(ctx.nodes[x].drop_from, [ctx.nodes[y].address], "in")
        # Y is frozen before the grant arrives: it wins T only when it resumes, so its
        # check-quorum clock starts then (not while X restarts and C campaigns).
        await asyncio.to_thread(ctx.nodes[y].pause)
        paused.add(y)
        await asyncio.sleep(grant_wait_s)
        steps["killed_pid"] = ctx.nodes[x].pid
        await asyncio.to_thread(ctx.nodes[x].kill)
        steps["restarted_pid"] = await ctx.start_node(x)
        # C and X may talk again; Y stays cut off from C, and X still does not hear Y.
        await asyncio.to_thread(ctx.nodes[c].heal_network)
        await asyncio.to_thread(ctx.nodes[c].drop_from, [ctx.nodes[y].address], "in")
        await asyncio.to_thread(ctx.nodes[x].heal_network)
        await asyncio.to_thread(ctx.nodes[x].drop_from, [ctx.nodes[y].address], "in")
        began = time.monotonic()
        leaders_seen: dict[str, int] = {}
        while time.monotonic() - began < watch_s / 2:
            statuses = await ctx.statuses()
            leaders_seen = {n: s["term"] for n, s in statuses.items() if s and s.get("role") == "leader"}
            if c in leaders_seen or any(t > voted_term for t in leaders_seen.values()):
                break
            await asyncio.sleep(poll_s * 3)
        steps["leaders"] = leaders_seen
        # X hears both again and Y resumes; C and Y still cannot hear each other. Clients use
        # both sides.
        await asyncio.to_thread(ctx.nodes[x].heal_network)
        await asyncio.to_thread(ctx.nodes[x].clear_netem)
        await asyncio.to_thread(ctx.nodes[y].resume)
        paused.discard(y)
        await asyncio.sleep(1.0)
        statuses = await ctx.statuses()
        steps["leaders_after_resume"] = {n: s["term"] for n, s in statuses.items()
                                         if s and s.get("role") == "leader"}
        await asyncio.sleep(hold_s)
        return steps

    return schedule_package(ctx, "double-vote", DOUBLE_VOTE, HEAL, SHADING, double_vote, paused)
