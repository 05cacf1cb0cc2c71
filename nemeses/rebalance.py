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

Adding and removing nodes (issue 15's "add a node, remove a node"): a sharded run with this
nemesis starts its last node as a spare (``ukehi node --join``, harness/sharding.py
``rebalance_founders``). An ``add-node`` op adds a running node the map does not have (the spare,
or a node removed earlier) with the admin ``add_node``; a ``remove-node`` op marks a node of the
map leaving with ``remove_node``: any node, a metadata-group member included (its replica of
the metadata group moves first, by the same steps as a shard replica), but never one that would
leave fewer than R nodes. Either change starts a rebalance the shard leaders
run by the partitioner's plan; the op waits (bounded, REBALANCE_WAIT_S) for it to end, and
records the epoch before, the epoch the change committed at and the epoch after, the shards the
plan moves (``planned``) and the shards whose members changed (``moved_shards``), with the admin
call's honest outcome (ok / fail / unknown with the error), as the membership nemesis does, so
the availability checker's membership-refused rule reads them. After a finished rebalance, most
(``LEAD_P``) also hand each moved shard's leadership to the replica it gained (recorded in
``leaders_to_moved_in``), as after a move; the final op does so for every moved shard. A removed node that the map no
longer names is stopped and comes back as a fresh spare (data wiped, ``--join``), a founder
too (a ``--join`` node names the cluster by the founders up to itself, so a founder rejoins
fresh). A removal the rebalance has not finished in time leaves
the node running (it still hosts replicas) and it is not wiped.

Which kind of op comes next: OP_WEIGHTS among the kinds the map the last op saw allows
(``feasible_kinds``): after a removal leaves R nodes every shard is on every node, so no move
has a target and only an add can follow; with no node outside the map, no add.

The final op waits (bounded) until the newest map has no move in flight and no rebalance running, and records it with
every answering node's epoch (a node another fault still cuts off learns the map later). Then
each shard that moves changed is handed to the replica its last finished move brought in,
where that one is still a member and running (``leaders_to_moved_in``): the workload's final
reads of every key then read each moved shard from a replica that joined by a move.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Mapping, Sequence

from ukehi import wire
from ukehi.client import UkehiClient

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading

MOVE, SETTLE = "move-replica", "settle-shards"
# The membership nemesis's names: the availability checker reads both alike.
ADD, REMOVE = "add-node", "remove-node"
FS = (MOVE, ADD, REMOVE, SETTLE)
SHADING = Shading("rebalance", instant=(MOVE, ADD, REMOVE))
#: how often each kind of op is drawn (an infeasible one is recorded as skipped)
OP_WEIGHTS = ((MOVE, 0.5), (ADD, 0.25), (REMOVE, 0.25))
#: seconds an add_node/remove_node admin call may take (one map change in the metadata group)
NODE_ADMIN_TIMEOUT_S = 12.0
#: seconds an add-node/remove-node op waits for the rebalance it started to end
REBALANCE_WAIT_S = 20.0
#: seconds a move may take (learner catch-up included) before it is recorded as unknown
MOVE_TIMEOUT_S = 25.0
#: how often a move has a node killed and restarted in its middle
DISRUPT_P = 0.4
#: seconds the final op waits for the map to settle (no move in flight, no rebalance running)
SETTLE_TIMEOUT_S = 30.0
#: how often a move takes a shard the workload is using now (when one is), not any shard
BUSY_P = 0.8
#: seconds between the two looks at the shards' commit indexes that tell which are in use
BUSY_SAMPLE_S = 0.5
#: how often a finished move is followed by handing the shard's leadership to its new replica
LEAD_P = 0.8



def _result_fields(result: Any) -> dict[str, Any]:
    """An admin call's outcome as an op records it: ok/fail/unknown, the error code, the message."""
    out: dict[str, Any] = {"outcome": result.outcome}
    if result.error is not None:
        out["error"] = result.error
    if result.message:
        out["message"] = result.message[:300]
    return out

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
            "moves": list(best.get("moves") or []), "nodes": sorted(best.get("nodes") or []),
            "leaving": sorted(best.get("leaving") or []), "rebalancing": bool(best.get("rebalancing")),
            "reported_by": best.get("id")}


