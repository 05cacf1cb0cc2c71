"""``figure-8``: the Raft paper's figure 8, played on a real 3-node cluster.

Can a leader commit an entry of an earlier term by counting replicas, and can a later
leader then overwrite it? A correct Raft commits an old-term entry only together with an
entry of its own term (paper section 5.4.2). The schedule builds the one shape in which the
difference shows, reading each node's ``status`` to decide every step:

0. Y stops hearing the leader A of term T0 until it lags X (X then refuses Y's pre-votes,
   so only X can win the next term).
1. A is cut off from X and Y while its clients still write: A appends entries nobody else
   has (the old-term tail) and steps down by check-quorum. The link X -> Y is delayed by
   ``delay_ms``.
2. X wins term T1 with Y's vote. Y rejects X's first append (a probe: Y lags), and the
   entries X sends next are still in the delayed link when the nemesis sees X lead, so Y is
   told to drop what X sends and X is cut off from everyone: X now holds the only copy of
   an entry of T1.
3. A is reconnected to Y, with A -> Y delayed by ``delay_ms``. A's log is longer than Y's,
   so A wins term T2 with Y's vote and appends its no-op G after the old-term tail.
4. With stop-and-wait replication (``--max-inflight 1 --max-entries-per-message 1``,
   the regression case sets them) A sends the tail to Y one entry per round trip and G
   last. A node that commits by counting commits the first tail entry as soon as Y has it,
   applies it and acknowledges the client that wrote it. Once A has applied an entry above
   Y's old log, A is killed, and nothing A still had in flight reaches Y.
5. X is reconnected. Its last entry (term T1) is newer than Y's (term T0), so X wins T3
   with Y's vote and overwrites the tail: a write acknowledged in step 4 is gone, and the
   workload's reads show it. A restarts after X leads.

The correct build survives the same schedule: A commits nothing of the tail before Y holds
G, so when A is killed Y's log ends in T2, X cannot win, and no acknowledged write is lost.
Every step and the indexes it saw are recorded in the op's value.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading
from .watch import Statuses, leaders, schedule_package, status_field, wait_for

FIGURE_8, HEAL = "figure-8", "stop-figure-8"
SHADING = Shading("figure-8", start=(FIGURE_8,), stop=(HEAL,))

def figure_eight_package(ctx: FaultContext, delay_ms: float = 250.0, hold_s: float = 3.0,
                         watch_s: float = 8.0, poll_s: float = 0.02) -> NemesisPackage:
    if len(ctx.nodes) != 3:
        raise ValueError("--nemesis figure-8 needs exactly 3 nodes (--nodes 3)")
    nodes = ctx.nodes

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def figure_eight(op: OpDict) -> dict[str, Any]:
        current = leaders(await ctx.statuses())
        if not current:
            return {"skipped": "no leader to cut off"}
        t0, a = current[-1]
        x, y = sorted(n for n in nodes if n != a)
        steps: dict[str, Any] = {"old_leader": a, "term": t0}

        # 0. Y falls behind X first (it stops hearing A while A commits with X): Y's log is
        # then shorter than X's, X refuses Y's pre-votes, and only X can win the next term.
        await run(nodes[y].drop_from, [nodes[a].address], "in")

        def lagging(s: Statuses) -> Any:
            return status_field(s, x, "last_index") > status_field(s, y, "last_index")

        await wait_for(ctx, 1.0, 0.05, lagging)

        # 1. A writes alone; X -> Y is slow.
        for direction in ("in", "out"):
            await run(nodes[a].drop_from, [nodes[x].address, nodes[y].address], direction)
        await run(nodes[y].heal_network)
        await run(nodes[x].set_netem, delay_ms, 0.0, 0.0, 0.0, 0.0, [nodes[y].address])

        def tail(s: Statuses) -> Any:
            a_last = status_field(s, a, "last_index")
            others = max(status_field(s, x, "last_index"), status_field(s, y, "last_index"))
            return {"a": a_last, "others": others} if s.get(a) and a_last > others else None

        seen, _ = await wait_for(ctx, 1.5, 0.05, tail)
        if not seen:
            steps["missed"] = "the old leader appended nothing after the cut (no client wrote to it)"
            return steps
        steps["tail"] = seen
        boundary = seen["others"]  # entries above it exist on A only

        # 2. X wins T1; its first entries must not reach Y.
        def new_leader(s: Statuses) -> Any:
            won = leaders(s, above_term=t0, among=(x, y))
            return won[-1] if won else None

        won, _ = await wait_for(ctx, watch_s, poll_s, new_leader)
        if not won:
            steps["missed"] = "no new leader among the other two"
            return steps
        t1, x = won
        y = next(n for n in nodes if n not in (a, x))
        await run(nodes[y].drop_from, [nodes[x].address], "in")
        for direction in ("in", "out"):
            await run(nodes[x].drop_from, [nodes[a].address, nodes[y].address], direction)
        statuses = await ctx.statuses()
        y_last = status_field(statuses, y, "last_index")
        steps.update(new_leader=x, new_term=t1, voter=y, voter_last=y_last,
                     new_leader_last=status_field(statuses, x, "last_index"))
        if y_last > boundary:
            steps["missed"] = "the new leader's entries reached the voter before it was cut off"
            return steps

        # 3. A and Y talk again (A -> Y slow); A's longer log wins T2.
        await run(nodes[a].heal_network)
        await run(nodes[a].set_netem, delay_ms, 0.0, 0.0, 0.0, 0.0, [nodes[y].address])

        def old_leader_back(s: Statuses) -> Any:
            st = s.get(a)
            return st["term"] if st and st.get("role") == "leader" and st.get("term", 0) > t1 else None

        t2, statuses = await wait_for(ctx, watch_s, poll_s, old_leader_back)
        if not t2:
            steps["missed"] = "the old leader did not win a newer term"
            return steps
        own_first = status_field(statuses, a, "last_index")  # its no-op, the first entry of T2
        steps.update(old_leader_term=t2, old_leader_noop=own_first)

        # 4. A replicates the tail to Y one entry per round trip; stop A once it applied an
        # entry Y did not have before (in a correct build only together with its no-op).
        def applied_past_voter(s: Statuses) -> Any:
            st = s.get(a)
            if not st or st.get("role") != "leader":
                return "lost"
            return st if int(st.get("applied_index", 0)) > boundary else None

        st, _ = await wait_for(ctx, watch_s, poll_s, applied_past_voter)
        if st == "lost" or not st:
            steps["missed"] = "the old leader lost its term or applied nothing new"
            return steps
        steps["old_leader_commit"] = int(st["commit_index"])
        steps["old_term_committed_alone"] = int(st["commit_index"]) < own_first
        await asyncio.sleep(0.03)  # let the acknowledgement leave before the crash
        steps["killed_pid"] = nodes[a].pid
        await run(nodes[a].kill)
        # Nothing A had in flight may reach Y: drop it at Y, and stop A's namespace from
        # retransmitting, then let the delayer release what it held into the drop.
        await run(nodes[y].drop_from, [nodes[a].address], "in")
        await run(nodes[a].drop_from, [nodes[y].address, nodes[x].address], "out")
        await run(nodes[a].clear_netem)

        # 5. X comes back and (with a counting leader's tail on Y) wins T3.
        await run(nodes[x].clear_netem)
        await run(nodes[y].clear_netem)
        await run(nodes[x].heal_network)
        await run(nodes[y].heal_network)

        def after(s: Statuses) -> Any:
            won = leaders(s, above_term=t2)
            return won[-1] if won else None

        later, _ = await wait_for(ctx, watch_s, poll_s, after)
        steps["leader_after"] = list(later) if later else None
        await run(nodes[a].heal_network)
        steps["restarted_pid"] = await ctx.start_node(a)
        await asyncio.sleep(hold_s)
        return steps

    return schedule_package(ctx, "figure-8", FIGURE_8, HEAL, SHADING, figure_eight, set())
