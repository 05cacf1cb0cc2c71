"""Porcupine's entry points: check operations or events against a model, per partition.

``check_operations(model, operations, timeout)`` answers ``ok``, ``illegal`` or
``unknown`` (the time budget ran out).  The ``*_verbose`` variants also return a
:class:`LinearizationInfo` with each partition's longest linearizable prefix, which
``checkers.visualize`` draws and ``checkers.counterexample`` explains.

Partitions (e.g. keys) are independent, so large inputs are spread over worker
processes; the first violation stops every worker (unless the caller wants every
failing partition).  A history of :data:`PARALLEL_START_OPS` operations or more is
split over forked processes at once (this process takes a share too); smaller ones
start in-process, where easy partitions finish at once, and only partitions still
running after a moment move to processes.  Forked children inherit the operations
and the model, so nothing big is pickled; only outcomes travel back.
"""

from __future__ import annotations

import collections
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Generator, Sequence

from checkers.model import CheckResult, Event, Model, Operation, events_to_operations
from checkers.wgl import DEFAULT_MAX_CACHE, SearchOutcome, StopFlag, abandon, searcher

# Partitions still being searched after this much CPU time in-process move to worker
# processes.
HANDOFF_SECONDS = 0.5
# Histories with at least this many operations (and two partitions or more) are
# spread over forked processes from the start.
PARALLEL_START_OPS = 10_000
# Slices of the round-robin, in yields of the searcher (each CHECK_EVERY steps): the
# first is long enough for a typical partition to finish in one go (a suspended search
# keeps its memo), and a partition that needs more gets up to the longest.
_FIRST_SLICE = 8
_MAX_SLICE = 64


@dataclass(slots=True)
class PartitionInfo:
    """One partition's operations and what the search found (``checked`` False: never ran)."""

    operations: list[Operation]
    outcome: SearchOutcome
    checked: bool = True

    @property
    def result(self) -> CheckResult:
        return self.outcome.result


@dataclass(slots=True)
class LinearizationInfo:
    """Everything a report needs: the model and every partition's outcome."""

    model: Model
    partitions: list[PartitionInfo] = field(default_factory=list)
    elapsed: float = 0.0

    def partial_linearizations(self) -> list[list[list[int]]]:
        """Per partition, the partial linearizations found (positions into its operations)."""
        return [[p.outcome.longest] if p.outcome.longest else [] for p in self.partitions]

    def failing(self) -> list[PartitionInfo]:
        return [p for p in self.partitions if p.result is CheckResult.ILLEGAL]


def combine(results: Sequence[CheckResult]) -> CheckResult:
    """Illegal beats unknown beats ok."""
    if CheckResult.ILLEGAL in results:
        return CheckResult.ILLEGAL
    if CheckResult.UNKNOWN in results:
        return CheckResult.UNKNOWN
    return CheckResult.OK


# ---- worker side ----

_worker_stop: Any = None


def _init_worker(stop: Any) -> None:
    global _worker_stop
    _worker_stop = stop


def _check_chunk(model: Model, chunk: list[tuple[int, list[Operation]]], deadline: float | None,
                 stop_on_violation: bool, max_cache: int) -> list[tuple[int, SearchOutcome]]:
    return _check_sequentially(model, chunk, deadline, _worker_stop, stop_on_violation, max_cache)[0]


