"""``snapshot-lag``: a follower falls behind a compaction, so the leader must send it a snapshot.

In a short run with the default compaction threshold no node ever compacts, and even with a
low threshold no follower is ever far enough behind: InstallSnapshot and snapshot restore
never run. One op of this schedule:

1. picks a running follower (never the leader; seeded), notes the most it can hold (its own
   last index, and the leader's progress for it: everything the leader already sent), and
   cuts it off by killing it (SIGKILL);
2. waits until the leader (whoever leads at the moment) has compacted its log past that
   point (``snapshot_index`` in its status): by its own threshold while the workload writes
   (runs of this schedule get ``snapshot_threshold=50`` and ``snapshot_chunk_size=48``
   unless the user gave them: ``NODE_OPTIONS``), or, if that has not happened after ``compaction_wait_s`` though the
   leader has applied past it, by asking the leader for a snapshot (the admin ``snapshot``
   call), as an operator would;
3. restarts the follower (it restores its own latest snapshot and replays its WAL) and waits
   (bounded: ``install_wait_s``) until it has caught up to the leader's compaction point: its
   ``snapshot_index`` reaches it (which only installing the leader's snapshot gives it:
   InstallSnapshot, then a restore), or its ``applied_index`` does (by whatever path, e.g. a
   new leader that had not compacted sends it entries).

The outcome is also recorded as a ``catch_up`` record (node, pid, target index, the bound,
whether it was reached and what the follower's status last said), which the ``catch-up``
checker judges (checkers/whitebox/catchup.py): a follower that had not caught up within the
bound while no other fault was active is a liveness bug, whatever stopped it.

Why a kill and not a packet-drop partition: while an iptables DROP partition lasts, the
leader's TCP connection to the follower stays open and the kernel keeps the appends it sent;
after the heal they are retransmitted and the follower catches up from the log. Measured in
the first version of this schedule (a DROP partition): the leader compacted to 150 while the
follower held 101, and after the heal the follower applied 102..156 from retransmitted
appends, with no InstallSnapshot. A killed follower breaks the leader's link at once, so the
leader falls back to probing from what the follower acknowledged, which it no longer has.

Everything is recorded in the op's value: follower, leader, the killed and restarted pids,
the compaction point and how it came (``threshold`` or ``admin``), whether and when the
follower installed it. The stop op heals everything (``heal_all``: restarts any node still
down), like the other targeted schedules.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ukehi.client import UkehiClient

from .context import FaultContext
from .package import NemesisPackage, OpDict, Shading
from .targets import stopped
from .watch import schedule_package, status_field

LAG, STOP_LAG = "snapshot-lag", "stop-snapshot-lag"
SHADING = Shading("snapshot-lag", start=(LAG,), stop=(STOP_LAG,))
#: node options runs of this schedule get unless the user set them (harness/run.py): a
#: compaction every 50 entries, which a 20 s run of the register workload passes many times,
#: and InstallSnapshot chunks of 48 bytes, so a register snapshot (a few hundred bytes) takes
#: several chunks and the multi-chunk path (offsets, acks, resume after a lost chunk) runs
# Small WAL segments too, so each compaction removes whole segments (wal-retention judges that;
# with the node's 64 MB default a short run's WAL never rotates).
NODE_OPTIONS = {"snapshot_threshold": 50, "snapshot_chunk_size": 48, "wal_segment_size": 4096}


def _elapsed_ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def snapshot_lag_package(ctx: FaultContext, compaction_wait_s: float = 5.0, lag_limit_s: float = 10.0,
                         install_wait_s: float = 15.0, poll_s: float = 0.05) -> NemesisPackage:
    """Cut a follower off until the leader compacts past it, then heal (module doc)."""
    names = sorted(ctx.nodes)
    paused: set[str] = set()

    async def live_statuses() -> dict[str, Any]:
        live = [n for n in names if not stopped(ctx, n)]
        return dict(await ctx.statuses(live)) if live else {}

    def current_leader(statuses: dict[str, Any]) -> str | None:
        found = sorted((int(s.get("term", 0)), n) for n, s in statuses.items() if s and s.get("role") == "leader")
        return found[-1][1] if found else None

    async def ask_snapshot(leader: str) -> dict[str, Any]:
        address = ctx.endpoint(leader)
        async with UkehiClient([address], timeout=5.0) as client:
            result = await client.snapshot(address, timeout=5.0)
        return {"ok": bool(result.ok), "index": result.value if result.ok else None,
                "error": None if result.ok else str(getattr(result, "error", "") or result)}

    def holds_at_most(statuses: Any, follower: str, leader: str | None) -> int:
        """The most the follower can hold: its own last index and whatever the leader sent it."""
        own = status_field(statuses, follower, "last_index", -1)
        st = (statuses.get(leader) if leader else None) or {}
        pr = (st.get("progress") or {}).get(follower) or {}
        return max(own, int(pr.get("match", -1)), int(pr.get("next", 0)) - 1)

    async def lag(op: OpDict) -> dict[str, Any]:
        rng = random.Random(op["value"].get("seed", 0))
        t0 = time.monotonic()
        statuses = await live_statuses()
        leader = current_leader(statuses)
        followers = sorted(n for n, s in statuses.items()
                           if s and n != leader and s.get("role") == "follower"
                           and n in (s.get("voters") or s.get("members") or names))
        if leader is None or not followers:
            return {"skipped": "no leader with a running follower to cut off", "leader": leader}
        follower = rng.choice(followers)
        behind = holds_at_most(await ctx.statuses([leader, follower]), follower, leader)
        out: dict[str, Any] = {"follower": follower, "leader": leader, "follower_holds_at_most": behind,
                               "killed": {follower: ctx.nodes[follower].pid}}
        await asyncio.to_thread(ctx.nodes[follower].kill)
        out["cut_off_at_ms"] = _elapsed_ms(t0)
        forced: dict[str, Any] | None = None
        compacted_by = None
        while time.monotonic() - t0 < lag_limit_s:
            statuses = await ctx.statuses([n for n in names if n != follower and not stopped(ctx, n)])
            leader = current_leader(statuses) or leader
            st = statuses.get(leader) or {}
            snap = int(st.get("snapshot_index", 0))
            if snap > behind >= 0:
                compacted_by = "admin" if forced else "threshold"
                out.update(leader=leader, compacted_to=snap, compacted_by=compacted_by,
                           compacted_at_ms=_elapsed_ms(t0))
                break
            if forced is None and time.monotonic() - t0 >= compaction_wait_s and \
                    int(st.get("applied_index", 0)) > behind >= 0:
                forced = await ask_snapshot(leader)  # the threshold was not reached in time
                out["admin_snapshot"] = {"leader": leader, **forced}
            await asyncio.sleep(poll_s)
        out["restarted"] = {follower: await ctx.start_node(follower)}
        out["restarted_at_ms"] = _elapsed_ms(t0)
        if compacted_by is None:
            out["skipped"] = (f"the leader did not compact past what {follower} holds ({behind}) in "
                              f"{lag_limit_s:g} s (too few writes committed while it was down)")
            return out
        target = out["compacted_to"]
        back = time.monotonic()
        snap = applied = -1
        caught_up = False
        while time.monotonic() - back < install_wait_s:
            st = await ctx.statuses([follower])
            snap = status_field(st, follower, "snapshot_index", -1)
            applied = status_field(st, follower, "applied_index", -1)
            if max(snap, applied) >= target:
                caught_up = True
                break
            await asyncio.sleep(poll_s)
        waited = _elapsed_ms(back)
        out.update(installed=snap >= target, follower_snapshot_index=snap, follower_applied_index=applied)
        if snap >= target:
            out["installed_ms"] = waited
        # The general record the catch-up checker judges (checkers/whitebox/catchup.py): a node
        # brought back by a fault's heal must reach what the cluster had committed, in bounded time.
        out["catch_up"] = {"node": follower, "pid": out["restarted"][follower], "target": target,
                           "why": f"{out['leader']} compacted its log to {target} while {follower} "
                                  f"held at most {behind}",
                           "healed_at_ms": out["restarted_at_ms"], "wait_s": install_wait_s,
                           "reached": caught_up, "waited_ms": waited,
                           "applied_index": applied, "snapshot_index": snap}
        return out

    package = schedule_package(ctx, "snapshot-lag", LAG, STOP_LAG, SHADING, lag, paused)
    base = package.generator

    def generator(rng: random.Random) -> OpDict | None:
        op = base(rng)
        if op is not None and op["f"] == LAG:
            op = {**op, "value": {**op.get("value", {}), "seed": rng.getrandbits(32)}}
        return op

    package.generator = generator
    return package


__all__ = ["LAG", "NODE_OPTIONS", "SHADING", "STOP_LAG", "snapshot_lag_package"]
