"""Rebalancing a sharded cluster (issue 15): move one replica of a random shard to a node that
does not host it, while the other faults run. Only shards with a majority of their members
running are moved (a group that cannot commit cannot change its membership; the op is
recorded as skipped rather than blocking the schedule for MOVE_TIMEOUT_S).

Each op reads the shard map from the running nodes (the newest epoch any of them reports),
picks a shard with no move in flight, one of its members as the source and a running node
outside it as the target, and sends the admin ``move_replica`` (the shard's leader runs it:
record the move in the map, learner, catch-up, one joint change, the map's next epoch). The
op records the shard, source and target, the epoch before and after, the members the move
ended with and the call's honest outcome (ok / fail / unknown: a move cut by a partition may
still finish, or be undone by the shard's next leader).

Some moves (``DISRUPT_P``) also have the shard's leader (the mover), the source or the target
killed with SIGKILL a moment after the move starts and restarted a second later (recorded in
the op's ``disrupted``): a move must survive, fail cleanly, or be finished or undone by the
shard's next leader, and the map must still add up.

Which shard moves: most moves (``BUSY_P``) take a shard the workload is writing to right now
(its group's commit index grew over ``BUSY_SAMPLE_S``), as load-based rebalancers do (TiKV PD's
hot-region scheduler, CockroachDB's load-based rebalancing): a move of a shard no client
touches cannot show what a move does to requests. The op records the busy shards it chose from.

After a finished move, most (``LEAD_P``) also hand the shard's leadership to the replica that
just joined, as a leader balancer would (PD's balance-leader, CockroachDB's lease
rebalancing), recorded in the op's ``leader_to_target``: the new replica then serves the
shard's requests at once, so what it holds right after a move is read. Reads are served by a
shard's leader only, so without this a moved-in replica's state machine is seldom read.

The final op waits (bounded) until the newest map has no move in flight, and records it with
every answering node's epoch (a node another fault still cuts off learns the map later). Then
each shard that moves changed is handed to the replica its last finished move brought in,
where that one is still a member and running (``leaders_to_moved_in``): the workload's final
reads of every key then read each moved shard from a replica that joined by a move.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Mapping

from ukehi import wire
from ukehi.client import UkehiClient

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading

MOVE, SETTLE = "move-replica", "settle-shards"
FS = (MOVE, SETTLE)
SHADING = Shading("rebalance", instant=(MOVE,))
#: seconds a move may take (learner catch-up included) before it is recorded as unknown
MOVE_TIMEOUT_S = 25.0
#: how often a move has a node killed and restarted in its middle
DISRUPT_P = 0.4
#: seconds the final op waits for the map to settle
SETTLE_TIMEOUT_S = 20.0
#: how often a move takes a shard the workload is using now (when one is), not any shard
BUSY_P = 0.8
#: seconds between the two looks at the shards' commit indexes that tell which are in use
BUSY_SAMPLE_S = 0.5
#: how often a finished move is followed by handing the shard's leadership to its new replica
LEAD_P = 0.8


def newest_map(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The newest map the answering nodes report: epoch, moves in flight and each shard's
    hosts as the node with that epoch sees them (None: no sharded node answered)."""
    best: Mapping[str, Any] | None = None
    for st in statuses.values():
        if st and st.get("sharded") and (best is None or int(st.get("epoch") or 0) > int(best.get("epoch") or 0)):
            best = st
    if best is None:
        return None
    return {"epoch": int(best.get("epoch") or 0), "shard_count": int(best.get("shard_count") or 0),
            "moves": list(best.get("moves") or []), "reported_by": best.get("id")}


