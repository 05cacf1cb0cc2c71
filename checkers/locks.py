"""Lock exclusion: two owners never hold one lock at once, and a free lock is not refused.

Ops (the fencing workload's): ``acquire`` of lock ``key``, invoked with value
``{"owner": ..., "ttl_ms": ...}`` (an ``ok`` returns the fencing token; a ``fail`` with
error ``lock_held`` is a refusal), and optionally ``release`` invoked with ``{"owner": ...}``.
Pure and history-only: it needs no node, no clock but the history's.

A lease is granted when the acquire takes effect, somewhere between its invocation and its
completion, and runs for ``ttl_ms`` of the leader's clock from a stamp taken after the
request arrived. So, with clocks that agree (``clock_slack_ms`` allows for disagreement),
a lease acquired by op A certainly lasts until ``end(A) = invoke(A) + ttl``, or until A's
owner invoked a release of it, whichever is earlier. Two ok acquires A and B of one lock by
different owners can both be right only in some order: A first needs B to take effect
after A's lease ended, i.e. ``complete(B) >= end(A)``; B first needs
``complete(A) >= end(B)``. When neither holds, their leases overlapped: **exclusion** is
violated (an acquire of a held lock was granted).

The converse, **refusal of a free lock**: an acquire refused with ``lock_held`` needs some
other owner's acquire that could hold the lock then, i.e. one that did not fail, was invoked
before the refusal completed, and either never completed ok (unknown: it may take effect
late) or completed less than ``ttl`` (+ slack) before the refused op was invoked.

Result: ``{"valid", "checker": "lock-exclusion", "overlaps", "overlap_count",
"refused_free", "refused_free_count", "acquires", "explanation"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from checkers.history import Op

MAX_LISTED = 20
LOCK_HELD = "lock_held"
NS_PER_MS = 1_000_000
#: leaders stamp commands in whole milliseconds, rounded down: a stamp can read up to 1 ms
#: before the moment it was taken
DEFAULT_SLACK_MS = 2.0


@dataclass
class Acquire:
    lock: Any
    owner: Any
    ttl_ms: float
    invoke_index: int
    invoke_ns: int
    type: str = "invoke"  # completion type once known ("invoke": never completed)
    complete_index: int | None = None
    complete_ns: int | None = None
    token: Any = None
    error: Any = None


def _owner_ttl(op: Op, default_ttl_ms: float | None) -> tuple[Any, float | None]:
    value = op.value if isinstance(op.value, dict) else {}
    owner = value.get("owner", f"process {op.process}")
    ttl = value.get("ttl_ms", default_ttl_ms)
    return owner, (float(ttl) if ttl is not None else None)


def _collect(history: Sequence[Op], default_ttl_ms: float | None) -> tuple[list[Acquire], dict[tuple, list[int]]]:
    """Acquires with their completions, and release invocation times per (lock, owner)."""
    acquires: list[Acquire] = []
    releases: dict[tuple, list[int]] = {}
    open_: dict[Any, Acquire] = {}
    for op in history:
        if not op.is_client:
            continue
        if op.f == "release" and op.type == "invoke":
            owner, _ = _owner_ttl(op, default_ttl_ms)
            releases.setdefault((op.key, owner), []).append(op.time)
            continue
        if op.f != "acquire":
            continue
        if op.type == "invoke":
            owner, ttl = _owner_ttl(op, default_ttl_ms)
            if ttl is None:
                raise ValueError(f"acquire at op index {op.index} records no ttl_ms; "
                                 "pass ttl_ms to the lock checker")
            a = Acquire(op.key, owner, ttl, op.index, op.time)
            open_[op.process] = a
            acquires.append(a)
            continue
        a = open_.pop(op.process, None)
        if a is None:
            continue
        a.type, a.complete_index, a.complete_ns = op.type, op.index, op.time
        a.token = op.value if op.type == "ok" else None
        a.error = op.error
    return acquires, releases


def _lease_end(a: Acquire, releases: dict[tuple, list[int]], slack_ns: float) -> float:
    """The earliest the lease of ok acquire ``a`` can have ended (ns of history time)."""
    end = a.invoke_ns + a.ttl_ms * NS_PER_MS - slack_ns
    for t in releases.get((a.lock, a.owner), ()):
        if t >= a.invoke_ns:
            end = min(end, t)
    return end


def check_lock_exclusion(history: Sequence[Op], *, ttl_ms: float | None = None,
                         clock_slack_ms: float = DEFAULT_SLACK_MS) -> dict[str, Any]:
    """Exclusion and refusal of free locks (see the module doc). ``ttl_ms``: for acquires
    that do not record their own; ``clock_slack_ms``: how far the nodes' clocks may disagree
    with the history's (the default covers stamps rounded down to whole milliseconds)."""
    slack_ns = clock_slack_ms * NS_PER_MS
    acquires, releases = _collect(history, ttl_ms)
    by_lock: dict[Any, list[Acquire]] = {}
    for a in acquires:
        by_lock.setdefault(a.lock, []).append(a)

    overlaps: list[dict[str, Any]] = []
    refused_free: list[dict[str, Any]] = []
    for lock, ops in by_lock.items():
        granted = sorted((a for a in ops if a.type == "ok"), key=lambda a: a.complete_ns)
        ends = {id(a): _lease_end(a, releases, slack_ns) for a in granted}
        for i, a in enumerate(granted):
            for b in granted[i + 1:]:
                if b.owner == a.owner:
                    continue
                if b.complete_ns < ends[id(a)] and a.complete_ns < ends[id(b)]:
                    overlaps.append({
                        "lock": lock, "owners": [a.owner, b.owner], "tokens": [a.token, b.token],
                        "indexes": [a.complete_index, b.complete_index],
                        "index": b.complete_index,
                        "granted_ms": [round(a.complete_ns / NS_PER_MS, 1), round(b.complete_ns / NS_PER_MS, 1)],
                        "first_lease_until_ms": round(ends[id(a)] / NS_PER_MS, 1),
                    })
        for r in ops:
            if r.type != "fail" or r.error != LOCK_HELD:
                continue
            holders = [h for h in ops if h.owner != r.owner and h.type != "fail" and h.invoke_ns < r.complete_ns
                       and (h.type != "ok" or h.complete_ns + h.ttl_ms * NS_PER_MS + slack_ns > r.invoke_ns)]
            if not holders:
                refused_free.append({"lock": lock, "owner": r.owner, "index": r.complete_index,
                                     "refused_ms": round(r.complete_ns / NS_PER_MS, 1)})

    problems = []
    if overlaps:
        o = overlaps[0]
        problems.append(f"{len(overlaps)} overlapping lease(s): lock {o['lock']!r} granted to {o['owners'][0]!r} "
                        f"(op index {o['indexes'][0]}, lease until at least {o['first_lease_until_ms']} ms) and to "
                        f"{o['owners'][1]!r} at {o['granted_ms'][1]} ms (op index {o['indexes'][1]})")
    if refused_free:
        r = refused_free[0]
        problems.append(f"{len(refused_free)} acquire(s) refused as held while no other owner could hold the "
                        f"lock, e.g. {r['owner']!r} on {r['lock']!r} (op index {r['index']})")
    return {
        "valid": not problems,
        "checker": "lock-exclusion",
        "acquires": sum(1 for a in acquires if a.type == "ok"),
        "overlaps": overlaps[:MAX_LISTED],
        "overlap_count": len(overlaps),
        "refused_free": refused_free[:MAX_LISTED],
        "refused_free_count": len(refused_free),
        "explanation": "\n".join(problems) if problems else
        f"{sum(1 for a in acquires if a.type == 'ok')} granted acquire(s): no two owners' leases overlap, "
        "no free lock refused",
    }
