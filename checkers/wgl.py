"""The Wing-Gong-Lowe linearizability search for one partition (Porcupine's ``checkSingle``).

The history becomes a doubly-linked list of call and return entries sorted by time.
The search walks it: at a call it tries to apply the operation to the model; if the
step is legal and the (linearized set, state) pair is new, the call and its return
are *lifted* out of the list and pushed on a stack; at a return whose operation is
not yet linearized it *unlifts* the last choice and tries the next call instead.
It succeeds when no return entry is left, fails when it must backtrack from an
empty stack.

Speed matters (this runs on 100,000-operation histories), so the list lives in
parallel Python lists of ints, the stack is a persistent cons list of tuples (a
snapshot of the longest prefix costs nothing), and the linearized set is three ints:
``k`` (every completed op with id < k is linearized), ``window`` (a bitset of the
linearized completed ops above k, relative to k, so it stays as small as the
concurrency) and ``pending`` (a bitset over the pending ops).  The memo is a set of
``(k, window, pending, state)`` tuples, exact, never a hash alone.

Pending operations (``return_time is None``) have no return entry: they may be
linearized at any point after their call, or never, which is what an ``info`` op means.

Beyond Porcupine: reads (``Model.read_only``) that fit are taken before any other op
is tried and never re-tried later, reads of unknown value are dropped, and identical
ops are taken in a fixed order where a swap argument shows that loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Protocol, Sequence

from checkers.model import UNKNOWN, CheckResult, Model, Operation

# How many search steps between looks at the clock and the stop flag.
CHECK_EVERY = 1024
# Memo entries kept per partition before the memo is dropped and rebuilt; the memo
# only prunes, so dropping it costs time, never correctness.
DEFAULT_MAX_CACHE = 1_000_000
# How far back among identical ops to look for one that must be linearized first.
_LOOK_BACK = 32


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(slots=True)
class SearchOutcome:
    """What the search of one partition found.

    ``longest`` is the longest linearizable prefix seen, as positions in the
    partition's operation list, in linearization order.  ``blocked`` is the position
    of the operation whose return forced the search back from that prefix (the op
    that could not be linearized), or -1.
    """

    result: CheckResult
    longest: list[int] = field(default_factory=list)
    blocked: int = -1
    steps: int = 0
    cache_size: int = 0


def _sorted_entries(operations: Sequence[Operation],
                    read_only: Callable[[Any], bool] | None = None) -> list[tuple[int, int, int]]:
    """(time, kind, op position) with kind 0 = call, 1 = return.

    Calls sort before returns at equal times (as in Porcupine): equal timestamps are
    treated as overlapping, which never raises a false alarm.

    A read-only op whose output is unknown is left out: it is legal in any state and
    changes none, and it always fits between the ops that must precede it and those
    that must follow it (every one of the former returned before any of the latter
    was called), so it cannot make a history illegal.
    """
    entries: list[tuple[int, int, int]] = []
    for pos, op in enumerate(operations):
        if read_only is not None and op.output is UNKNOWN and read_only(op.input):
            continue
        entries.append((op.call, 0, pos))
        if op.return_time is not None:
            if op.return_time < op.call:
                raise ValueError(f"operation {op.index if op.index >= 0 else pos} returns "
                                 f"(time {op.return_time}) before it is called (time {op.call})")
            entries.append((op.return_time, 1, pos))
    entries.sort()
    return entries


class Abandon(Exception):
    """Thrown into a :func:`searcher` to stop it; it then returns an ``unknown`` outcome."""


def search(model: Model, operations: Sequence[Operation], *, deadline: float | None = None,
           stop: StopFlag | None = None, max_cache: int = DEFAULT_MAX_CACHE) -> SearchOutcome:
    """Check one partition to the end.  ``deadline`` is a ``time.monotonic()`` instant;
    past it, or once ``stop`` is set, the answer is ``unknown``."""
    gen = searcher(model, operations, max_cache=max_cache)
    try:
        while True:
            next(gen)
            if (deadline is not None and time.monotonic() > deadline) or (stop is not None and stop.is_set()):
                return abandon(gen)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def abandon(gen: Generator[None, None, SearchOutcome]) -> SearchOutcome:
    """Stop a suspended :func:`searcher` and take its ``unknown`` outcome."""
    try:
        gen.throw(Abandon())
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("a searcher went on after it was abandoned")


# Inlined steps of the shipped models (``checkers.models``): per call entry, what the
# model's step would do, so the search loop needs no function call for them.  The
# comparisons are the step functions' own (``==`` / ``!=``), so verdicts are the same.
_GENERIC, _READ_EQ, _SET_A, _CAS_TRUE, _CAS_FALSE, _APPEND_A, _SET_NONE = range(7)


def _inline_codes(step: Callable[..., Any]) -> Callable[[Any, Any], int] | None:
    """For a shipped model's step function, a function (input, output) -> inline code."""
    from checkers import models  # noqa: PLC0415 - models imports this package's model module only

    if step is models.register_step:
        def code(inp: Any, out: Any) -> int:
            kind = inp[0]
            if kind == models.READ:
                return _GENERIC if out is UNKNOWN else _READ_EQ
            if kind == models.WRITE:
                return _SET_A
            if kind == models.CAS and out is not UNKNOWN:
                return _CAS_TRUE if out else _CAS_FALSE
            if kind == models.DELETE:
                return _SET_NONE
            return _GENERIC
        return code
    if step is models.porcupine_kv_step:
        def code(inp: Any, out: Any) -> int:
            kind = inp[0]
            if kind == models.READ:
                return _GENERIC if out is UNKNOWN else _READ_EQ
            if kind == models.WRITE:
                return _SET_A
            if kind == models.APPEND:
                return _APPEND_A
            return _GENERIC
        return code
    return None


