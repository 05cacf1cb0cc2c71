"""Membership changes: add a node, remove a node (the leader too), transfer leadership.

A run with this family has spare nodes: the founding voters are the first
:func:`founding_voters` of the test's nodes, the others start with
``ukehi node --join`` and wait to be added. Every op keeps a valid cluster
shape: it never leaves fewer than :data:`MIN_VOTERS` voters, and a removed
node comes back at once as a fresh spare (stopped, data dir wiped, started
with ``--join``), so it can be added again later as a new node.

Each op asks the cluster for its configuration before and after (``status``
of the leader) and records both, with the admin call's honest outcome
(ok / fail / unknown), so the history alone says how membership moved.

After every accepted add or remove, every running member of the new configuration is
asked to take a snapshot (the admin ``snapshot`` call, as an operator would), so each
change is compacted into the snapshots before the next one: a node that keeps a stale
configuration across a compaction (the log's configuration history and the snapshot's
configuration out of step) then carries it into the next snapshot, which a restarted or
newly added node loads. Without this, a short run with the default threshold (10,000
entries) never compacts at all. The answers are in the op's ``compacted`` field.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Mapping, Sequence

from ukehi.client import UkehiClient

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading

MIN_VOTERS = 3
ADD, REMOVE, TRANSFER, SETTLE = "add-node", "remove-node", "transfer-leader", "settle-membership"
FS = (ADD, REMOVE, TRANSFER, SETTLE)
SHADING = Shading("membership", instant=(ADD, REMOVE, TRANSFER))
#: seconds an admin call may take; adding waits for the new node to catch up
ADMIN_TIMEOUT_S = 15.0
#: seconds to wait for a leader and a configuration out of joint consensus
SETTLE_TIMEOUT_S = 10.0
#: seconds one node may take to answer the admin snapshot call after a change
SNAPSHOT_TIMEOUT_S = 5.0
#: seconds to wait for every member to apply what the leader had committed before their
#: configurations are compared
CATCH_UP_TIMEOUT_S = 10.0


def founding_voters(names: Sequence[str]) -> list[str]:
    """The founders of a membership run: all of up to 3 nodes, else all but 2 (at least 3).

    Five nodes give 3 voters and 2 spares; three nodes leave no spare, so only
    leadership transfers are possible (removing one would leave 2 voters).
    """
    names = list(names)
    if len(names) <= MIN_VOTERS:
        return names
    return names[:max(MIN_VOTERS, len(names) - 2)]


def _config(status: Mapping[str, Any]) -> dict[str, Any]:
    return {"voters": sorted(status.get("voters") or status.get("members") or []),
            "outgoing": sorted(status.get("outgoing") or []),
            "learners": sorted(status.get("learners") or []),
            "joint": bool(status.get("joint"))}


async def cluster_view(ctx: FaultContext) -> dict[str, Any]:
    """The leader's name, term and configuration as the leader reports them (leader None if none)."""
    statuses = await ctx.statuses()
    leaders = [(s.get("term", 0), n) for n, s in statuses.items() if s and s.get("role") == "leader"]
    if not leaders:
        return {"leader": None}
    term, leader = max(leaders)  # after a partition two may claim it; the newest term is the real one
    status = statuses[leader]
    assert status is not None
    return {"leader": leader, "term": term, **_config(status)}


async def settled_view(ctx: FaultContext, timeout: float = SETTLE_TIMEOUT_S) -> dict[str, Any]:
    """The cluster view once a voter leads outside joint consensus, or the last one seen.

    A leader that has just removed itself still says "leader" until it steps down; its
    view is not the settled one.
    """
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {"leader": None}
    while time.monotonic() < deadline:
        view = await cluster_view(ctx)
        if view["leader"] is not None and not view["joint"] and view["leader"] in view["voters"]:
            return view
        await asyncio.sleep(0.1)
    return view


def _outcome(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"outcome": result.outcome}
    if result.error is not None:
        out["error"] = result.error
    if result.message:
        out["message"] = result.message
    return out


