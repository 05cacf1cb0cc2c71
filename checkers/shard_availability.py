"""Unaffected shards stay available while another shard moves (issue 15).

MIT 6.824's shardkv asks that a reconfiguration touch only the shards it moves: requests to
the other shards keep succeeding while a shard is in flight. In a sharded run with the
``rebalance`` nemesis (nemeses/rebalance.py) each ``move-replica`` op moves one replica of one
shard; this checker reads the history alone (no node logs) and fails the run when, while a
move was in flight and no other fault was about, client requests to keys of the *other*
shards mostly went unserved.

- **Move window**: a ``move-replica`` nemesis op, from its invocation to its completion (the
  completion's value names the shard; a move the nemesis skipped, or whose completion is
  missing or names no shard, has no window). The window includes the nemesis's own reading
  of the map just before the move request, so it is a little wider than the move.
- **Judged window**: no other fault was about: no window or instant of another nemesis
  family (partition, kill, pause, clock, packet, ..., as their shading in harness/registry.py
  describes them, read by checkers/faults.py) overlaps the move window or the GRACE_S
  seconds before it (leaders lost to a fault that has just healed are still being elected:
  the election timeout is 1-2 s), and the move itself killed no node (a ``disrupted`` record
  with ``killed``: that kill is a fault too, and so counts as one for the windows after it).
- **Judged op**: a client op on a key whose shard (``ukehi.shardmap.shard_of`` of the key as
  the workload sends it, the function the node and the client route by) is not the moving
  one, *invoked* inside a judged window, whose own span (invocation to completion, or to the
  end of the history when it never completed) no other fault overlaps either. Ops invoked
  before the move are not judged: whatever held them up started before it.
- **Served**: ``ok``, or ``fail`` with an answer about the request itself (a cas whose
  precondition failed). Unknown outcomes (``info``: timeouts, lost connections) and
  refusals that only say "not now" (NOT_SERVED: ``not_leader``, ``unavailable``,
  ``recovering``, ``timeout``, ``internal``, ``wrong_shard``, ``connect_failed``,
  ``connection_lost``) are not served. ``wrong_shard`` counts as not served: a shard that is
  not moving has the same members before and after, so its members never need to refuse it.
- **Violation**, per judged window (redirects and a leader change in another group make a few
  failures normal; one failure is never a violation):
  ``few-served``: the unaffected shards had at least MIN_OPS judged ops and fewer than
  MIN_SERVED_FRACTION of them were served; or ``shard-unserved``: one unaffected shard had at
  least MIN_OPS judged ops and none was served.

The result names each violating window (the move's history index, shard, source and target,
outcome, its time span), the unaffected shards with ops in it, the ok/fail/info/served counts
(and the moving shard's own, for comparison) and a few failing ops.

Not enough evidence is a pass, as for the catch-up checker: no move at all, or no window that
could be judged (every one overlapped another fault or had too few ops), is ``valid: True``
with ``judged_windows: 0`` and an explanation saying that nothing was judged and why (a
rebalance run that never got a quiet move is a weak run, not a wrong build; the run's
availability checker judges the cluster as a whole).
"""

from __future__ import annotations

import importlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from checkers.availability import CANNOT_SERVE
from checkers.history import NEMESIS, Op

#: the rebalance nemesis's move op (nemeses/rebalance.py ``MOVE``; a test keeps the two equal)
MOVE = "move-replica"
#: the shading name of the rebalance family (its own instants are not "other faults")
REBALANCE = "rebalance"
#: seconds before a move window in which another fault must not have been active
GRACE_S = 3.0
#: judged ops (over the unaffected shards, or on one of them) that a rule needs at least
MIN_OPS = 5
#: below this fraction of served ops over the unaffected shards, a window is a violation
MIN_SERVED_FRACTION = 0.5
#: refusals and client-side errors that say only "not served now" (see the module doc)
NOT_SERVED = frozenset(CANNOT_SERVE | {"wrong_shard", "connect_failed", "connection_lost"})
#: examples of failing ops in a violation, and windows listed in a result
EXAMPLES, LISTED = 3, 50
NS_PER_S = 1_000_000_000

#: workloads of a sharded run (harness/sharding.py SHARDED_WORKLOADS) -> the module whose
#: ``key_name`` turns a history key into the key the client sends
_KEY_NAME_MODULES = {"register": "workloads.register", "kv": "workloads.kv", "fencing": "workloads.fencing",
                     "list-append": "workloads.list_append", "rw-register": "workloads.rw_register"}


