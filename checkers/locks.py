"""Lock exclusion: two owners never hold one lock at once, a free lock is not refused, and a
release is answered as the lock's state says.

Ops (the fencing workload's): ``acquire`` of lock ``key``, invoked with value
``{"owner": ..., "ttl_ms": ...}`` (an ``ok`` returns the fencing token; a ``fail`` with
error ``lock_held`` is a refusal), and ``release`` invoked with ``{"owner": ...}`` or
``{"owner": ..., "token": ...}`` (ok: released; a ``fail`` with error ``not_lock_holder``: the
node says the releaser does not hold the lock, with that token when one is given).
Pure and history-only: it needs no node, no clock but the history's.

A lease is granted when the acquire takes effect, somewhere between its invocation and its
completion, and runs for ``ttl_ms`` of the leader's clock from a stamp taken after the
request arrived. So, with clocks that agree (``clock_slack_ms`` allows for disagreement),
a lease acquired by op A certainly lasts until ``end(A) = invoke(A) + ttl``, or until A's
owner invoked a release of it that did not fail, whichever is earlier. Two ok acquires A and
B of one lock by different owners can both be right only in some order: A first needs B to take effect
after A's lease ended, i.e. ``complete(B) >= end(A)``; B first needs
``complete(A) >= end(B)``. When neither holds, their leases overlapped: **exclusion** is
violated (an acquire of a held lock was granted).

The converse, **refusal of a free lock**: an acquire refused with ``lock_held`` needs some
other owner's acquire that could hold the lock then, i.e. one that did not fail, was invoked
before the refusal completed, and either never completed ok (unknown: it may take effect
late) or completed less than ``ttl`` (+ slack) before the refused op was invoked, and was
not surely released since: an ok release of the lock (by anyone: an ok release deletes the
lock's entry) invoked after that acquire completed and completed before the refusal was
invoked frees it.

Releases, judged as conservatively as acquires (every rule below holds in every order the
ops' intervals allow; an op that did not fail may take effect at any moment of its interval,
an unknown one at any moment after its invocation):

- **holder refused**: a release by owner O, refused ``not_lock_holder``, invoked after O's
  latest ok acquire A of the lock completed, carrying A's token or none, completed while A's
  lease surely held (before ``invoke(A) + ttl - slack``), and with no other release by O
  (and, for a release with a token, no other acquire by O: a renewal changes the token)
  that did not fail able to take effect between A and the release. Then O held the lock
  with that token throughout (inside A's lease no other owner can take or free it without
  itself violating exclusion): refusing is a violation.
- **non-holder released**: an ok release by owner O (with token T) is impossible when no
  acquire by O (ok with token T, or unknown) that did not fail was invoked before the release
  completed; or when all of them completed before some op E that completed before the
  release was invoked, E being an ok release of the lock, an ok acquire of it by another
  owner, or an ok acquire of it by O with another token than T: E took the lock from O (or
  changed its token) after O's last possible acquire, so O was not the holder.

Result: ``{"valid", "checker": "lock-exclusion", "overlaps", "overlap_count",
"refused_free", "refused_free_count", "holder_refused", "holder_refused_count",
"nonholder_released", "nonholder_released_count", "acquires", "releases", "explanation"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from checkers.history import Op

MAX_LISTED = 20
LOCK_HELD = "lock_held"
NOT_LOCK_HOLDER = "not_lock_holder"
NS_PER_MS = 1_000_000
#: leaders stamp commands in whole milliseconds, rounded down: a stamp can read up to 1 ms
#: before the moment it was taken
DEFAULT_SLACK_MS = 2.0


def clock_slack_from_history(history: Sequence[Op], ttl_ms: float | None) -> float:
    """The clock slack a run's lock rules must allow, read from its clock faults' records
    (nemeses/clock.py: every completed op records the ``offsets`` it left, node -> seconds,
    and the ``rate`` it set): DEFAULT_SLACK_MS plus twice the largest offset (two leaders
    may be off in opposite directions), plus the whole TTL once any clock ran at another
    rate (a lease measured on a clock at rate r lasts ttl / r: without a drift bound any
    lease may end early, so no lease is judged on its length). The simulator passes the
    skew it measured instead."""
    largest_s, rate_changed = 0.0, False
    for op in history:
        if op.is_client or op.type == "invoke" or not isinstance(op.value, dict):
            continue
        offsets = op.value.get("offsets")
        if isinstance(offsets, dict):
            largest_s = max([largest_s, *(abs(float(v)) for v in offsets.values() if isinstance(v, (int, float)))])
        rate = op.value.get("rate")
        if isinstance(rate, (int, float)) and rate != 1:
            rate_changed = True
    return DEFAULT_SLACK_MS + 2000.0 * largest_s + (float(ttl_ms or 0.0) if rate_changed else 0.0)


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


@dataclass
class Release:
    lock: Any
    owner: Any
    token: Any  # None: released by owner alone
    invoke_index: int
    invoke_ns: int
    type: str = "invoke"
    complete_index: int | None = None
    complete_ns: int | None = None
    error: Any = None


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / NS_PER_MS, 1)


def _owner_ttl(op: Op, default_ttl_ms: float | None) -> tuple[Any, float | None]:
    value = op.value if isinstance(op.value, dict) else {}
    owner = value.get("owner", f"process {op.process}")
    ttl = value.get("ttl_ms", default_ttl_ms)
    return owner, (float(ttl) if ttl is not None else None)


def _collect(history: Sequence[Op], default_ttl_ms: float | None) -> tuple[list[Acquire], list[Release]]:
    """Acquires and releases with their completions (None fields: never completed)."""
    acquires: list[Acquire] = []
    releases: list[Release] = []
    open_: dict[Any, Acquire | Release] = {}
    for op in history:
        if not op.is_client or op.f not in ("acquire", "release"):
            continue
        if op.type == "invoke":
            owner, ttl = _owner_ttl(op, default_ttl_ms)
            if op.f == "release":
                token = op.value.get("token") if isinstance(op.value, dict) else None
                open_[op.process] = r = Release(op.key, owner, token, op.index, op.time)
                releases.append(r)
                continue
            if ttl is None:
                raise ValueError(f"acquire at op index {op.index} records no ttl_ms; "
                                 "pass ttl_ms to the lock checker")
            a = Acquire(op.key, owner, ttl, op.index, op.time)
            open_[op.process] = a
            acquires.append(a)
            continue
        x = open_.pop(op.process, None)
        if x is None:
            continue
        x.type, x.complete_index, x.complete_ns, x.error = op.type, op.index, op.time, op.error
        if isinstance(x, Acquire):
            x.token = op.value if op.type == "ok" else None
    return acquires, releases


def _lease_end(a: Acquire, releases: Sequence[Release], slack_ns: float) -> float:
    """The earliest the lease of ok acquire ``a`` can have ended (ns of history time): its
    TTL, or a release by its owner invoked since (one that failed changed nothing)."""
    end = a.invoke_ns + a.ttl_ms * NS_PER_MS - slack_ns
    for r in releases:
        if r.lock == a.lock and r.owner == a.owner and r.type != "fail" and r.invoke_ns >= a.invoke_ns:
            end = min(end, r.invoke_ns)
    return end


def _freed_between(freed: Sequence[tuple[int, int]], after_ns: float, before_ns: float) -> bool:
    """Whether one of the ok releases ``freed`` ((invoked, completed) pairs) surely took
    effect after ``after_ns`` and before ``before_ns``."""
    return any(after_ns < invoked and completed < before_ns for invoked, completed in freed)


def _may_act_after(op: Acquire | Release, t_ns: float, before_ns: float) -> bool:
    """Whether ``op`` (not failed) may take effect after ``t_ns`` and before ``before_ns``."""
    return (op.type != "fail" and op.invoke_ns < before_ns
            and (op.complete_ns is None or op.type != "ok" or op.complete_ns > t_ns))


def _holder_refused(r: Release, acquires: Sequence[Acquire], releases: Sequence[Release],
                    slack_ns: float) -> dict[str, Any] | None:
    """Release ``r`` (refused not_lock_holder) when its owner surely held the lock with the
    token given (module doc), as a violation record; else None."""
    assert r.complete_ns is not None
    mine = [a for a in acquires if a.lock == r.lock and a.owner == r.owner and a.type == "ok"
            and a.complete_ns is not None and a.complete_ns < r.invoke_ns]
    if not mine:
        return None
    a = max(mine, key=lambda x: x.complete_ns or 0)
    if r.token is not None and r.token != a.token:
        return None
    lease_until = a.invoke_ns + a.ttl_ms * NS_PER_MS - slack_ns
    if r.complete_ns >= lease_until:
        return None
    # What the owner itself did between A's effect and the release's may make the refusal
    # right: another release of its own (the lock is free then), or, for a release with a
    # token, a renewal (a new token). Not judged then. Other owners' ops are not waited
    # for: inside A's lease a correct node refuses their acquires and releases, and one it
    # granted would itself be an exclusion violation (the overlap rule names it when it is ok).
    if r.token is not None and any(x is not a and x.lock == r.lock and x.owner == r.owner
                                   and _may_act_after(x, a.invoke_ns, r.complete_ns) for x in acquires):
        return None
    if any(y is not r and y.lock == r.lock and y.owner == r.owner
           and _may_act_after(y, a.invoke_ns, r.complete_ns) for y in releases):
        return None
    return {"lock": r.lock, "owner": r.owner, "token": r.token, "held_token": a.token,
            "index": r.complete_index, "acquire_index": a.complete_index,
            "acquired_ms": _ms(a.complete_ns), "lease_until_ms": _ms(lease_until),
            "release_invoked_ms": _ms(r.invoke_ns), "refused_ms": _ms(r.complete_ns)}


def _nonholder_released(r: Release, acquires: Sequence[Acquire],
                        releases: Sequence[Release]) -> dict[str, Any] | None:
    """Release ``r`` (ok) when its owner surely did not hold the lock (with its token) at any
    moment it could take effect (module doc), as a violation record; else None."""
    assert r.complete_ns is not None
    base = {"lock": r.lock, "owner": r.owner, "token": r.token, "index": r.complete_index,
            "release_invoked_ms": _ms(r.invoke_ns), "released_ms": _ms(r.complete_ns)}
    cands = [a for a in acquires if a.lock == r.lock and a.owner == r.owner and a.type != "fail"
             and a.invoke_ns < r.complete_ns
             and (r.token is None or a.type != "ok" or a.token == r.token)]
    if not cands:
        return {**base, "why": "no acquire by that owner" + (" returned that token" if r.token is not None else "")
                + " before the release completed"}
    if any(a.type != "ok" or a.complete_ns is None for a in cands):
        return None  # an unknown acquire may take effect at any time
    last = max(a.complete_ns for a in cands if a.complete_ns is not None)
    takers: list[tuple[int, int, str]] = []
    for y in releases:
        if y is not r and y.lock == r.lock and y.type == "ok" and y.complete_ns is not None:
            takers.append((y.invoke_ns, y.complete_ns, f"released by {y.owner!r} (op index {y.complete_index})"))
    for x in acquires:
        if x.lock != r.lock or x.type != "ok" or x.complete_ns is None:
            continue
        if x.owner != r.owner:
            takers.append((x.invoke_ns, x.complete_ns, f"granted to {x.owner!r} with token {x.token} "
                                                       f"(op index {x.complete_index})"))
        elif r.token is not None and x.token != r.token:
            takers.append((x.invoke_ns, x.complete_ns, f"renewed by {x.owner!r} with token {x.token} "
                                                       f"(op index {x.complete_index})"))
    for invoked, completed, what in sorted(takers):
        if invoked > last and completed < r.invoke_ns:
            return {**base, "last_acquired_ms": _ms(last),
                    "why": f"its last acquire completed at {_ms(last)} ms; then, between {_ms(invoked)} and "
                           f"{_ms(completed)} ms, the lock was {what}"}
    return None


def _release_by(v: dict[str, Any]) -> str:
    """"lock L, owner O, token T" (or "no token") of a judged release, for explanations."""
    return f"lock {v['lock']!r}, owner {v['owner']!r}, " + (
        f"token {v['token']}" if v['token'] is not None else "no token")


def check_lock_exclusion(history: Sequence[Op], *, ttl_ms: float | None = None,
                         clock_slack_ms: float = DEFAULT_SLACK_MS) -> dict[str, Any]:
    """Exclusion, refusal of free locks and answers to releases (see the module doc). ``ttl_ms``: for acquires
    that do not record their own; ``clock_slack_ms``: how far the nodes' clocks may disagree
    with the history's (the default covers stamps rounded down to whole milliseconds)."""
    slack_ns = clock_slack_ms * NS_PER_MS
    acquires, releases = _collect(history, ttl_ms)
    by_lock: dict[Any, list[Acquire]] = {}
    for a in acquires:
        by_lock.setdefault(a.lock, []).append(a)
    releases_of: dict[Any, list[Release]] = {}
    for r in releases:
        releases_of.setdefault(r.lock, []).append(r)

    overlaps: list[dict[str, Any]] = []
    refused_free: list[dict[str, Any]] = []
    for lock, ops in by_lock.items():
        granted = sorted((a for a in ops if a.type == "ok"), key=lambda a: a.complete_ns)
        ends = {id(a): _lease_end(a, releases_of.get(lock, ()), slack_ns) for a in granted}
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
        # ok releases of this lock, as (invoked, completed): each freed the lock somewhere in between
        freed = [(y.invoke_ns, y.complete_ns) for y in releases_of.get(lock, ())
                 if y.type == "ok" and y.complete_ns is not None]
        for r in ops:
            if r.type != "fail" or r.error != LOCK_HELD:
                continue
            holders = [h for h in ops if h.owner != r.owner and h.type != "fail" and h.invoke_ns < r.complete_ns
                       and (h.type != "ok" or (h.complete_ns + h.ttl_ms * NS_PER_MS + slack_ns > r.invoke_ns
                                               and not _freed_between(freed, h.complete_ns, r.invoke_ns)))]
            if not holders:
                refused_free.append({"lock": lock, "owner": r.owner, "index": r.complete_index,
                                     "refused_ms": round(r.complete_ns / NS_PER_MS, 1)})

    holder_refused: list[dict[str, Any]] = []
    nonholder_released: list[dict[str, Any]] = []
    for r in releases:
        if r.complete_ns is None:
            continue
        if r.type == "fail" and r.error == NOT_LOCK_HOLDER:
            v = _holder_refused(r, by_lock.get(r.lock, []), releases_of[r.lock], slack_ns)
            if v is not None:
                holder_refused.append(v)
        elif r.type == "ok":
            v = _nonholder_released(r, by_lock.get(r.lock, []), releases_of[r.lock])
            if v is not None:
                nonholder_released.append(v)

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
    if holder_refused:
        v = holder_refused[0]
        problems.append(f"{len(holder_refused)} release(s) by the holder refused as not_lock_holder: "
                        + _release_by(v) + f" (holding token {v['held_token']}, acquired at {v['acquired_ms']} ms, op index "
                        f"{v['acquire_index']}, lease surely until {v['lease_until_ms']} ms), release invoked at "
                        f"{v['release_invoked_ms']} ms and refused at {v['refused_ms']} ms (op index {v['index']}), "
                        "with nothing else able to change the lock in between")
    if nonholder_released:
        v = nonholder_released[0]
        problems.append(f"{len(nonholder_released)} release(s) granted to an owner that surely did not hold the "
                        "lock: " + _release_by(v) + f", release invoked at {v['release_invoked_ms']} ms, ok at {v['released_ms']} ms "
                        f"(op index {v['index']}): {v['why']}")
    granted = sum(1 for a in acquires if a.type == "ok")
    return {
        "valid": not problems,
        "checker": "lock-exclusion",
        "acquires": granted,
        "releases": sum(1 for r in releases if r.type == "ok"),
        "overlaps": overlaps[:MAX_LISTED],
        "overlap_count": len(overlaps),
        "refused_free": refused_free[:MAX_LISTED],
        "refused_free_count": len(refused_free),
        "holder_refused": holder_refused[:MAX_LISTED],
        "holder_refused_count": len(holder_refused),
        "nonholder_released": nonholder_released[:MAX_LISTED],
        "nonholder_released_count": len(nonholder_released),
        "explanation": "\n".join(problems) if problems else
        f"{granted} granted acquire(s), {sum(1 for r in releases if r.type == 'ok')} release(s): no two owners' "
        "leases overlap, no free lock refused, no holder's release refused, no non-holder's release granted",
    }
