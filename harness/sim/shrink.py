"""Shrinking a failing seed: delta debugging (Zeller's ddmin) over its schedule.

A seed's schedule is its nemesis steps and its client ops (``SimSettings.skip_faults`` /
``skip_ops`` leave some out; every other draw stays the same). The shrinker keeps the
seed, so the network, disk and timer randomness is the seed's, and looks for a smaller set
of fault steps, then of client ops, whose run still fails *the same checker* the original
failed (the first one, by name). It stops at a budget of wall seconds or runs and returns
the smallest failing schedule it saw: a 1-minimal one when the budget allowed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from .runner import SimResult, SimSettings, run_seed

__all__ = ["ShrinkResult", "ddmin", "shrink"]

T = TypeVar("T")


@dataclass
class ShrinkResult:
    seed: int
    checker: str
    settings: SimSettings  # the shrunk schedule (skip_faults, skip_ops)
    result: SimResult  # its run
    fault_steps: tuple[int, int]  # (kept, original)
    client_ops: tuple[int, int]
    runs: int = 0
    wall_seconds: float = 0.0
    complete: bool = False  # ddmin finished on both (else the budget ran out)
    log: list[str] = field(default_factory=list)


class _Budget(Exception):
    pass


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """The classic ddmin: a subset of ``items`` on which ``fails`` still holds, such that
    removing any single element makes it pass (when ``fails`` never raises). ``fails`` is
    never called on ``items`` itself (assumed failing)."""
    current = list(items)
    n = 2
    while len(current) >= 2:
        size = len(current) // n
        chunks = [current[i * size:(i + 1) * size] if i < n - 1 else current[i * size:] for i in range(n)]
        reduced = False
        for i in range(n):  # try each complement first (remove one chunk)
            complement = [x for j, c in enumerate(chunks) if j != i for x in c]
            if complement and fails(complement):
                current = complement
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            for c in chunks:  # then each chunk alone
                if len(c) < len(current) and fails(c):
                    current = c
                    n = 2
                    reduced = True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    if len(current) == 1 and fails([]):
        return []
    return current


def shrink(seed: int, settings: SimSettings, original: SimResult | None = None, *,
           budget_s: float = 60.0, max_runs: int = 200) -> ShrinkResult | None:
    """Shrink failing ``seed``; None when it does not fail (nothing to shrink)."""
    started = time.monotonic()
    if original is None:
        original = run_seed(seed, settings)
    failing = original.failing_checkers()
    if not failing:
        return None
    checker = failing[0]
    runs = 0
    log: list[str] = []
    best: dict[str, Any] = {"settings": settings, "result": original}

    def attempt(skip_faults: frozenset[int], only_ops: list[tuple[int, int]] | None) -> bool:
        nonlocal runs
        if runs >= max_runs or time.monotonic() - started > budget_s:
            raise _Budget
        runs += 1
        st = dataclasses.replace(settings, skip_faults=tuple(sorted(skip_faults)),
                                 only_ops=None if only_ops is None else tuple(sorted(only_ops)))
        r = run_seed(seed, st)
        ok = checker in r.failing_checkers()
        if ok:
            best["settings"], best["result"] = st, r
        return ok

    all_steps = list(range(original.fault_steps))
    complete = False
    try:
        kept = ddmin(all_steps, lambda keep: attempt(frozenset(all_steps) - set(keep), None))
        log.append(f"fault steps {len(all_steps)} -> {len(kept)}")
        skip_f = frozenset(all_steps) - set(kept)
        # The client ops of the run with the fewest faults that still failed.
        ops = list(best["result"].client_ops)
        kept_ops = ddmin(ops, lambda keep: attempt(skip_f, keep))
        log.append(f"client ops {len(ops)} -> {len(kept_ops)}")
        complete = True
    except _Budget:
        log.append(f"budget spent after {runs} runs")
    r: SimResult = best["result"]
    st: SimSettings = best["settings"]
    return ShrinkResult(seed=seed, checker=checker, settings=st, result=r,
                        fault_steps=(original.fault_steps - len(st.skip_faults), original.fault_steps),
                        client_ops=(len(r.client_ops), len(original.client_ops)), runs=runs,
                        wall_seconds=time.monotonic() - started, complete=complete, log=log)
