"""The fencing checker for the lock workload.

Ops: ``acquire`` (an ``ok`` returns the token handed out), ``fenced-put`` (value
``[v, token]``; ``ok`` = accepted), ``read``.  Four properties:

1. every token handed out by ``acquire`` is unique;
2. if one acquire completed before another began, its token is smaller;
3. accepted fenced writes to a key, in real-time order, never go from a higher
   token back to a lower one (a deposed holder's write landed after a newer one);
4. the history is linearizable under the fenced-register model (checked per key).

Real-time order is history order (see ``checkers.mapping``).
"""

from __future__ import annotations

from typing import Any, Sequence

from checkers.history import Op
from checkers.linearizability import DEFAULT_TIME_LIMIT, check_linearizability
from checkers.mapping import OperationError
from checkers.results import merge_valid

# How many violations of each kind the result lists (the counts are always complete).
MAX_LISTED = 20


def _token(op: Op) -> int:
    if not isinstance(op.value, int) or isinstance(op.value, bool):
        raise OperationError(op, f"an ok acquire must return an integer token, got {op.value!r}")
    return op.value


def _put_token(op: Op) -> int:
    value = op.value
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], int)):
        raise OperationError(op, f"fenced-put needs a value [value token], got {value!r}")
    return int(value[1])


def _check_tokens(history: Sequence[Op],
                  per_key: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Duplicate tokens, and tokens out of real-time order, among ok acquires
    (across all locks, or per lock key with ``per_key``)."""
    duplicates: list[dict[str, Any]] = []
    out_of_order: list[dict[str, Any]] = []
    holder: dict[tuple[Any, int], Op] = {}
    best: dict[Any, tuple[int, Op]] = {}          # scope -> highest token of acquires completed so far
    bound: dict[Any, tuple[int, Op] | None] = {}  # process -> best in its scope when its acquire began
    for op in history:
        if not op.is_client or op.f != "acquire":
            continue
        scope = op.key if per_key else None
        if op.type == "invoke":
            bound[op.process] = best.get(scope)
            continue
        began = bound.pop(op.process, None)
        if op.type != "ok":
            continue
        token = _token(op)
        first = holder.get((scope, token))
        if first is not None:
            duplicates.append({"token": token, "first_index": first.index, "second_index": op.index,
                               "processes": [first.process, op.process]})
        else:
            holder[(scope, token)] = op
        if began is not None and token <= began[0]:
            out_of_order.append({"token": token, "index": op.index, "process": op.process,
                                 "earlier_token": began[0], "earlier_index": began[1].index})
        if scope not in best or token > best[scope][0]:
            best[scope] = (token, op)
    return duplicates, out_of_order


def _check_stale_writes(history: Sequence[Op]) -> list[dict[str, Any]]:
    """Accepted fenced-puts whose token is below one accepted earlier (in real time) for the key."""
    stale: list[dict[str, Any]] = []
    best: dict[Any, tuple[int, Op]] = {}                 # key -> highest accepted token so far
    bound: dict[Any, tuple[int, Op] | None] = {}         # process -> best for its key when invoked
    for op in history:
        if not op.is_client or op.f != "fenced-put":
            continue
        if op.type == "invoke":
            bound[op.process] = best.get(op.key)
            continue
        began = bound.pop(op.process, None)
        if op.type != "ok":
            continue
        token = _put_token(op)
        if began is not None and token < began[0]:
            stale.append({"key": op.key, "token": token, "index": op.index, "process": op.process,
                          "newer_token": began[0], "newer_index": began[1].index})
        if op.key not in best or token > best[op.key][0]:
            best[op.key] = (token, op)
    return stale


def check_fencing(history: Sequence[Op], *, initial: Any = None,
                  time_limit: float | None = DEFAULT_TIME_LIMIT, workers: int | None = None,
                  linearizability: dict[str, Any] | None = None,
                  per_key_tokens: bool = False) -> dict[str, Any]:
    """``{"valid", "checker": "fencing", "duplicate_tokens", "token_order", "stale_writes",
    "linearizability", "explanation"}``.

    Ukehi's tokens come from one sequence (term and log position), so by default
    uniqueness and order are checked across all locks; ``per_key_tokens`` checks them
    per lock (the acquire's ``key``) for a system whose locks count separately.  Pass
    ``linearizability`` (a result of ``check_linearizability(history,
    "fenced-register")``) if it is already computed."""
    duplicates, out_of_order = _check_tokens(history, per_key_tokens)
    stale = _check_stale_writes(history)
    linear = linearizability if linearizability is not None else check_linearizability(
        history, "fenced-register", initial=initial, time_limit=time_limit, workers=workers)
    problems = []
    if duplicates:
        d = duplicates[0]
        problems.append(f"{len(duplicates)} duplicate token(s), e.g. token {d['token']} handed out at op "
                        f"index {d['first_index']} and again at {d['second_index']}")
    if out_of_order:
        o = out_of_order[0]
        problems.append(f"{len(out_of_order)} acquire(s) got a token not above one handed out before they "
                        f"began, e.g. token {o['token']} (op index {o['index']}) after token "
                        f"{o['earlier_token']} (op index {o['earlier_index']})")
    if stale:
        s = stale[0]
        problems.append(f"{len(stale)} stale write(s) accepted, e.g. key {s['key']!r} took token {s['token']} "
                        f"(op index {s['index']}) after token {s['newer_token']} (op index {s['newer_index']})")
    if linear["valid"] is not True:
        problems.append(linear["explanation"])
    valid = merge_valid([not (duplicates or out_of_order or stale), linear["valid"]])
    return {
        "valid": valid,
        "checker": "fencing",
        "duplicate_tokens": duplicates[:MAX_LISTED],
        "duplicate_token_count": len(duplicates),
        "token_order": out_of_order[:MAX_LISTED],
        "token_order_count": len(out_of_order),
        "stale_writes": stale[:MAX_LISTED],
        "stale_write_count": len(stale),
        "linearizability": linear,
        "explanation": "\n".join(problems) if problems else "tokens unique and ordered, no stale write, "
                                                            "linearizable under the fenced-register model",
    }
