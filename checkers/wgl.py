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
``(k, window, pending, state)`` tuples, exact, never a hash alone; it is filled only from
the first backtrack on (then with every configuration on the stack), since until then
every configuration reached has one more op linearized than the one before it and cannot
repeat: most easy partitions never pay for it.

Pending operations (``return_time is None``) have no return entry: they may be
linearized at any point after their call, or never, which is what an ``info`` op means.

Beyond Porcupine: reads (``Model.read_only``) that fit are taken before any other op
is tried and never re-tried later, reads of unknown value are dropped, and identical
ops are taken in a fixed order where a swap argument shows that loses nothing.

The loop also exists in C (``checkers/_fastwgl.c``, built by setup.py where a compiler
exists): the same moves, memo, step counts and pauses over C arrays and 64-bit words,
used for models with hashable states when the partition fits those words (at most 64
pending ops, a window of at most 64 bits).  Without it, with ``UKEHI_PURE_PYTHON`` set,
or for other partitions, :func:`_search_python` runs with the same outcomes.  The same
extension reads the ops' fields for the layout in one pass (most of the cost on large easy
histories is that set-up, not the search).
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice
from typing import Any, Callable, Generator, NamedTuple, Protocol, Sequence

from checkers import models, native
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


class _Layout(NamedTuple):
    """A partition laid out for the search.

    Entries are ints: the call of the op at position ``p`` (ops in call order) is entry
    ``p``, its return is entry ``m + p``, and ``2m`` and ``2m + 1`` are the list's head and
    tail.  Per-op arrays are indexed by the call entry, so nothing is gathered per entry.
    """

    m: int
    order: list[int]        # the entries in time order (see _links)
    typ: list[int]          # 0 = return, 1 = call of a read-only op, 2 = another call, 3 = tail
    match: list[int]        # call entry -> its return entry, -1 when pending
    inputs: list[Any]
    outputs: list[Any]
    code: list[int]         # inlined step (see _inline_codes)
    arg_a: list[Any]
    arg_b: list[Any]
    cid: list[int]          # completed id (call order), or -1 for a pending op
    pbit: list[int]         # pending op's bit
    guard: list[bool]       # call entry with an order constraint below
    waits_for: list[int]    # pending op: bit of the same-group pending op that must go first
    waits_for_done: list[int]  # completed op: id of the same-group op that must go first
    positions: Sequence[int]   # op -> its position in the partition's operation list
    has_reads: bool


def _links(order: list[int], m: int) -> tuple[list[int], list[int]]:
    """The doubly-linked list of entries in ``order``: (nxt, prv), head ``2m``, tail ``2m + 1``."""
    head, tail = 2 * m, 2 * m + 1
    nxt = [0] * (2 * m + 2)
    prv = [0] * (2 * m + 2)
    before = head
    for e in order:
        nxt[before] = e
        prv[e] = before
        before = e
    nxt[before] = tail
    prv[tail] = before
    nxt[tail] = tail
    prv[head] = -1
    return nxt, prv


def _fields(read_only: Callable[[Any], bool] | None, ops: Sequence[Operation]
            ) -> tuple[Sequence[int], list[Any], list[Any], list[Any], list[Any], list[bool] | None]:
    """(positions, inputs, outputs, calls, return times, read flags) of the ops a partition
    keeps: every op but the reads of unknown value (see _layout); the flags are None for a
    model without ``read_only``.  Read in one pass in C when the compiled module is there,
    the ops are Operations and the model is a shipped one, else the fields in C and the
    flags in Python, else all in Python: the same lists every way."""
    compiled = compiled_search()
    got = None
    if compiled is not None:
        if read_only is models.is_read:
            both = compiled.read_fields(ops, Operation, models.READ, UNKNOWN)
            if both is not None:
                kept, inputs, outputs, calls, rets, reads = both
                return (range(len(ops)) if kept is None else kept), inputs, outputs, calls, rets, reads
        got = compiled.fields(ops, Operation)
    if got is not None:
        inputs, outputs, calls, rets = got
    else:
        inputs = [op.input for op in ops]
        outputs = [op.output for op in ops]
        calls = [op.call for op in ops]
        rets = [op.return_time for op in ops]
    positions: Sequence[int] = range(len(ops))
    if read_only is None:
        return positions, inputs, outputs, calls, rets, None
    reads = _read_flags(read_only, inputs)
    if any(reads) and any([o is UNKNOWN for o in outputs]):
        keep = [not (r and o is UNKNOWN) for r, o in zip(reads, outputs)]
        if not all(keep):
            positions = list(compress(positions, keep))
            inputs, outputs, calls, rets, reads = (
                list(compress(seq, keep)) for seq in (inputs, outputs, calls, rets, reads))
    return positions, inputs, outputs, calls, rets, reads