def package(ctx: FaultContext, kinds: Sequence[str] = (ADD, REMOVE, TRANSFER),
            min_voters: int = MIN_VOTERS, compact: bool = True) -> NemesisPackage:
    """Membership ops, chosen at random from KINDS; infeasible ones are recorded as skipped.
    ``compact``: snapshot every running member after each accepted change (module doc)."""
    unknown = [k for k in kinds if k not in (ADD, REMOVE, TRANSFER)]
    if unknown:
        raise ValueError(f"unknown membership op {', '.join(unknown)}; choose {ADD}, {REMOVE} or {TRANSFER}")
    if min_voters < 1:
        raise ValueError(f"min_voters must be at least 1, got {min_voters}")

    def generator(rng: random.Random) -> OpDict:
        kind = rng.choice(list(kinds))
        value: dict[str, Any] = {"seed": rng.getrandbits(32)}
        if kind == REMOVE:
            # The leader often enough that removing it is exercised, not just followers.
            value["target"] = rng.choice(("leader", "follower"))
        return {"f": kind, "value": value}

    async def admin(call: str, *args: Any) -> Any:
        addresses = [ctx.endpoint(n) for n in sorted(ctx.nodes)]
        async with UkehiClient(addresses, timeout=ADMIN_TIMEOUT_S) as client:
            return await getattr(client, call)(*args)

    async def compact_members(after: dict[str, Any]) -> dict[str, Any]:
        """Ask every running member of AFTER's configuration for a snapshot now: node ->
        snapshot index, or the error (a node down or busy is recorded, not retried)."""
        members = sorted(set(after.get("voters") or []) | set(after.get("learners") or []))
        out: dict[str, Any] = {}
        for node in members:
            if node not in ctx.nodes or not ctx.nodes[node].is_running():
                continue
            address = ctx.endpoint(node)
            try:
                async with UkehiClient([address], timeout=SNAPSHOT_TIMEOUT_S) as client:
                    result = await client.snapshot(address, timeout=SNAPSHOT_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as e:
                out[node] = {"error": f"{type(e).__name__}: {e}"}
                continue
            out[node] = {"index": result.value} if result.ok else {"error": str(result.error or result.outcome)}
        return out

    async def restart_and_compare(after: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """Kill and restart one follower of AFTER (it reloads its snapshot), then each
        member's own configuration once all have applied the leader's commit index."""
        members = sorted(set(after.get("voters") or []) | set(after.get("learners") or []))
        followers = [n for n in members if n != after["leader"] and n in ctx.nodes and ctx.nodes[n].is_running()]
        out: dict[str, Any] = {}
        if followers:
            node = rng.choice(followers)
            out["restarted"] = {"node": node, "killed_pid": ctx.nodes[node].pid}
            await asyncio.to_thread(ctx.nodes[node].kill)
            out["restarted"]["pid"] = await ctx.start_node(node)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        statuses: dict[str, Any] = {}
        target = None
        while time.monotonic() < deadline:
            statuses = dict(await ctx.statuses([n for n in members if n in ctx.nodes]))
            lead = statuses.get(after["leader"]) or {}
            if lead.get("role") != "leader":
                out["not_compared"] = f"{after['leader']} no longer leads"
                return out
            target = int(lead.get("commit_index") or 0) if target is None else target
            if all(int((statuses.get(n) or {}).get("applied_index") or -1) >= target for n in members):
                break
            await asyncio.sleep(0.1)
        out["views"] = {n: {"applied_index": (st or {}).get("applied_index"), **_config(st)}
                        for n, st in sorted(statuses.items()) if st}
        out["leader"], out["caught_up_to"] = after["leader"], target
        return out

    async def add(before: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        members = set(before["voters"]) | set(before["outgoing"])
        # A learner left over from an add that could not promote is a candidate too:
        # add_node finishes its promotion.
        spares = sorted(n for n in ctx.nodes if n not in members and ctx.nodes[n].is_running())
        if not spares:
            return {"skipped": "no spare node is running; give the test more nodes than voters"}
        node = rng.choice(spares)
        done: dict[str, Any] = {"node": node}
        status = (await ctx.statuses()).get(node) or {}
        if node not in before["learners"] and (status.get("voters") or status.get("last_index")):
            # It still holds the log of an earlier membership (its removal did not settle in
            # time to restart it fresh): a node is only ever added back as a new one.
            done["restarted_fresh_pid"] = await ctx.start_fresh(node)
        result = await admin("add_node", node, ctx.endpoint(node))
        return {**done, **_outcome(result)}

    async def remove(before: dict[str, Any], rng: random.Random, target: str) -> dict[str, Any]:
        voters = before["voters"]
        if len(voters) <= min_voters:
            return {"skipped": f"{len(voters)} voters; removing one would leave fewer than {min_voters}"}
        followers = [v for v in voters if v != before["leader"]]
        node = before["leader"] if target == "leader" or not followers else rng.choice(followers)
        result = await admin("remove_node", node)
        return {"node": node, **_outcome(result)}

    async def transfer(before: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        followers = [v for v in before["voters"] if v != before["leader"]]
        if not followers:
            return {"skipped": "no other voter to hand leadership to"}
        node = rng.choice(followers)
        result = await admin("transfer_leader", node)
        return {"node": node, **_outcome(result)}

    async def invoke(op: OpDict) -> Any:
        f = op["f"]
        if f not in FS:
            raise ValueError(f"membership nemesis cannot perform {f!r}")
        before = await settled_view(ctx)
        if f == SETTLE:
            return {"members": before}
        if before["leader"] is None:
            return {"skipped": "no leader to ask", "before": before}
        rng = random.Random(op["value"]["seed"])
        if f == ADD:
            done = await add(before, rng)
        elif f == REMOVE:
            done = await remove(before, rng, op["value"].get("target", "follower"))
        else:
            done = await transfer(before, rng)
        if "skipped" in done:
            return {**done, "before": before}
        after = await settled_view(ctx)
        if f == REMOVE and after["leader"] is not None and done["node"] not in after["voters"] \
                and done["node"] not in after["outgoing"] and done["node"] not in after["learners"]:
            # Out of the configuration for good: it comes back as a fresh spare (a removed
            # node must never rejoin with its old log and old idea of the members).
            done["restarted_fresh_pid"] = await ctx.start_fresh(done["node"])
        if compact and f in (ADD, REMOVE) and done.get("outcome") == "ok" and after["leader"] is not None:
            done["compacted"] = await compact_members(after)
            done["agreement"] = await restart_and_compare(after, rng)
        return {**done, "before": before, "after": after}

    return NemesisPackage(
        name="membership",
        generator=generator,
        # Membership changes are not undone; the final op waits until the configuration
        # has settled (a leader, no joint consensus) and records it.
        final=lambda: [{"f": SETTLE}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset(FS),
    )


#: leadership transfers asked for after the final phase (until one is done)
FINAL_TRANSFERS = 3
#: seconds one final transfer may take: the leader catches the target up, then hands over
FINAL_TRANSFER_TIMEOUT_S = 8.0


def final_transfer_package(ctx: FaultContext) -> NemesisPackage:
    """The transfers a real run asks for once every fault has healed and the final phase is
    over, as the simulator does at every seed's end (``harness/sim/runner.py``
    ``final_transfers``): each op asks the leader to hand leadership to another voter that
    answers status and is not recovering (attempt k takes the k-th such voter, round robin),
    and records ``node``, ``via``, ``final`` and the outcome. The availability verdict's
    transfer-refused rule judges every final transfer: a healthy cluster that never hands
    leadership over fails the run, even when its nemesis drew no transfer at a quiet moment.
    An op with no leader, a joint configuration or no other voter is recorded as skipped."""

    async def invoke(op: OpDict) -> Any:
        attempt = int(op["value"].get("attempt", 0))
        view = await settled_view(ctx)
        leader = view["leader"]
        if leader is None or view["joint"]:
            return {"skipped": "no leader outside joint consensus", "final": True, "before": view}
        statuses = await ctx.statuses([n for n in view["voters"] if n in ctx.nodes])
        targets = [n for n in view["voters"] if n != leader and statuses.get(n)
                   and not (statuses[n] or {}).get("recovering")]
        if not targets:
            return {"skipped": "no other running voter to hand leadership to", "final": True, "before": view}
        target = targets[attempt % len(targets)]
        async with UkehiClient([ctx.endpoint(leader)], timeout=FINAL_TRANSFER_TIMEOUT_S) as client:
            result = await client.transfer_leader(target)
        return {"node": target, "via": leader, "final": True, **_outcome(result)}

    return NemesisPackage(name="final-transfer", generator=lambda rng: None, final=lambda: [],
                          invoke=invoke, shading=Shading("membership", instant=(TRANSFER,)),
                          fs=frozenset({TRANSFER}))