async def newest_shard_map(ctx: FaultContext, statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The map (ShardMap.to_dict form) of the newest epoch a running node holds (its shard_map
    answer); {} when none answers."""
    ranked = sorted(((int((st or {}).get("epoch") or 0), n) for n, st in statuses.items() if st), reverse=True)
    for _epoch, node in ranked:
        try:
            async with UkehiClient([ctx.endpoint(node)], timeout=3.0) as client:
                result = await client.shard_map_of(ctx.endpoint(node), timeout=3.0)
        except (OSError, asyncio.TimeoutError):
            continue
        if result.ok and isinstance(result.value, dict) and isinstance(result.value.get("map"), dict):
            return dict(result.value["map"])
    return {}


def members_of(smap: Mapping[str, Any]) -> dict[int, list[str]]:
    return {s: list(m) for s, m in enumerate(smap.get("members") or [])}


async def shard_members(ctx: FaultContext, statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[int, list[str]]:
    """Each shard's members by the newest map a running node holds (its shard_map answer)."""
    return members_of(await newest_shard_map(ctx, statuses))


def map_founders(smap: Mapping[str, Any]) -> list[str]:
    """The nodes the cluster was made with (the map's ``founders``; absent while they are its
    ``nodes``)."""
    return sorted(smap.get("founders") or smap.get("nodes") or [])


def add_choices(smap: Mapping[str, Any], running: list[str]) -> list[str]:
    """Nodes an add-node may add: running, and not in the map's node set (a spare, or a node
    removed earlier that the map has dropped). A node still leaving is not one: its removal
    has not finished."""
    known = set(smap.get("nodes") or [])
    return sorted(n for n in running if n not in known)


def metadata_members(smap: Mapping[str, Any]) -> list[str]:
    """The metadata group's members by a map's JSON form: its ``meta`` once a metadata
    replica has moved, else the founders' bootstrap placement (``ShardMap.metadata_members``)."""
    from ukehi.shardmap import meta_members

    if smap.get("meta"):
        return list(smap["meta"])
    founders = map_founders(smap)
    return list(meta_members(founders, int(smap.get("replication_factor") or 1))) if founders else []


def remove_choices(smap: Mapping[str, Any]) -> list[str]:
    """Nodes a remove-node may remove: in the map and not leaving already, metadata-group
    members included (the node moves their metadata replica first), and only while more than R
    nodes would stay (fewer than R cannot hold a shard's replicas). A node that is down may be
    removed: replacing a dead machine is what an operator does."""
    nodes, leaving = list(smap.get("nodes") or []), set(smap.get("leaving") or [])
    rf = int(smap.get("replication_factor") or 0)
    staying = [n for n in nodes if n not in leaving]
    if not staying or len(staying) - 1 < max(1, rf):
        return []
    return sorted(staying)


def changed_shards(before: Mapping[int, list[str]], after: Mapping[int, list[str]]) -> list[int]:
    """The shards whose member set differs between two maps (both known)."""
    if not before or not after:
        return []
    return sorted(s for s in after if set(after[s]) != set(before.get(s, [])))


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


def move_choices(members: Mapping[int, list[str]], moving: set[int], running: list[str],
                 nodes: Sequence[str] | None = None) -> list[tuple[int, str]]:
    """(shard, target) pairs a move may take: a shard with no move in flight and a majority of
    its members running, to a running node outside it. A group with most of its members down
    cannot change its membership: such a move would only wait out MOVE_TIMEOUT_S, and the
    schedule's next op (the restart of those very nodes) with it. The source may be down:
    moving a dead node's replica away is what an operator does. ``nodes``: the map's node set
    less the leaving ones (a spare not added yet, or a node being removed, is no target)."""
    up = set(running) if nodes is None else set(running) & set(nodes)
    return [(s, dst) for s, ms in sorted(members.items())
            if s not in moving and 2 * sum(1 for n in ms if n in up) > len(ms)
            for dst in sorted(up) if dst not in ms]


def feasible_kinds(smap: Mapping[str, Any], running: list[str]) -> set[str]:
    """The kinds of op the map last seen allows: a move while the nodes that stay outnumber
    R (with exactly R, every shard is on every node and has no node to move to), an add while a
    running node is outside the map, a remove while remove_choices has one."""
    staying = [n for n in smap.get("nodes") or [] if n not in set(smap.get("leaving") or [])]
    kinds = {ADD} if add_choices(smap, running) else set()
    if len(staying) > int(smap.get("replication_factor") or 0):
        kinds.add(MOVE)
    if remove_choices(smap):
        kinds.add(REMOVE)
    return kinds


def choose_kind(rng: random.Random, feasible: set[str] | None = None) -> str:
    """The next op's kind, by OP_WEIGHTS among the FEASIBLE ones (all when None or none is):
    a kind the cluster's shape rules out would only be recorded as skipped."""
    weights = [(k, w) for k, w in OP_WEIGHTS if not feasible or k in feasible] or list(OP_WEIGHTS)
    roll, acc = rng.random() * sum(w for _, w in weights), 0.0
    for kind, weight in weights:
        acc += weight
        if roll < acc:
            return kind
    return weights[-1][0]


def _leader_of(statuses: Mapping[str, Mapping[str, Any] | None], shard: int) -> str | None:
    best = max(((int(g.get("term") or 0), n) for n, st in statuses.items() if st
                for s, g in (st.get("shards") or {}).items() if int(s) == shard and g.get("role") == "leader"),
               default=None)
    return best[1] if best else None


def package(ctx: FaultContext) -> NemesisPackage:
    # shard -> the node its last finished move brought in (the final op hands it the lead)
    moved_in: dict[int, str] = {}
    # Nodes an add-node may have put in the map, not wiped since: added again only
    # after a fresh start (the map has dropped them, so no replica is lost by the wipe).
    used: set[str] = set()
    # What the last op saw (feasible_kinds of its map): the next op's kind is drawn from those.
    feasible: set[str] = set()

    def note(smap: Mapping[str, Any]) -> None:
        if smap.get("nodes"):
            feasible.clear()
            feasible.update(feasible_kinds(smap, sorted(n for n in ctx.nodes if ctx.nodes[n].is_running())))

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

    async def lead_to(client: UkehiClient, shard: int, node: str,
                      statuses: Mapping[str, Mapping[str, Any] | None] | None = None) -> dict[str, Any]:
        """Ask the shard's leader (by the nodes' statuses) to hand leadership to `node`. A
        transfer needs `node` caught up; a refusal is recorded, not retried."""
        leader = _leader_of(statuses if statuses is not None else await ctx.statuses(), shard)
        if leader is None:
            return {"skipped": "no leader of the shard answered"}
        if leader == node:
            return {"outcome": "ok", "already": True}
        moved = await client.request(wire.MsgType.TRANSFER_LEADER, {"node": node}, target=ctx.endpoint(leader),
                                     shard=shard, timeout=5.0)
        return {"from": leader, "outcome": moved.outcome, **({"error": moved.error} if moved.error else {})}

    def generator(rng: random.Random) -> OpDict:
        return {"f": choose_kind(rng, set(feasible)), "value": {"seed": rng.getrandbits(32)}}

    async def move(rng: random.Random) -> dict[str, Any]:
        first = shard_commits(await ctx.statuses())
        await asyncio.sleep(BUSY_SAMPLE_S)
        statuses = await ctx.statuses()
        busy = busy_shards(first, shard_commits(statuses))
        before = newest_map(statuses)
        if before is None:
            return {"skipped": "no sharded node answered"}
        smap = await newest_shard_map(ctx, statuses)
        note(smap)
        members = members_of(smap)
        moving = {int(m["shard"]) for m in before["moves"]}
        running = sorted(n for n in ctx.nodes if ctx.nodes[n].is_running())
        targets = [n for n in smap.get("nodes") or ctx.nodes if n not in set(smap.get("leaving") or [])]
        choices = move_choices(members, moving, running, targets)
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
        done.update(_result_fields(result))
        if result.ok and isinstance(result.value, dict):
            done["epoch_after"] = result.value.get("epoch")
            done["members_after"] = sorted(result.value.get("members") or [])
        else:
            after = newest_map(await ctx.statuses())
            done["epoch_after"] = after["epoch"] if after else None
        return done

    def admin_addresses(smap: Mapping[str, Any]) -> list[str]:
        """Running nodes to send a map change to, the metadata group's members first (the
        change is a compare-and-set in that group), then the map's other nodes."""
        meta = metadata_members(smap)
        order = meta + [n for n in sorted(smap.get("nodes") or ctx.nodes) if n not in meta]
        return [ctx.endpoint(n) for n in order if n in ctx.nodes and ctx.nodes[n].is_running()] or \
            [ctx.endpoint(n) for n in sorted(ctx.nodes)]

    async def wait_rebalanced(addresses: list[str]) -> dict[str, Any]:
        """Until the rebalance a node change started has ended (bounded): its answer's epoch,
        node set and leaving nodes, or why it did not end in time."""
        async with UkehiClient(addresses, timeout=5.0, connect_timeout=0.5) as client:
            result = await client.wait_rebalanced(REBALANCE_WAIT_S)
        out: dict[str, Any] = {"rebalanced": bool(result.ok)}
        if isinstance(result.value, dict):
            out.update({f"{k}_rebalanced": result.value.get(k) for k in ("epoch", "replicas_to_move")
                        if k in result.value})
        if not result.ok:
            out["wait_error"] = result.error or result.outcome
        return out

    async def change_nodes(f: str, rng: random.Random) -> dict[str, Any]:
        """An add-node or remove-node op (module doc)."""
        statuses = await ctx.statuses()
        before = newest_map(statuses)
        if before is None:
            return {"skipped": "no sharded node answered"}
        smap = await newest_shard_map(ctx, statuses)
        if not smap:
            return {"skipped": "no node answered with its shard map", "epoch_before": before["epoch"]}
        note(smap)
        running = sorted(n for n in ctx.nodes if ctx.nodes[n].is_running())
        founders = map_founders(smap)
        if f == ADD:
            choices = add_choices(smap, running)
            if not choices:
                return {"skipped": "no running node outside the map's node set (a spare or a removed node)",
                        "epoch_before": int(smap.get("epoch") or 0), "nodes": sorted(smap.get("nodes") or [])}
        else:
            choices = remove_choices(smap)
            if not choices:
                return {"skipped": "no node can go while R nodes stay",
                        "epoch_before": int(smap.get("epoch") or 0), "nodes": sorted(smap.get("nodes") or []),
                        "leaving": sorted(smap.get("leaving") or [])}
        node = rng.choice(choices)
        members_before = members_of(smap)
        done: dict[str, Any] = {"node": node, "founder": node in founders, "epoch_before": int(smap.get("epoch") or 0),
                                "nodes_before": sorted(smap.get("nodes") or []),
                                "leaving_before": sorted(smap.get("leaving") or [])}
        if f == ADD and node in used:
            # Removed earlier (the map no longer names it) but not wiped yet: it comes back new.
            done["restarted_fresh_pid"] = await ctx.start_fresh(node)
            used.discard(node)
        if f == ADD:
            used.add(node)
        addresses = admin_addresses(smap)
        async with UkehiClient(addresses, timeout=NODE_ADMIN_TIMEOUT_S, connect_timeout=0.5) as client:
            if f == ADD:
                result = await client.add_node(node, ctx.endpoint(node), timeout=NODE_ADMIN_TIMEOUT_S)
            else:
                result = await client.remove_node(node, timeout=NODE_ADMIN_TIMEOUT_S)
        done.update(_result_fields(result))
        if result.ok and isinstance(result.value, dict):
            done["epoch_changed"] = result.value.get("epoch")
            planned = result.value.get("planned") or []
            done["planned"] = planned
            done["planned_shards"] = sorted({int(p[0]) for p in planned})
        if result.outcome != "fail":
            # ok, or unknown (the change may still have committed): see where it went.
            done.update(await wait_rebalanced(addresses))
        after_statuses = await ctx.statuses()
        after_map = await newest_shard_map(ctx, after_statuses)
        if after_map:
            note(after_map)
            members_after = members_of(after_map)
            done["epoch_after"] = int(after_map.get("epoch") or 0)
            done["nodes_after"] = sorted(after_map.get("nodes") or [])
            done["leaving_after"] = sorted(after_map.get("leaving") or [])
            done["moved_shards"] = changed_shards(members_before, members_after)
            done["members_after"] = {str(k): sorted(m) for k, m in members_after.items()}
            # The replica each moved shard gained (the added node, or where a removed node's
            # replica went): the final op hands it the lead, and most changes do so at once,
            # as a leader balancer does after a scale-out (PD's balance-leader).
            gained = {sh: n for sh in done["moved_shards"]
                      for n in sorted(set(members_after[sh]) - set(members_before.get(sh, [])))[:1]}
            moved_in.update(gained)
            if gained and done.get("rebalanced") and rng.random() < LEAD_P:
                done["leaders_to_moved_in"] = await lead_many(gained)
        else:
            view = newest_map(after_statuses)
            done["epoch_after"] = view["epoch"] if view else None
        if f == REMOVE and after_map and node not in (after_map.get("nodes") or []):
            # Out of the map for good: no replica is left on it (nor a metadata replica), so it
            # comes back fresh, a founder too (with --join it names the cluster up to itself).
            if node in ctx.nodes:
                done["restarted_fresh_pid"] = await ctx.start_fresh(node)
                used.discard(node)
        return done

    async def lead_many(wanted: Mapping[int, str]) -> dict[str, Any]:
        """Hand each shard's leadership to its node (where that one runs), all at once, from one
        look at the statuses: shard -> the transfer's record."""
        wanted = {sh: n for sh, n in wanted.items() if n in ctx.nodes and ctx.nodes[n].is_running()}
        if not wanted:
            return {}
        statuses = await ctx.statuses()
        addresses = [ctx.endpoint(n) for n in sorted(ctx.nodes) if ctx.nodes[n].is_running()]
        async with UkehiClient(addresses, timeout=5.0, connect_timeout=0.5) as client:
            done = await asyncio.gather(*(lead_to(client, sh, n, statuses) for sh, n in sorted(wanted.items())),
                                        return_exceptions=True)
        return {str(sh): ({"node": n, **r} if isinstance(r, dict) else {"node": n, "error": f"{type(r).__name__}: {r}"})
                for (sh, n), r in zip(sorted(wanted.items()), done)}

    async def settle() -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        view: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            statuses = {n: st for n, st in (await ctx.statuses()).items() if st}
            view = newest_map(statuses)
            if view is not None and not view["moves"] and not view["rebalancing"]:
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
        if f in (ADD, REMOVE):
            return await change_nodes(f, random.Random(op["value"]["seed"]))
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