def _layout(model: Model, operations: Sequence[Operation]) -> _Layout | None:
    """Lay out a partition for :func:`searcher`; None when nothing is left to check.

    Calls sort before returns at equal times (as in Porcupine): equal timestamps are
    treated as overlapping, which never raises a false alarm.  Ties among calls or
    among returns keep call order.

    A read-only op whose output is unknown is left out: it is legal in any state and
    changes none, and it always fits between the ops that must precede it and those
    that must follow it (every one of the former returned before any of the latter
    was called), so it cannot make a history illegal.

    Built with comprehensions and C-level sorts rather than one Python loop per entry:
    on large easy histories this setup, not the search, is most of the cost.
    """
    positions, inputs, outputs, calls, rets, reads = _fields(model.read_only, operations)
    m = len(inputs)
    if m == 0:
        return None
    done = [r is not None for r in rets]
    all_done = all(done)
    if all_done:
        late = any(map(operator.lt, rets, calls))
    else:
        late = any(map(operator.lt, compress(rets, done), compress(calls, done)))
    if late:
        for position in positions:
            op = operations[position]
            if op.return_time is not None and op.return_time < op.call:
                raise ValueError(f"operation {op.index if op.index >= 0 else position} returns "
                                 f"(time {op.return_time}) before it is called (time {op.call})")
    if any(map(operator.gt, calls, islice(calls, 1, None))):  # not in call order: sort (stable)
        perm = sorted(range(m), key=calls.__getitem__)
        inputs, outputs, calls, rets, done = ([seq[p] for p in perm] for seq in (inputs, outputs, calls, rets, done))
        if reads is not None:
            reads = [reads[p] for p in perm]
        positions = [positions[p] for p in perm]

    # Entries in time order: calls are entries 0..m-1 (already in call order), returns
    # m+p; the stable sort keeps calls before returns at equal times, then call order.
    # The linked list itself is built by the search that runs (_links, or the C one).
    if all_done:
        order = list(range(2 * m))
    else:
        order = list(range(m))
        order += compress(range(m, 2 * m), done)
    times = calls + rets
    order.sort(key=times.__getitem__)

    typ = ([2] * m if reads is None else [1 if r else 2 for r in reads]) + [0] * m + [0, 3]
    if all_done:
        cid = list(range(m))
        match = list(range(m, 2 * m))
    else:
        cid = [c - 1 if d else -1 for c, d in zip(accumulate(done), done)]
        match = [m + p if d else -1 for p, d in enumerate(done)]
    pbit = [0] * m
    guard = [False] * m
    waits_for = [0] * m
    waits_for_done = [-1] * m
    if not all_done:
        # Pending ops with the same input and output are interchangeable once invoked
        # (none has a return to respect), so only orders that take them earliest-call
        # first need trying: an op of such a group may go only after the one called
        # before it.
        last_in_group: dict[Any, int] = {}
        bit = 1
        for p in compress(range(m), [not d for d in done]):
            pbit[p] = bit
            try:
                group = (inputs[p], outputs[p])
                waits_for[p] = w = last_in_group.get(group, 0)
                last_in_group[group] = bit
            except TypeError:  # unhashable input: no grouping, just more search
                w = 0
            if w:
                guard[p] = True
            bit <<= 1
    # Completed ops with the same input and output: if a was called before b and
    # returned before b, some linearization (if any exists) puts a first (swap them
    # in any that does not: a in b's earlier place meets fewer real-time constraints,
    # b in a's later place no more than a did).  So b waits for the latest-called op
    # of its group that also returned before it (looking back a bounded way).  Returns
    # at equal times count in entry order, which is call order: ``<=``.
    members: dict[Any, list[int]] = {}
    member_list = members.get
    for p in range(m) if all_done else compress(range(m), done):
        try:
            group = (inputs[p], outputs[p])
            group_members = member_list(group)
        except TypeError:
            continue
        if group_members is None:
            members[group] = [p]
            continue
        # the latest-called member first (it usually returned before p), then further back
        b = group_members[-1]
        r = rets[p]
        if rets[b] <= r:
            waits_for_done[p] = cid[b]
            guard[p] = True
        else:
            for b in reversed(group_members[-_LOOK_BACK:-1]):
                if rets[b] <= r:
                    waits_for_done[p] = cid[b]
                    guard[p] = True
                    break
        group_members.append(p)

    code = [_GENERIC] * m
    arg_a: list[Any] = [None] * m
    arg_b: list[Any] = [None] * m
    _inline(model.step, inputs, outputs, code, arg_a, arg_b)
    return _Layout(m, order, typ, match, inputs, outputs, code, arg_a, arg_b, cid, pbit, guard,
                   waits_for, waits_for_done, positions, bool(reads) and any(reads))


