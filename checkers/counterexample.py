"""Why a partition is not linearizable, in words a person can act on.

From the search's longest linearizable prefix: the state that prefix leaves, the
operation whose completion the search could not get past (Knossos' "op that could
not be linearized"), and every operation that could have come next with what the
model says about it in that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checkers.checker import PartitionInfo
from checkers.model import Model, Operation


@dataclass(slots=True)
class Candidate:
    """An operation that could have been linearized right after the prefix."""

    position: int           # in the partition's operation list
    legal: bool             # whether the model accepts it in the prefix's state
    state_after: Any = None  # the state it would leave, when legal


@dataclass(slots=True)
class Counterexample:
    """The longest linearizable prefix of a failing partition and what could not follow it."""

    operations: list[Operation]
    prefix: list[int]                       # positions, in linearization order
    states: list[Any]                       # states[i] = state after prefix[:i] (len = len(prefix) + 1)
    blocked: int                            # position of the op that could not be linearized, or -1
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def state(self) -> Any:
        return self.states[-1]


def _replay(model: Model, operations: list[Operation], prefix: list[int]) -> list[Any]:
    state = model.init()
    states = [state]
    for pos in prefix:
        op = operations[pos]
        legal, state = model.step(state, op.input, op.output)
        if not legal:  # the search only records legal prefixes; a model that is not pure breaks this
            raise RuntimeError(f"model {model.name!r} rejected its own linearization at op {op.index}; "
                               "is its step function deterministic?")
        states.append(state)
    return states


def build(model: Model, partition: PartitionInfo) -> Counterexample:
    """The counterexample of a partition the search found illegal (or gave up on)."""
    operations = partition.operations
    prefix = list(partition.outcome.longest)
    states = _replay(model, operations, prefix)
    placed = set(prefix)
    rest = [i for i in range(len(operations)) if i not in placed]
    # Could come next: no other unplaced, completed op returned before it was called.
    earliest_return = min((operations[i].return_time for i in rest
                           if operations[i].return_time is not None), default=None)
    candidates: list[Candidate] = []
    for i in rest:
        op = operations[i]
        if earliest_return is not None and op.call > earliest_return:
            continue
        legal, after = model.step(states[-1], op.input, op.output)
        candidates.append(Candidate(i, legal, after if legal else None))
    return Counterexample(operations, prefix, states, partition.outcome.blocked, candidates)


def key_of(cx: Counterexample) -> Any:
    """The partition's key, for the models that key their inputs (``input[1]``)."""
    first = cx.operations[0].input if cx.operations else None
    return first[1] if isinstance(first, tuple) and len(first) > 1 else None


def _describe(model: Model, op: Operation) -> str:
    text = model.describe_operation(op.input, op.output)
    return f"{text}  [process {op.client_id}, op index {op.index}]"


def to_dict(model: Model, cx: Counterexample, max_prefix: int = 20) -> dict[str, Any]:
    """A JSON-friendly summary (the prefix is cut to its last ``max_prefix`` ops)."""
    ops = cx.operations
    blocked = ops[cx.blocked] if cx.blocked >= 0 else None
    return {
        "key": _jsonable(key_of(cx)),
        "prefix_length": len(cx.prefix),
        "prefix_tail": [_describe(model, ops[i]) for i in cx.prefix[-max_prefix:]],
        "state": model.describe_state(cx.state),
        "blocked_op": None if blocked is None else _describe(model, blocked),
        "blocked_index": None if blocked is None else blocked.index,
        "candidates": [
            {"op": _describe(model, ops[c.position]), "index": ops[c.position].index,
             "legal_here": c.legal,
             "state_after": None if not c.legal else model.describe_state(c.state_after)}
            for c in cx.candidates
        ],
    }


def summary(model: Model, cx: Counterexample) -> str:
    """A few lines: key, prefix length, the op that could not be linearized, the state it met."""
    d = to_dict(model, cx, max_prefix=3)
    key = "" if d["key"] is None else f"key {d['key']!r}: "
    lines = [f"{key}linearizable up to {d['prefix_length']} operation(s), "
             f"leaving state {d['state']}"]
    if d["prefix_tail"]:
        lines.append("  last linearized: " + "; ".join(d["prefix_tail"]))
    if d["blocked_op"]:
        lines.append(f"  could not linearize: {d['blocked_op']}")
    illegal = [c for c in d["candidates"] if not c["legal_here"]]
    dead_ends = [c for c in d["candidates"] if c["legal_here"]]
    for c in illegal[:5]:
        lines.append(f"  cannot follow (state {d['state']}): {c['op']}")
    if dead_ends:
        lines.append(f"  {len(dead_ends)} other op(s) could follow but every order from there fails")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return repr(value)