def workload_key_name(workload: str) -> Callable[[Any], str]:
    """The workload's own ``key_name`` (history key -> the key on the wire); ValueError for a
    workload that has none."""
    module = _KEY_NAME_MODULES.get(workload)
    if module is None:
        raise ValueError(f"no key naming known for workload {workload!r} (sharded runs take "
                         f"{', '.join(sorted(_KEY_NAME_MODULES))})")
    return importlib.import_module(module).key_name


def shard_of_key(key: Any, shards: int, key_name: Callable[[Any], str]) -> int:
    """The shard of a history key: the node's and the client's own function
    (``ShardMap.shard_for`` is ``shard_of(key, map.shards)``) over the key as sent."""
    from ukehi.shardmap import shard_of

    return shard_of(key_name(key), shards)


@dataclass(frozen=True)
class Span:
    """Another fault, active from start_s to end_s (seconds since the test started)."""

    what: str
    start_s: float
    end_s: float

    def overlaps(self, lo: float, hi: float) -> bool:
        return self.start_s <= hi and self.end_s >= lo


@dataclass(frozen=True)
class Move:
    """One move-replica op: its window and what its completion recorded."""

    invoke_index: int
    index: int | None  # the completion's history index (None: never completed)
    start_s: float
    end_s: float
    value: Mapping[str, Any]

    @property
    def shard(self) -> int | None:
        shard = self.value.get("shard")
        return shard if isinstance(shard, int) and not isinstance(shard, bool) else None

    @property
    def killed(self) -> str | None:
        """The node the move's own disruption killed (None: nobody was killed)."""
        disrupted = self.value.get("disrupted")
        if isinstance(disrupted, Mapping) and disrupted.get("killed") is not None and "skipped" not in disrupted:
            return str(disrupted.get("node") or "a node")
        return None

    def describe(self) -> str:
        v = self.value
        return (f"move of shard {self.shard} from {v.get('from')} to {v.get('to')} (history op "
                f"{self.index if self.index is not None else self.invoke_index}, {self.start_s:.2f}-"
                f"{self.end_s:.2f} s, outcome {v.get('outcome', 'none')})")


def moves_of(history: Sequence[Op]) -> list[Move]:
    """Every move-replica op with its completion (the nemesis runs one op at a time)."""
    out: list[Move] = []
    end = max((op.time for op in history), default=0) / NS_PER_S
    pending: Op | None = None
    for op in history:
        if op.process != NEMESIS:
            continue
        if op.type == "invoke":
            if pending is not None and pending.f == MOVE:
                out.append(Move(pending.index, None, pending.time / NS_PER_S, op.time / NS_PER_S, {}))
            pending = op
            continue
        if pending is not None and op.f == MOVE and pending.f == MOVE:
            out.append(Move(pending.index, op.index, pending.time / NS_PER_S, op.time / NS_PER_S,
                            op.value if isinstance(op.value, Mapping) else {}))
        pending = None
    if pending is not None and pending.f == MOVE:
        out.append(Move(pending.index, None, pending.time / NS_PER_S, end, {}))
    return out


def other_faults(history: Sequence[Op], moves: Iterable[Move]) -> list[Span]:
    """Every fault other than a quiet move: other families' windows and instants, and moves
    that killed a node (their whole op)."""
    from checkers.faults import fault_events
    from checkers.whitebox.catchup import _fault_specs  # one spec per op name, the most specific

    windows, instants = fault_events(history, _fault_specs())
    spans = [Span(f"{w.name} {w.detail}".strip(), w.start_s, w.end_s) for w in windows if w.name != REBALANCE]
    spans += [Span(f"{i.f} {i.detail}".strip(), i.t_s, i.t_s) for i in instants
              if i.name != REBALANCE and i.f != MOVE]
    spans += [Span(f"{MOVE} of shard {m.shard} that killed {m.killed}", m.start_s, m.end_s)
              for m in moves if m.killed is not None]
    return sorted(spans, key=lambda s: (s.start_s, s.end_s))