def _check_sequentially(model: Model, chunk: list[tuple[int, list[Operation]]], deadline: float | None,
                        stop: StopFlag | None, stop_on_violation: bool, max_cache: int,
                        handoff_after: float | None = None,
                        claim: Any = None) -> tuple[list[tuple[int, SearchOutcome]], list[int]]:
    """Check partitions in one process, interleaved round-robin.

    One hard partition must not hide an easy violation in another (Porcupine runs
    partitions concurrently for the same reason), so each partition runs for a
    slice of steps in turn; a partition that needs more gets twice the slice next
    round, which costs at most twice the work of running it alone.

    Once this process has spent ``handoff_after`` seconds of CPU here, and every
    partition has had its first turn (0 means at once), if two or more are still
    running they are given
    up and their indices returned as the second value, to be checked in worker
    processes: only hard partitions are worth a process.  CPU time, not wall time,
    so that a busy machine does not make easy partitions look hard.

    ``claim`` (shared with other processes, see :class:`_Claims`): ``chunk`` is then
    every process's list, and this process takes its partitions from it a few at a time
    as it gets through them, each new one getting its first slice before any partition
    gets a second turn; so processes that run at different speeds (another job on a
    core, pages copied after a fork) still finish together.
    """
    done: list[tuple[int, SearchOutcome]] = []
    queue: collections.deque[tuple[int, Generator[None, None, SearchOutcome], int]] = collections.deque(
        (index, searcher(model, operations, max_cache=max_cache), _FIRST_SLICE)
        for index, operations in (chunk if claim is None else ()))
    last_round: int | None = None  # after a violation: how many partitions get one last short slice
    turns = 0
    cpu_start = time.process_time()
    while True:
        if claim is not None and last_round is None:
            taken = claim.take() if not queue or queue[0][2] != _FIRST_SLICE else range(0)
            queue.extendleft((index, searcher(model, operations, max_cache=max_cache), _FIRST_SLICE)
                             for index, operations in reversed([chunk[i] for i in taken]))
        if not queue:
            break
        if last_round is not None:
            if last_round == 0:
                break
            last_round -= 1
        index, gen, slice_ = queue.popleft()
        try:
            for _ in range(slice_ if last_round is None else 1):
                next(gen)
        except StopIteration as finished:
            outcome: SearchOutcome = finished.value
            done.append((index, outcome))
            if outcome.result is CheckResult.ILLEGAL and stop_on_violation and last_round is None:
                # Give every other partition one short slice, so that the violations
                # that are quick to find are all reported, then stop.
                if claim is not None:  # every partition no process has taken yet, too
                    queue.extend((chunk[i][0], searcher(model, chunk[i][1], max_cache=max_cache), _FIRST_SLICE)
                                 for i in claim.take_all())
                last_round = len(queue)
        else:
            queue.append((index, gen, min(slice_ * 2, _MAX_SLICE)))
        now = time.monotonic()
        if (deadline is not None and now > deadline) or (stop is not None and stop.is_set()):
            break
        turns += 1
        if (handoff_after is not None and len(queue) >= 2 and last_round is None
                and (turns >= len(chunk) or handoff_after == 0)
                and time.process_time() - cpu_start >= handoff_after):
            for _, gen, _ in queue:
                gen.close()
            return done, [index for index, _, _ in queue]
    if last_round is not None and stop is not None and hasattr(stop, "set"):
        stop.set()  # type: ignore[attr-defined]
    # Whatever is left was started or not: an abandoned search still reports its
    # longest prefix; one never started is left out (the caller marks it unchecked).
    for index, gen, slice_ in queue:
        if gen.gi_suspended:  # started and not finished (inspect's GEN_SUSPENDED)
            done.append((index, abandon(gen)))
        else:
            gen.close()
    return done, []


class _LocalFlag:
    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True


def _can_travel(model: Model) -> bool:
    """Whether the model can be sent to a worker (module-level functions, not lambdas)."""
    import pickle  # noqa: PLC0415 - imported when needed: `check` must start fast

    try:
        pickle.dumps(model)  # only to test multiprocessing's transport, never stored
    except Exception:  # noqa: BLE001 - any failure means: check in-process
        return False
    return True


def _chunks(indexed: list[tuple[int, list[Operation]]],
            n_chunks: int) -> list[list[tuple[int, list[Operation]]]]:
    """Spread partitions over chunks, largest first, each to the lightest chunk."""
    chunks: list[list[tuple[int, list[Operation]]]] = [[] for _ in range(n_chunks)]
    loads = [0] * n_chunks
    for index, ops in sorted(indexed, key=lambda pair: -len(pair[1])):
        j = loads.index(min(loads))
        chunks[j].append((index, ops))
        loads[j] += len(ops)
    return [c for c in chunks if c]


def _can_fork() -> bool:
    """Whether processes can be forked (POSIX); asked without importing multiprocessing."""
    return hasattr(os, "fork")


