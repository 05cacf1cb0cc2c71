"""``stale-append``: a deposed leader's AppendEntries reaches a follower late.

Does a follower refuse AppendEntries of a lower term? A correct follower answers a stale
leader with its own term and changes nothing. One that accepts the append truncates its log
where the stale leader's entries conflict, and that can cut entries a newer leader already
acknowledged. Raft's other defences usually hide the bug: a follower ignores appends that
start below its commit index, and a new leader's client writes normally reach a follower
only in a message that also tells it the new term's no-op committed. The schedule lines up
the one opening, reading each node's ``status`` to decide every step (3 nodes):

0. F stops hearing the leader A of term T0 and the nemesis writes through A: F lags N (N
   then refuses F's pre-votes, so only N can win the next term).
1. A is cut off by dropping everything it sends (and what N sends it) while its clients
   write: A appends a tail of entries nobody else has, and its kernel keeps retransmitting
   the appends to F on the same TCP connection. A is paused, so it sends nothing newer.
   Both directions between N and F are delayed (``delay_share`` of the election timeout
   each, read from the nodes' status: N must still hear F within its check-quorum time).
2. N wins T1 with F's vote. N's first append (its no-op) finds F lagging; until F's
   acknowledgement of the no-op comes back (two delayed round trips), every client write
   N appends reaches F in a message that still carries the old commit index. F
   acknowledges, N commits and acknowledges the writes, and the nemesis drops N's next
   message (the one with the new commit index, still in the delayed link) and kills N.
3. A's packets to F flow again: at its next retransmission F receives A's old appends,
   among them the tail, starting at an index F holds with the same term and at or above
   F's commit index.
4. A follower that accepts the stale append replaces N's entries with A's tail. A is
   restarted; A and F elect a leader of T2 without N, which then restarts: N's acknowledged
   writes are gone, and the workload's reads show it.

The correct build survives the same schedule: F refuses the stale appends (its status
counts them, and the op records it), keeps N's entries, and wins T2 with them (its last
term, T1, is newer than A's).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ukehi.client import UkehiClient

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading
from .watch import Statuses, leaders, schedule_package, status_field, wait_for

STALE_APPEND, HEAL = "stale-append", "stop-stale-append"
SHADING = Shading("stale-append", start=(STALE_APPEND,), stop=(HEAL,))
# The tail is a write of a key of the nemesis's own (no workload reads it), so A can be
# paused at once, before its clients add writes of theirs.
TAIL_KEY = "nemesis/stale-append"
LAG_KEY = "nemesis/stale-append-lag"


def stale_append_package(ctx: FaultContext, delay_share: float = 0.4, hold_s: float = 3.0,
                         watch_s: float = 8.0, poll_s: float = 0.02,
                         retransmit_s: float = 12.0) -> NemesisPackage:
    if len(ctx.nodes) != 3:
        raise ValueError("--nemesis stale-append needs exactly 3 nodes (--nodes 3)")
    nodes = ctx.nodes
    paused: set[str] = set()

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def stale_append(op: OpDict) -> dict[str, Any]:
        statuses = await ctx.statuses()
        current = leaders(statuses)
        if not current:
            return {"skipped": "no leader to cut off"}
        t0, a = current[-1]
        # Each direction between N and F is delayed by this share of the election timeout:
        # the longer the round trips, the more client writes reach N before F's first
        # acknowledgement, but N and F must still hear each other within an election
        # timeout, or N's check-quorum deposes it.
        timers = statuses.get(a) or {}
        delay_ms = delay_share * (timers.get("election_timeout_ms") or [600])[0]
        async with UkehiClient([ctx.endpoint(a)], timeout=2.0, pinned=True) as client:
            writes: list[asyncio.Future[Any]] = []
            try:
                return await schedule(t0, a, delay_ms, client, writes)
            finally:
                await asyncio.gather(*writes, return_exceptions=True)

    async def schedule(t0: int, a: str, delay_ms: float, client: UkehiClient,
                       writes: list[asyncio.Future[Any]]) -> dict[str, Any]:
        n, f = sorted(x for x in nodes if x != a)
        steps: dict[str, Any] = {"old_leader": a, "term": t0, "new_leader": n, "follower": f,
                                 "delay_ms": delay_ms}
        # seconds since the op began at which each step was reached (to tell, in a history,
        # which client ops fell into which step)
        began = asyncio.get_running_loop().time()
        timeline: dict[str, float] = steps.setdefault("timeline", {})

        def reached(step: str) -> None:
            timeline[step] = round(asyncio.get_running_loop().time() - began, 3)

        # 0. F lags N. (N <-> F is delayed already: they send each other nothing while A
        # leads, and the shaper's set-up is slow, so it must not stand between the cut and
        # the pause.)
        await run(nodes[n].set_netem, delay_ms, 0.0, 0.0, 0.0, 0.0, [nodes[f].address])
        await run(nodes[f].set_netem, delay_ms, 0.0, 0.0, 0.0, 0.0, [nodes[n].address])
        await run(nodes[f].drop_from, [nodes[a].address], "in")
        # A write of the nemesis's own that A and N commit without F: the lag does not wait
        # on the workload's writes.
        lag = await client.put(LAG_KEY, "lag")
        lagging, _ = await wait_for(ctx, 1.0, 0.05,
                                    lambda s: status_field(s, n, "last_index") > status_field(s, f, "last_index"))
        if not lagging:
            steps["missed"] = f"the follower did not fall behind ({lag.outcome} {lag.error or ''})".strip()
            return steps

        # 1. A's packets go nowhere (they wait in its kernel), N's heartbeats do not depose it.
        await run(nodes[a].drop_from, [nodes[n].address, nodes[f].address], "out")
        await run(nodes[a].drop_from, [nodes[n].address], "in")
        reached("cut")
        await run(nodes[f].heal_network)
        writes.append(asyncio.ensure_future(client.put(TAIL_KEY, "tail")))

        def tail(s: Statuses) -> Any:
            a_last = status_field(s, a, "last_index")
            others = max(status_field(s, n, "last_index"), status_field(s, f, "last_index"))
            return {"a": a_last, "others": others} if s.get(a) and a_last > others else None

        seen, _ = await wait_for(ctx, 1.5, 0.005, tail)
        await run(nodes[a].pause)
        paused.add(a)
        if not seen:
            steps["missed"] = "the old leader appended nothing after the cut"
            return steps
        steps["tail"] = seen
        reached("paused")
        boundary = seen["others"]  # the last index N, F and A all hold

        # 2. N wins T1; its first writes reach F with the old commit index.
        won, _ = await wait_for(ctx, watch_s, poll_s,
                                lambda s: leaders(s, above_term=t0, among=(n, f)), names=(n, f))
        if not won or won[-1][1] != n:
            steps["missed"] = f"the expected node did not win the next term ({won})"
            return steps
        t1 = won[-1][0]
        steps["new_term"] = t1
        reached("won")

        def acknowledged(s: Statuses) -> Any:
            # N's no-op and at least one client write applied on N, and held by F
            applied = status_field(s, n, "applied_index")
            return applied if applied > boundary + 1 and status_field(s, f, "last_index") >= applied else None

        applied, _ = await wait_for(ctx, watch_s, poll_s, acknowledged, names=(n, f))
        await run(nodes[f].drop_from, [nodes[n].address], "in")
        await asyncio.sleep(0.03)  # let the acknowledgements leave
        steps["killed_new_leader"] = nodes[n].pid
        reached("killed")
        await run(nodes[n].kill)
        statuses = await ctx.statuses((f,))
        steps["new_leader_applied"] = applied
        steps["follower_state"] = {k: status_field(statuses, f, k) for k in ("commit_index", "last_index", "last_term")}
        if not applied:
            steps["missed"] = "the new leader acknowledged no write that the follower holds"
            return steps
        if status_field(statuses, f, "commit_index") > boundary:
            steps["missed"] = "the follower learned the new commit index (the writes came after the no-op)"
            return steps

        # 3. A's retransmissions reach F: it takes the tail (its log ends in T0 again) or
        # refuses the appends (its count of refused lower-term appends grows).
        refused_before = status_field(statuses, f, "stale_appends_refused")
        await run(nodes[a].heal_network)
        await run(nodes[a].drop_from, [nodes[n].address], "both")

        def arrived(s: Statuses) -> Any:
            if status_field(s, f, "last_term") == t0:
                return "took the stale tail"
            if status_field(s, f, "stale_appends_refused") > refused_before:
                return "refused the stale appends"
            return None

        outcome, statuses = await wait_for(ctx, retransmit_s, poll_s, arrived, names=(f,))
        steps["follower_took_stale_tail"] = outcome == "took the stale tail"
        steps["stale_appends"] = outcome or "never arrived"
        reached("stale")
        steps["follower_after"] = {k: status_field(statuses, f, k)
                                   for k in ("commit_index", "last_index", "last_term", "stale_appends_refused")}

        # 4. A and F elect a leader of T2; N comes back after. A is killed and restarted rather
        # than resumed: resumed, it would first serve the client requests that queued up
        # while it was paused, as the leader of T0, and a write among them taking effect
        # later would hide the lost one from the checker.
        steps["killed_old_leader"] = nodes[a].pid
        await run(nodes[a].kill)
        paused.discard(a)
        await run(nodes[n].clear_netem)
        await run(nodes[f].clear_netem)
        await run(nodes[f].heal_network)
        await run(nodes[a].heal_network)
        await run(nodes[a].drop_from, [nodes[n].address], "both")
        steps["restarted_old_leader"] = await ctx.start_node(a)
        won, _ = await wait_for(ctx, watch_s, poll_s, lambda s: leaders(s, above_term=t1))
        steps["leader_after"] = list(won[-1]) if won else None
        await run(nodes[a].heal_network)
        steps["restarted_new_leader"] = await ctx.start_node(n)
        await asyncio.sleep(hold_s)
        return steps

    return schedule_package(ctx, "stale-append", STALE_APPEND, HEAL, SHADING, stale_append, paused)