def _read_flags(read_only: Callable[[Any], bool], inputs: list[Any]) -> list[bool]:
    """``read_only(input)`` per op; the shipped models' test is inlined (the same ``==``)."""
    if read_only is models.is_read:
        kind_read = models.READ
        return [inp[0] == kind_read for inp in inputs]
    return [bool(read_only(inp)) for inp in inputs]


# Inlined steps of the shipped models (``checkers.models``): per call entry, what the
# model's step would do, so the search loop needs no function call for them.  The
# comparisons are the step functions' own (``==`` / ``!=``), so verdicts are the same.
_GENERIC, _READ_EQ, _SET_A, _CAS_TRUE, _CAS_FALSE, _APPEND_A, _SET_NONE = range(7)


def _inline(step: Callable[..., Any], inputs: list[Any], outputs: list[Any], code: list[int],
            arg_a: list[Any], arg_b: list[Any]) -> None:
    """For a shipped model's step function, fill each op's inline code and the input
    fields that step reads (``arg_a``, ``arg_b``); other models keep ``_GENERIC``."""
    read, write, cas, delete, append = models.READ, models.WRITE, models.CAS, models.DELETE, models.APPEND
    if step is models.register_step:
        for p, inp in enumerate(inputs):
            kind = inp[0]
            if kind == read:
                if outputs[p] is not UNKNOWN:
                    code[p] = _READ_EQ
            elif kind == write:
                code[p] = _SET_A
                arg_a[p] = inp[2]
            elif kind == cas:
                out = outputs[p]
                if out is not UNKNOWN:
                    arg_a[p] = inp[2]
                    if out:
                        code[p] = _CAS_TRUE
                        arg_b[p] = inp[3]
                    else:
                        code[p] = _CAS_FALSE
            elif kind == delete:
                code[p] = _SET_NONE
    elif step is models.porcupine_kv_step:
        for p, inp in enumerate(inputs):
            kind = inp[0]
            if kind == read:
                if outputs[p] is not UNKNOWN:
                    code[p] = _READ_EQ
            elif kind == write:
                code[p] = _SET_A
                arg_a[p] = inp[2]
            elif kind == append:
                code[p] = _APPEND_A
                arg_a[p] = inp[2]


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


def searcher(model: Model, operations: Sequence[Operation], *,
             max_cache: int = DEFAULT_MAX_CACHE) -> Generator[None, None, SearchOutcome]:
    """The search as a generator: it yields every :data:`CHECK_EVERY` steps so a driver
    can watch the clock, interleave partitions, or :func:`abandon` it, and returns
    the :class:`SearchOutcome` (as ``StopIteration.value``)."""
    if not operations:
        return SearchOutcome(CheckResult.OK)
    lay = _layout(model, operations)
    if lay is None:
        return SearchOutcome(CheckResult.OK)
    state = model.init()
    compiled = compiled_search() if model.equal is None else None
    if compiled is not None:
        try:
            fast = compiled.Search(lay.m, lay.order, lay.typ, lay.match, lay.cid, lay.pbit, lay.guard,
                                   lay.waits_for, lay.waits_for_done, lay.code, lay.arg_a, lay.arg_b,
                                   lay.inputs, lay.outputs, model.step, state, lay.has_reads, max_cache,
                                   CHECK_EVERY)
        except OverflowError:  # more pending ops or a wider window than 64-bit words hold
            pass
        else:
            return (yield from _search_compiled(fast, lay.m, lay.positions))
    return (yield from _search_python(model, lay, state, max_cache))


# ---- the compiled loop (optional) ----
#
# checkers/_fastwgl.c, built by setup.py where a C compiler and Python's headers exist.
# Without it, or with UKEHI_PURE_PYTHON set (to anything but "" or "0", as for the
# compiled reader in checkers.history), every partition goes through _search_python.
_compiled: Any = None  # the extension module once looked for; False when not used


def compiled_search() -> Any:
    """The compiled search module, or None when it is not built or UKEHI_PURE_PYTHON is set.
    Looked for once, on first use."""
    global _compiled
    if _compiled is None:
        _compiled = native.extension("checkers._fastwgl") or False
    return _compiled or None