class _Claims:
    """Which of ``n`` partitions (positions in a list every process holds) are taken: a
    counter in shared memory.  Each take is a share of what is left (guided
    self-scheduling: big at first, one at a time at the end), so many tiny partitions
    cost few trips to the lock."""

    def __init__(self, ctx: Any, n: int, n_workers: int) -> None:
        self._next = ctx.Value("q", 0)
        self._n = n
        self._ways = 4 * n_workers

    def take(self) -> range:
        with self._next.get_lock():
            start = self._next.value
            end = min(self._n, start + max(1, (self._n - start) // self._ways))
            self._next.value = end
        return range(start, end)

    def take_all(self) -> range:
        with self._next.get_lock():
            start = self._next.value
            self._next.value = self._n
        return range(start, self._n)


def _forked_child(conn: Any, model: Model, chunk: list[tuple[int, list[Operation]]], deadline: float | None,
                  stop: Any, stop_on_violation: bool, max_cache: int, claim: Any = None) -> None:
    try:
        done, _ = _check_sequentially(model, chunk, deadline, stop, stop_on_violation, max_cache, claim=claim)
        conn.send((True, done))
    except BaseException as err:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            conn.send((False, err))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            conn.send((False, RuntimeError(f"{type(err).__name__}: {err}")))
    finally:
        conn.close()


def _check_forked(model: Model, indexed: list[tuple[int, list[Operation]]], deadline: float | None,
                  stop_on_violation: bool, max_cache: int, n_workers: int) -> dict[int, SearchOutcome]:
    """Spread partitions over ``n_workers`` processes: forked children (which inherit
    the model and the operations, so nothing is pickled on the way in) and this one."""
    import multiprocessing  # noqa: PLC0415 - imported when needed: `check` must start fast

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    # Every process holds the whole list (largest partitions first) and takes partitions
    # from it as it goes, so none waits for another that drew the slow share.
    shared = sorted(indexed, key=lambda pair: -len(pair[1]))
    n_processes = min(n_workers, len(indexed))
    claims = _Claims(ctx, len(shared), n_processes)
    children = []
    for _ in range(n_processes - 1):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_forked_child, args=(send, model, shared, deadline, stop, stop_on_violation,
                                                       max_cache, claims), daemon=True)
        proc.start()
        send.close()
        children.append((proc, receive))
    outcomes: dict[int, SearchOutcome] = {}
    failure: BaseException | None = None
    try:
        done, _ = _check_sequentially(model, shared, deadline, stop, stop_on_violation, max_cache, claim=claims)
        outcomes.update(done)
    except BaseException as err:
        stop.set()
        failure = err
    for proc, receive in children:
        try:
            ok, payload = receive.recv()
            # Its outcomes are in: the check need not wait while the child's memory is torn
            # down (a finished child is reaped now if it has exited, else by multiprocessing
            # at the next start or at exit).
            proc.join(0)
        except EOFError:
            proc.join()
            ok, payload = False, RuntimeError(f"a checker process died (exit code {proc.exitcode})")
        receive.close()
        if ok:
            outcomes.update(payload)
        elif failure is None:
            stop.set()
            failure = payload
    if failure is not None:
        raise failure
    return outcomes


def _check_in_workers(model: Model, indexed: list[tuple[int, list[Operation]]], deadline: float | None,
                      stop_on_violation: bool, max_cache: int, n_workers: int) -> dict[int, SearchOutcome]:
    import concurrent.futures  # noqa: PLC0415 - imported when needed: `check` must start fast
    import multiprocessing  # noqa: PLC0415

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    stop = ctx.Event()
    outcomes: dict[int, SearchOutcome] = {}
    n_workers = min(n_workers, len(indexed))
    with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(stop,)) as pool:
        futures = [pool.submit(_check_chunk, model, chunk, deadline, stop_on_violation, max_cache)
                   for chunk in _chunks(indexed, n_workers * 4)]
        for future in concurrent.futures.as_completed(futures):
            for index, outcome in future.result():
                outcomes[index] = outcome
            if stop.is_set():
                for other in futures:
                    other.cancel()
    return outcomes