def searcher(model: Model, operations: Sequence[Operation], *,
             max_cache: int = DEFAULT_MAX_CACHE) -> Generator[None, None, SearchOutcome]:
    """The search as a generator: it yields every :data:`CHECK_EVERY` steps so a driver
    can watch the clock, interleave partitions, or :func:`abandon` it, and returns
    the :class:`SearchOutcome` (as ``StopIteration.value``)."""
    n_ops = len(operations)
    if n_ops == 0:
        return SearchOutcome(CheckResult.OK)
    is_read_only = model.read_only
    entries = _sorted_entries(operations, is_read_only)
    n = len(entries)
    if n == 0:
        return SearchOutcome(CheckResult.OK)
    head, tail = n, n + 1
    nxt = list(range(1, n + 1)) + [0, tail]  # head -> 0 ... n-1 -> tail
    nxt[n - 1] = tail
    nxt[head] = 0
    prv = [i - 1 for i in range(n)] + [-1, n - 1]
    prv[0] = head

    # Per entry: typ 0 = return, 1 = call of a read-only op, 2 = call of another op,
    # 3 = the tail.  Completed ops get ids in call order (so k advances as the search
    # moves on); pending ops get their own bit space so they never hold k back.
    typ = [0] * (n + 2)
    typ[tail] = 3
    match = [-1] * n        # call entry -> its return entry, -1 when pending
    op_pos = [0] * n        # entry -> position in `operations`
    inputs: list[Any] = [None] * n
    outputs: list[Any] = [None] * n
    code = [_GENERIC] * n   # inlined step (see _inline_codes)
    arg_a: list[Any] = [None] * n
    arg_b: list[Any] = [None] * n
    cid = [0] * n           # completed id, or -1 for a pending op
    guard = [False] * n     # call entry with an order constraint below
    waits_for = [0] * n      # pending op: bit of the same-group pending op that must go first
    waits_for_done = [-1] * n  # completed op: id of the same-group op that must go first
    last_in_group: dict[Any, int] = {}
    pbit = [0] * n          # pending op's bit
    call_entry_of = [0] * n_ops
    coder = _inline_codes(model.step)
    next_cid = 0
    next_pid = 0
    has_reads = False
    for e, (_, kind, pos) in enumerate(entries):
        op_pos[e] = pos
        if kind == 0:
            op = operations[pos]
            inp = op.input
            out = op.output
            inputs[e] = inp
            outputs[e] = out
            call_entry_of[pos] = e
            if is_read_only is not None and is_read_only(inp):
                typ[e] = 1
                has_reads = True
            else:
                typ[e] = 2
            if coder is not None:
                c = code[e] = coder(inp, out)
                if c in (_SET_A, _CAS_TRUE, _CAS_FALSE, _APPEND_A):  # what the step reads of the input
                    arg_a[e] = inp[2]
                    if c == _CAS_TRUE:
                        arg_b[e] = inp[3]
            if op.return_time is None:
                cid[e] = -1
                pbit[e] = 1 << next_pid
                next_pid += 1
                # Pending ops with the same input and output are interchangeable once
                # invoked (none has a return to respect), so only orders that take
                # them earliest-call first need trying: an op of such a group may go
                # only after the one called before it.
                try:
                    group = (inp, out)
                    waits_for[e] = last_in_group.get(group, 0)
                    last_in_group[group] = pbit[e]
                except TypeError:  # unhashable input: no grouping, just more search
                    pass
                if waits_for[e]:
                    guard[e] = True
            else:
                cid[e] = next_cid
                next_cid += 1
        else:
            match[call_entry_of[pos]] = e
    # Completed ops with the same input and output: if a was called before b and
    # returned before b, some linearization (if any exists) puts a first (swap them
    # in any that does not: a in b's earlier place meets fewer real-time constraints,
    # b in a's later place no more than a did).  So b waits for the latest-called op
    # of its group that also returned before it (looking back a bounded way).
    members: dict[Any, list[int]] = {}
    for e in range(n):
        if not typ[e] or match[e] < 0:
            continue
        try:
            group_members = members.setdefault((inputs[e], outputs[e]), [])
        except TypeError:
            continue
        if group_members:
            for before in reversed(group_members[-_LOOK_BACK:]):
                if match[before] < match[e]:
                    waits_for_done[e] = cid[before]
                    guard[e] = True
                    break
        group_members.append(e)

    step = model.step
    hashable = model.equal is None
    cache: set[Any] = set()
    cache_eq: dict[tuple[int, int, int], list[Any]] = {}
    equal = model.equal

    state = model.init()
    k = 0
    window = 0
    pending = 0
    stack: tuple | None = None  # (entry, state, k, window, pending, parent)
    depth = 0
    best_depth = -1
    best_stack: tuple | None = None
    best_blocked = -1
    steps = 0
    mask = CHECK_EVERY - 1
    # Every configuration is scanned first for reads only (want 1): a legal read is
    # always a right move (see the backtracking below), so taking the reads that fit
    # before choosing among the other ops avoids dead ends in which an update went in
    # first and made them illegal.  Then the other ops (want 2), starting from the
    # first one that first scan passed; this configuration's reads were just tried,
    # so they are skipped.
    start_want = 1 if has_reads else 2
    want = start_want
    first_update = -1
    entry = nxt[head]
    while True:
        steps += 1
        if not steps & mask:
            try:
                yield
            except Abandon:
                return _outcome(CheckResult.UNKNOWN, best_stack, best_blocked, op_pos, steps,
                                len(cache) + len(cache_eq))
            if len(cache) + len(cache_eq) > max_cache:
                cache.clear()
                cache_eq.clear()
        t = typ[entry]
        if t == want:
            if guard[entry]:
                w = waits_for[entry]
                if w and not pending & w:
                    entry = nxt[entry]
                    continue
                w = waits_for_done[entry]
                if w >= k and not (window >> (w - k)) & 1:
                    entry = nxt[entry]
                    continue
            c = code[entry]
            if c == _READ_EQ:
                legal = outputs[entry] == state
                new_state = state
            elif c == _SET_A:
                legal = True
                new_state = arg_a[entry]
            elif c == _CAS_TRUE:
                legal = state == arg_a[entry]
                new_state = arg_b[entry]
            elif c == _CAS_FALSE:
                legal = state != arg_a[entry]
                new_state = state
            elif c == _APPEND_A:
                legal = True
                new_state = state + arg_a[entry]
            elif c == _SET_NONE:
                legal = True
                new_state = None
            else:
                legal, new_state = step(state, inputs[entry], outputs[entry])
            if legal:
                i = cid[entry]
                if i < 0:
                    nk, nw, npend = k, window, pending | pbit[entry]
                elif i == k:
                    x = window | 1
                    t = (x ^ (x + 1)).bit_length() - 1  # trailing ones of x
                    nk, nw, npend = k + t, x >> t, pending
                else:
                    nk, nw, npend = k, window | (1 << (i - k)), pending
                if hashable:
                    key = (nk, nw, npend, new_state)
                    fresh = key not in cache
                    if fresh:
                        cache.add(key)
                else:
                    bucket = cache_eq.setdefault((nk, nw, npend), [])
                    fresh = not any(equal(s, new_state) for s in bucket)  # type: ignore[misc]
                    if fresh:
                        bucket.append(new_state)
                if fresh:
                    stack = (entry, state, k, window, pending, stack)
                    depth += 1
                    state, k, window, pending = new_state, nk, nw, npend
                    # lift: unlink the call, then its return
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    r = match[entry]
                    if r >= 0:
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                    entry = nxt[head]
                    want = start_want
                    first_update = -1
                    continue
            entry = nxt[entry]
        elif t == 0:
            if want == 1:
                # no read fits: on to the other ops (none passed: this return means backtracking)
                if first_update >= 0:
                    entry = first_update
                want = 2
                continue
            # A return whose operation is not linearized yet: this prefix is a dead end.
            if depth > best_depth:
                best_depth, best_stack, best_blocked = depth, stack, entry
            if stack is None:
                return _outcome(CheckResult.ILLEGAL, best_stack, best_blocked, op_pos, steps,
                                len(cache) + len(cache_eq))
            while True:
                entry, state, k, window, pending, stack = stack
                depth -= 1
                # unlift in reverse order: the return, then the call
                r = match[entry]
                if r >= 0:
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                # A read-only op that was legal where it was placed need not be tried
                # anywhere later: an order that places it later can place it there
                # instead (it changes no state, and everything that had to precede it
                # already did).  So if that branch failed, this configuration failed too.
                if typ[entry] != 1:
                    break
                if stack is None:
                    return _outcome(CheckResult.ILLEGAL, best_stack, best_blocked, op_pos, steps,
                                    len(cache) + len(cache_eq))
            entry = nxt[entry]
            want = 2  # a resumed configuration has had its reads (read frames are popped above)
        elif t == 3:
            return SearchOutcome(CheckResult.OK, steps=steps, cache_size=len(cache) + len(cache_eq))
        else:  # a call of the kind this scan does not try
            if first_update < 0:
                first_update = entry
            entry = nxt[entry]


def _outcome(result: CheckResult, best_stack: tuple | None, blocked_entry: int, op_pos: list[int],
             steps: int, cache_size: int) -> SearchOutcome:
    longest: list[int] = []
    frame = best_stack
    while frame is not None:
        longest.append(op_pos[frame[0]])
        frame = frame[5]
    longest.reverse()
    blocked = op_pos[blocked_entry] if blocked_entry >= 0 else -1
    return SearchOutcome(result, longest, blocked, steps, cache_size)