@dataclass(frozen=True)
class ClientOp:
    invoke: Op
    done: Op | None
    start_s: float
    end_s: float

    @property
    def type(self) -> str:
        return self.done.type if self.done is not None else "info"

    @property
    def served(self) -> bool:
        if self.done is None:
            return False
        if self.done.type == "ok":
            return True
        return self.done.type == "fail" and self.done.error is not None and str(self.done.error) not in NOT_SERVED

    def example(self) -> dict[str, Any]:
        d = self.invoke.to_dict()
        if self.done is not None:
            d.update(type=self.done.type, completion_index=self.done.index, error=self.done.error,
                     latency_s=round(self.end_s - self.start_s, 3))
        else:
            d.update(type="info", error="never completed")
        return d


def client_ops(history: Sequence[Op]) -> list[ClientOp]:
    """Client invocations with their completions (one op at a time per process)."""
    end = max((op.time for op in history), default=0) / NS_PER_S
    open_: dict[Any, Op] = {}
    out: list[ClientOp] = []
    for op in history:
        if op.process == NEMESIS:
            continue
        if op.type == "invoke":
            open_[op.process] = op
            continue
        inv = open_.pop(op.process, None)
        if inv is not None:
            out.append(ClientOp(inv, op, inv.time / NS_PER_S, op.time / NS_PER_S))
    out.extend(ClientOp(inv, None, inv.time / NS_PER_S, end) for inv in open_.values())
    return sorted(out, key=lambda c: c.invoke.index)


def _counts(ops: Iterable[ClientOp]) -> dict[str, int]:
    c = {"ops": 0, "ok": 0, "fail": 0, "info": 0, "served": 0}
    for op in ops:
        c["ops"] += 1
        c[op.type] += 1
        c["served"] += op.served
    return c


def _errors(ops: Iterable[ClientOp]) -> str:
    seen: dict[str, int] = {}
    for op in ops:
        if not op.served:
            key = str(op.done.error if op.done is not None else "never completed")[:80]
            seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{e} x{n}" for e, n in sorted(seen.items(), key=lambda kv: -kv[1])[:3]) or "none"


