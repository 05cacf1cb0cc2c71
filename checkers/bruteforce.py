"""A brute-force linearizability checker: the reference the fast one is tested against.

It tries every order of the operations that respects real time (an operation whose
return precedes another's call comes first), applying them to the model, with no
memo, no linked list and no bitsets, so it shares nothing with ``checkers.wgl`` but
the model.  A pending operation may appear anywhere after its call or not at all.
Exponential: only for small histories (a dozen operations per partition).
"""

from __future__ import annotations

from typing import Any, Sequence

from checkers.model import Model, Operation

MAX_OPERATIONS = 14


def _precedes(a: Operation, b: Operation) -> bool:
    return a.return_time is not None and a.return_time < b.call


def linearizable_bruteforce(model: Model, operations: Sequence[Operation]) -> bool:
    """Whether every partition of ``operations`` has a legal real-time-respecting order."""
    for part in model.partition(list(operations)):
        if len(part) > MAX_OPERATIONS:
            raise ValueError(f"brute force is for at most {MAX_OPERATIONS} operations per partition, "
                             f"got {len(part)}")
        if not _search(model, part, [False] * len(part), model.init()):
            return False
    return True


def _search(model: Model, ops: Sequence[Operation], placed: list[bool], state: Any) -> bool:
    remaining = [i for i in range(len(ops)) if not placed[i]]
    if all(ops[i].return_time is None for i in remaining):
        return True  # every completed op is placed; pending ones may never take effect
    for i in remaining:
        op = ops[i]
        # op can come next only if no other unplaced op had to come before it
        if any(_precedes(ops[j], op) for j in remaining if j != i):
            continue
        legal, new_state = model.step(state, op.input, op.output)
        if not legal:
            continue
        placed[i] = True
        found = _search(model, ops, placed, new_state)
        placed[i] = False
        if found:
            return True
    return False