def _run(model: Model, operations: Sequence[Operation], timeout: float | None, *,
         stop_on_violation: bool, workers: int | None, max_cache: int) -> LinearizationInfo:
    # No cyclic garbage collection while checking: the search makes hundreds of thousands of
    # small tuples (memo entries, stack frames), none in a cycle, and collections triggered by
    # them would scan every object of the caller's heap again and again (and, in forked
    # workers, copy the pages they touch); reference counting frees them all the same.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_gc_paused(model, operations, timeout, stop_on_violation=stop_on_violation,
                              workers=workers, max_cache=max_cache)
    finally:
        if was_enabled:
            gc.enable()


def _run_gc_paused(model: Model, operations: Sequence[Operation], timeout: float | None, *,
                   stop_on_violation: bool, workers: int | None, max_cache: int) -> LinearizationInfo:
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout}")
    started = time.monotonic()
    deadline = None if not timeout else started + timeout
    partitions = [p for p in model.partition(operations if isinstance(operations, list) else list(operations))
                  if p]
    indexed = list(enumerate(partitions))
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    parallel = n_workers > 1 and len(partitions) > 1
    forking = parallel and _can_fork()
    outcomes: dict[int, SearchOutcome]
    if forking and len(operations) >= PARALLEL_START_OPS:
        outcomes = _check_forked(model, indexed, deadline, stop_on_violation, max_cache, n_workers)
    else:
        # Everything starts in-process; partitions still running after a moment are
        # the hard ones, and only those go to worker processes (asking for workers
        # explicitly hands over at once).  Forked workers inherit everything; other
        # start methods must pickle the model, which lambdas prevent.
        can_hand_off = forking or (parallel and _can_travel(model))
        handoff_after = None if not can_hand_off else (0.0 if workers is not None else HANDOFF_SECONDS)
        done, unfinished = _check_sequentially(model, indexed, deadline, _LocalFlag(), stop_on_violation,
                                               max_cache, handoff_after)
        outcomes = dict(done)
        if unfinished:
            rest = [(i, partitions[i]) for i in unfinished]
            if forking:
                outcomes.update(_check_forked(model, rest, deadline, stop_on_violation, max_cache, n_workers))
            else:
                outcomes.update(_check_in_workers(model, rest, deadline, stop_on_violation, max_cache,
                                                  n_workers))
    info = LinearizationInfo(model)
    for index, ops in indexed:
        if index in outcomes:
            info.partitions.append(PartitionInfo(ops, outcomes[index]))
        else:  # stopped early (a violation elsewhere, or the time budget)
            info.partitions.append(PartitionInfo(ops, SearchOutcome(CheckResult.UNKNOWN), checked=False))
    info.elapsed = time.monotonic() - started
    return info


def check_operations(model: Model, operations: Sequence[Operation], timeout: float | None = None, *,
                     workers: int | None = None, max_cache: int = DEFAULT_MAX_CACHE) -> CheckResult:
    """Is this history linearizable?  ``timeout`` in seconds (None or 0: no limit).

    Stops at the first partition found illegal.  ``workers``: processes to use
    (default: all cores, and only for large inputs; 1 keeps it in-process).
    """
    info = _run(model, operations, timeout, stop_on_violation=True, workers=workers, max_cache=max_cache)
    return combine([p.result for p in info.partitions])


def check_operations_verbose(model: Model, operations: Sequence[Operation], timeout: float | None = None,
                             *, workers: int | None = None, stop_on_violation: bool = False,
                             max_cache: int = DEFAULT_MAX_CACHE) -> tuple[CheckResult, LinearizationInfo]:
    """Like :func:`check_operations`, and also the partial linearizations of every partition.

    By default every partition is checked, so every failing key gets a counterexample.
    """
    info = _run(model, operations, timeout, stop_on_violation=stop_on_violation, workers=workers,
                max_cache=max_cache)
    return combine([p.result for p in info.partitions]), info


def check_events(model: Model, events: Sequence[Event], timeout: float | None = None, *,
                 workers: int | None = None) -> CheckResult:
    """Porcupine's ``CheckEvents``: the history as a list of call and return events."""
    return check_operations(model, events_to_operations(events), timeout, workers=workers)


def check_events_verbose(model: Model, events: Sequence[Event], timeout: float | None = None, *,
                         workers: int | None = None) -> tuple[CheckResult, LinearizationInfo]:
    return check_operations_verbose(model, events_to_operations(events), timeout, workers=workers)