def check_unaffected_shards(history: Iterable[Op], shards: int, key_name: Callable[[Any], str]) -> dict[str, Any]:
    """Judge a sharded run's history (module doc). ``shards``: the run's shard count;
    ``key_name``: the workload's history key -> the key its client sends."""
    history = list(history)
    moves = moves_of(history)
    if not moves:
        return {"valid": True, "violations": [], "judged_windows": 0, "windows": [],
                "explanation": "no move-replica op in the history: no move to judge the other shards by"}
    faults = other_faults(history, moves)
    ops = sorted(client_ops(history), key=lambda c: (c.start_s, c.invoke.index))
    starts = [op.start_s for op in ops]
    shard_cache: dict[Any, int | None] = {}

    def shard(op: ClientOp) -> int | None:
        key = op.invoke.key
        if key is None or not isinstance(key, (str, int, tuple)):
            return None
        if key not in shard_cache:
            try:
                shard_cache[key] = shard_of_key(key, shards, key_name)
            except (TypeError, ValueError):
                shard_cache[key] = None
        return shard_cache[key]

    violations: list[dict[str, Any]] = []
    judged: list[dict[str, Any]] = []
    not_judged: list[str] = []
    for move in moves:
        if move.shard is None:
            why = move.value.get("skipped") or ("never completed" if move.index is None else "no shard recorded")
            not_judged.append(f"history op {move.index if move.index is not None else move.invoke_index}: {why}")
            continue
        if move.killed is not None:
            not_judged.append(f"{move.describe()}: the move killed {move.killed}")
            continue
        overlapping = [s for s in faults if s.overlaps(move.start_s - GRACE_S, move.end_s)]
        if overlapping:
            not_judged.append(f"{move.describe()}: other faults within {GRACE_S:g} s: "
                              + "; ".join(f"{s.what} ({s.start_s:.1f}-{s.end_s:.1f} s)" for s in overlapping[:3]))
            continue
        inside = ops[bisect_left(starts, move.start_s):bisect_right(starts, move.end_s)]
        kept = [op for op in inside if not any(s.overlaps(op.start_s, op.end_s) for s in faults)]
        moving = [op for op in kept if shard(op) == move.shard]
        others = [op for op in kept if shard(op) not in (None, move.shard)]
        per_shard: dict[int, list[ClientOp]] = {}
        for op in others:
            per_shard.setdefault(shard(op), []).append(op)  # type: ignore[arg-type]
        counts = _counts(others)
        window = {"op": move.index, "invoke_op": move.invoke_index, "shard": move.shard,
                  "from": move.value.get("from"), "to": move.value.get("to"), "outcome": move.value.get("outcome"),
                  "start_s": round(move.start_s, 3), "end_s": round(move.end_s, 3),
                  "unaffected_shards": sorted(per_shard), "counts": counts, "moving_shard_counts": _counts(moving),
                  "per_shard": {str(s): _counts(v) for s, v in sorted(per_shard.items())},
                  "excused_ops": len(inside) - len(kept)}
        if counts["ops"] < MIN_OPS:  # (one shard's MIN_OPS are among them too)
            not_judged.append(f"{move.describe()}: {counts['ops']} op(s) on unaffected shards invoked in it "
                              f"(fewer than {MIN_OPS})")
            continue
        judged.append(window)
        rules = []
        if counts["ops"] >= MIN_OPS and counts["served"] < MIN_SERVED_FRACTION * counts["ops"]:
            rules.append("few-served")
        dead = [s for s, v in sorted(per_shard.items()) if len(v) >= MIN_OPS and not any(op.served for op in v)]
        if dead:
            rules.append("shard-unserved")
        if not rules:
            continue
        failing = [op for op in others if not op.served]
        what = (f"during the {move.describe()}, with no other fault within {GRACE_S:g} s, the unaffected shards "
                f"{', '.join(map(str, sorted(per_shard)))} served {counts['served']} of {counts['ops']} client ops "
                f"invoked in it ({counts['ok']} ok, {counts['fail']} fail, {counts['info']} unknown; not served: "
                f"{_errors(others)})")
        if dead:
            what += f"; shard(s) {', '.join(map(str, dead))} served none of at least {MIN_OPS}"
        what += f"; the moving shard {move.shard}: {window['moving_shard_counts']['served']} of " \
                f"{window['moving_shard_counts']['ops']} served"
        violations.append({**window, "rules": rules, "unserved_shards": dead, "what": what,
                           "examples": [op.example() for op in failing[:EXAMPLES]]})

    total = {k: sum(w["counts"][k] for w in judged) for k in ("ops", "ok", "fail", "info", "served")}
    base = {"judged_windows": len(judged), "moves": len(moves), "windows": judged[:LISTED],
            "not_judged": not_judged[:LISTED], "counts": total,
            "rule": f"per quiet move window: >= {MIN_OPS} ops on unaffected shards and < "
                    f"{MIN_SERVED_FRACTION:.0%} served, or one unaffected shard with >= {MIN_OPS} ops and none "
                    f"served (grace {GRACE_S:g} s after other faults)"}
    if violations:
        return {"valid": False, "violations": violations[:LISTED], "violation_count": len(violations),
                "explanation": "; ".join(v["what"] for v in violations[:5])
                               + (f"; ... and {len(violations) - 5} more" if len(violations) > 5 else ""), **base}
    if not judged:
        return {"valid": True, "violations": [], **base,
                "explanation": f"nothing judged: none of the {len(moves)} move(s) had a quiet window with enough ops "
                               f"on other shards ({'; '.join(not_judged[:3])})"}
    return {"valid": True, "violations": [], **base,
            "explanation": f"the unaffected shards stayed available during {len(judged)} quiet move window(s) of "
                           f"{len(moves)}: {total['served']} of {total['ops']} of their ops served "
                           f"({total['ok']} ok, {total['fail']} fail, {total['info']} unknown); "
                           f"{len(moves) - len(judged)} window(s) not judged"}


def unaffected_shards_checker(workload: str, shards: int) -> Callable[[Iterable[Op], Mapping[str, Any] | None],
                                                                      dict[str, Any]]:
    """The checker of one sharded run (harness/analysis.py attaches it when ``rebalance`` runs);
    a workload without key naming is the checker's error (an unknown verdict), not the run's."""

    def check(history: Iterable[Op], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return check_unaffected_shards(history, int(shards), workload_key_name(workload))

    return check


def wanted(nemeses: Iterable[str], node_options: Mapping[str, Any]) -> bool:
    """Whether a run gets this checker: sharded, with the rebalance nemesis."""
    return node_options.get("shards") not in (None, "") and any(
        n == REBALANCE or n.startswith(REBALANCE + "-") for n in nemeses)


__all__ = ["GRACE_S", "MIN_OPS", "MIN_SERVED_FRACTION", "MOVE", "NOT_SERVED", "check_unaffected_shards",
           "client_ops", "moves_of", "other_faults", "shard_of_key", "unaffected_shards_checker", "wanted",
           "workload_key_name"]