def _search_compiled(fast: Any, m: int, positions: Sequence[int]) -> Generator[None, None, SearchOutcome]:
    """Drive a compiled search: it pauses where the Python loop yields, so drivers see the
    same generator."""
    run = fast.run
    while True:
        done = run()
        if done is not None:
            break
        try:
            yield
        except Abandon:
            entries, blocked, steps, cache_size = fast.best()
            return _entries_outcome(CheckResult.UNKNOWN, entries, blocked, m, positions, steps, cache_size)
    result, entries, blocked, steps, cache_size = done
    if result == 0:
        return SearchOutcome(CheckResult.OK, steps=steps, cache_size=cache_size)
    return _entries_outcome(CheckResult.ILLEGAL, entries, blocked, m, positions, steps, cache_size)


def _entries_outcome(result: CheckResult, entries: list[int], blocked_entry: int, m: int,
                     positions: Sequence[int], steps: int, cache_size: int) -> SearchOutcome:
    blocked = positions[blocked_entry % m] if blocked_entry >= 0 else -1  # a return entry is m + op
    return SearchOutcome(result, [positions[e] for e in entries], blocked, steps, cache_size)


def _search_python(model: Model, lay: _Layout, state: Any,
                   max_cache: int) -> Generator[None, None, SearchOutcome]:
    """The search loop in Python (see :func:`searcher`), from the initial ``state``."""
    (m, order, typ, match, inputs, outputs, code, arg_a, arg_b, cid, pbit, guard, waits_for,
     waits_for_done, positions, has_reads) = lay
    nxt, prv = _links(order, m)
    head = 2 * m

    step = model.step
    hashable = model.equal is None
    cache: set[Any] = set()
    cache_eq: dict[tuple[int, int, int], list[Any]] = {}
    equal = model.equal
    memo_add = cache.add

    k = 0
    window = 0
    pending = 0
    stack: tuple | None = None  # (entry, state, k, window, pending, parent)
    depth = 0
    best_depth = -1
    remembering = False  # the memo is filled from the first backtrack on
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
                return _outcome(CheckResult.UNKNOWN, best_stack, best_blocked, m, positions, steps,
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
                if not remembering:
                    # no backtracking yet: every configuration so far lies on the one path
                    # taken, each with one more op linearized than the last, so this one
                    # cannot have been seen (they go into the memo at the first backtrack)
                    fresh = True
                elif hashable:
                    # one hash: a set that grows got a new configuration
                    size = len(cache)
                    memo_add((nk, nw, npend, new_state))
                    fresh = len(cache) != size
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
            if not remembering and stack is not None:
                # The first backtrack: the memo gets every configuration reached so far
                # (this one and those on the stack, but not the initial one), as if each had
                # gone in when it was reached.
                remembering = True
                frame = stack
                remembered = [(k, window, pending, state)]
                while frame is not None and frame[5] is not None:
                    remembered.append((frame[2], frame[3], frame[4], frame[1]))
                    frame = frame[5]
                # frame[1..4] of a frame is the configuration before its op was lifted: the
                # one after the frame below it was lifted
                if hashable:
                    cache.update(remembered)
                else:
                    for ck, cw, cp, cs in remembered:
                        bucket = cache_eq.setdefault((ck, cw, cp), [])
                        if not any(equal(s, cs) for s in bucket):  # type: ignore[misc]
                            bucket.append(cs)
            if stack is None:
                return _outcome(CheckResult.ILLEGAL, best_stack, best_blocked, m, positions, steps,
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
                    return _outcome(CheckResult.ILLEGAL, best_stack, best_blocked, m, positions, steps,
                                    len(cache) + len(cache_eq))
            entry = nxt[entry]
            want = 2  # a resumed configuration has had its reads (read frames are popped above)
        elif t == 3:
            return SearchOutcome(CheckResult.OK, steps=steps, cache_size=len(cache) + len(cache_eq))
        else:  # a call of the kind this scan does not try
            if first_update < 0:
                first_update = entry
            entry = nxt[entry]


def _outcome(result: CheckResult, best_stack: tuple | None, blocked_entry: int, m: int,
             positions: Sequence[int], steps: int, cache_size: int) -> SearchOutcome:
    longest: list[int] = []
    frame = best_stack
    while frame is not None:
        longest.append(positions[frame[0]])  # frames hold call entries: the op itself
        frame = frame[5]
    longest.reverse()
    blocked = positions[blocked_entry % m] if blocked_entry >= 0 else -1  # a return entry is m + op
    return SearchOutcome(result, longest, blocked, steps, cache_size)