async def shard_members(ctx: FaultContext, statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[int, list[str]]:
    """Each shard's members by the newest map a running node holds (its shard_map answer)."""
    ranked = sorted(((int((st or {}).get("epoch") or 0), n) for n, st in statuses.items() if st), reverse=True)
    for _epoch, node in ranked:
        try:
            async with UkehiClient([ctx.endpoint(node)], timeout=3.0) as client:
                result = await client.shard_map_of(ctx.endpoint(node), timeout=3.0)
        except (OSError, asyncio.TimeoutError):
            continue
        if result.ok and isinstance(result.value, dict) and isinstance(result.value.get("map"), dict):
            return {s: list(m) for s, m in enumerate(result.value["map"]["members"])}
    return {}


def shard_commits(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[int, int]:
    """Each shard's highest commit index any answering node reports for its group."""
    out: dict[int, int] = {}
    for st in statuses.values():
        for s, g in ((st or {}).get("shards") or {}).items():
            if isinstance(g, dict):
                out[int(s)] = max(out.get(int(s), 0), int(g.get("commit_index") or 0))
    return out


def busy_shards(before: Mapping[int, int], after: Mapping[int, int]) -> list[int]:
    """The shards whose group committed entries between two looks: the ones clients use."""
    return sorted(s for s, c in after.items() if c > before.get(s, c))


def move_choices(members: Mapping[int, list[str]], moving: set[int], running: list[str]) -> list[tuple[int, str]]:
    """(shard, target) pairs a move may take: a shard with no move in flight and a majority of
    its members running, to a running node outside it. A group with most of its members down
    cannot change its membership: such a move would only wait out MOVE_TIMEOUT_S, and the
    schedule's next op (the restart of those very nodes) with it. The source may be down:
    moving a dead node's replica away is what an operator does."""
    up = set(running)
    return [(s, dst) for s, ms in sorted(members.items())
            if s not in moving and 2 * sum(1 for n in ms if n in up) > len(ms)
            for dst in running if dst not in ms]


def _leader_of(statuses: Mapping[str, Mapping[str, Any] | None], shard: int) -> str | None:
    best = max(((int(g.get("term") or 0), n) for n, st in statuses.items() if st
                for s, g in (st.get("shards") or {}).items() if int(s) == shard and g.get("role") == "leader"),
               default=None)
    return best[1] if best else None


def package(ctx: FaultContext) -> NemesisPackage:
    # shard -> the node its last finished move brought in (the final op hands it the lead)
    moved_in: dict[int, str] = {}

    async def kill_mid_move(rng: random.Random, statuses: Mapping[str, Mapping[str, Any] | None], shard: int,
                            src: str, dst: str, call: "asyncio.Future[Any]") -> dict[str, Any]:
        """A restart in the middle of the move: once a node reports running it, kill -9 that
        node (the mover), the source or the target, and restart it a second later."""
        deadline = time.monotonic() + 5.0
        mover, step = _leader_of(statuses, shard), None
        while time.monotonic() < deadline and not call.done():
            now = await ctx.statuses()
            running = [(n, st["moving"][str(shard)]) for n, st in now.items()
                       if st and str(shard) in (st.get("moving") or {})]
            if running:
                mover, step = running[0][0], running[0][1].get("step")
                break
            await asyncio.sleep(0.05)
        # At once: a move of a small shard takes a tenth of a second or so.
        victim = rng.choice(sorted({n for n in (mover, src, dst) if n is not None}))
        out: dict[str, Any] = {"node": victim, "step_seen": step, "role": "mover" if victim == mover else (
            "source" if victim == src else "target")}
        if call.done() or not ctx.nodes[victim].is_running():
            out["skipped"] = "the move had ended" if call.done() else "the node was not running"
            return out
        out["killed"] = await asyncio.to_thread(ctx.nodes[victim].kill)
        await asyncio.sleep(1.0)
        out["pid"] = await ctx.start_node(victim)
        return out

    async def lead_to(client: UkehiClient, shard: int, node: str) -> dict[str, Any]:
        """Ask the shard's leader (by the nodes' statuses) to hand leadership to `node`. A
        transfer needs `node` caught up; a refusal is recorded, not retried."""
        leader = _leader_of(await ctx.statuses(), shard)
        if leader is None:
            return {"skipped": "no leader of the shard answered"}
        if leader == node:
            return {"outcome": "ok", "already": True}
        moved = await client.request(wire.MsgType.TRANSFER_LEADER, {"node": node}, target=ctx.endpoint(leader),
                                     shard=shard, timeout=5.0)
        return {"from": leader, "outcome": moved.outcome, **({"error": moved.error} if moved.error else {})}

    def generator(rng: random.Random) -> OpDict:
        return {"f": MOVE, "value": {"seed": rng.getrandbits(32)}}

    async def move(rng: random.Random) -> dict[str, Any]:
        first = shard_commits(await ctx.statuses())
        await asyncio.sleep(BUSY_SAMPLE_S)
        statuses = await ctx.statuses()
        busy = busy_shards(first, shard_commits(statuses))
        before = newest_map(statuses)
        if before is None:
            return {"skipped": "no sharded node answered"}
        members = await shard_members(ctx, statuses)
        moving = {int(m["shard"]) for m in before["moves"]}
        running = sorted(n for n in ctx.nodes if ctx.nodes[n].is_running())
        choices = move_choices(members, moving, running)
        if not choices:
            return {"skipped": "no shard without a move in flight has a majority of its members running "
                               "and a running node outside it", "epoch_before": before["epoch"],
                    "running": running}
        hot = [c for c in choices if c[0] in busy]
        want_busy = rng.random() < BUSY_P
        shard, dst = rng.choice(hot if want_busy and hot else choices)
        src = rng.choice(sorted(members[shard]))
        lead = rng.random() < LEAD_P
        done: dict[str, Any] = {"shard": shard, "from": src, "to": dst, "epoch_before": before["epoch"],
                                "members_before": sorted(members[shard]), "busy_shards": busy}
        addresses = [ctx.endpoint(n) for n in running]
        disrupt = rng.random() < DISRUPT_P
        async with UkehiClient(addresses, timeout=MOVE_TIMEOUT_S, connect_timeout=0.5) as client:
            call = asyncio.ensure_future(client.move_replica(shard, src, dst, timeout=MOVE_TIMEOUT_S))
            if disrupt:
                done["disrupted"] = await kill_mid_move(rng, statuses, shard, src, dst, call)
            result = await call
            if result.ok:
                moved_in[shard] = dst
            if result.ok and lead and ctx.nodes[dst].is_running():
                done["leader_to_target"] = await lead_to(client, shard, dst)
        done["outcome"] = result.outcome
        if result.error is not None:
            done["error"] = result.error
        if result.message:
            done["message"] = result.message[:300]
        if result.ok and isinstance(result.value, dict):
            done["epoch_after"] = result.value.get("epoch")
            done["members_after"] = sorted(result.value.get("members") or [])
        else:
            after = newest_map(await ctx.statuses())
            done["epoch_after"] = after["epoch"] if after else None
        return done

    async def settle() -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        view: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            statuses = {n: st for n, st in (await ctx.statuses()).items() if st}
            view = newest_map(statuses)
            if view is not None and not view["moves"]:
                # Nodes still cut off by another fault learn the map when it heals: their
                # epochs are recorded, not waited for.
                view["epochs"] = {n: st.get("epoch") for n, st in sorted(statuses.items())}
                view["members"] = {str(s): m for s, m in sorted((await shard_members(ctx, statuses)).items())}
                view["leaders_to_moved_in"] = await lead_moved_in(view["members"])
                return {"settled": True, **view}
            await asyncio.sleep(0.2)
        return {"settled": False, **(view or {})}

    async def lead_moved_in(members: Mapping[str, list[str]]) -> dict[str, Any]:
        """Hand each moved shard's leadership to the replica its last finished move brought in
        (still a member and running): the final reads then come from it."""
        out: dict[str, Any] = {}
        wanted = [(s, n) for s, n in sorted(moved_in.items())
                  if n in members.get(str(s), []) and ctx.nodes[n].is_running()]
        if not wanted:
            return out
        addresses = [ctx.endpoint(n) for n in sorted(ctx.nodes) if ctx.nodes[n].is_running()]
        async with UkehiClient(addresses, timeout=5.0, connect_timeout=0.5) as client:
            for shard, node in wanted:
                out[str(shard)] = {"node": node, **await lead_to(client, shard, node)}
        return out

    async def invoke(op: OpDict) -> Any:
        f = op["f"]
        if f == SETTLE:
            return await settle()
        if f != MOVE:
            raise ValueError(f"rebalance nemesis cannot perform {f!r}")
        return await move(random.Random(op["value"]["seed"]))

    return NemesisPackage(
        name="rebalance",
        generator=generator,
        # A move is not undone; the final op waits for the map to settle and records it.
        final=lambda: [{"f": SETTLE}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset(FS),
    )
