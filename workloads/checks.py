"""The checkers a workload asks for, as ``check(history, options) -> result`` callables.

Options the harness passes: ``time_limit`` (seconds for the linearizability
search), ``run_dir`` (where the counterexample page goes when invalid) and
``shading`` (the run's fault specs, so that page shows when faults were active).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from checkers.fencing import check_fencing
from checkers.history import Op
from checkers.linearizability import analyze
from checkers.locks import check_lock_exclusion, clock_slack_from_history
from checkers.stats import check_stats
from checkers.visualize import visualize

from .base import Check

COUNTEREXAMPLE_PAGE = "linearizability.html"


def _linearizability(history: Sequence[Op], model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    # all_failures (default True: regress times the earliest violation over every failing key);
    # `ukehi-jepsen run` passes False unless --all-failures, to stop at the first violation.
    analysis = analyze(history, model, time_limit=options.get("time_limit"),
                       all_failures=options.get("all_failures", True))
    result = dict(analysis.result)
    run_dir = options.get("run_dir")
    if result["valid"] is False and run_dir:
        page = Path(run_dir) / COUNTEREXAMPLE_PAGE
        # the history and the run's fault specs: the page names each process's node and shades faults
        visualize(analysis.model, analysis.info, str(page), analysis.counterexamples,
                  history=history, shading=options.get("shading"))
        result["page"] = page.name
    return result


def linearizable(model: str) -> Check:
    def check(history: Sequence[Op], options: Mapping[str, Any]) -> dict[str, Any]:
        return _linearizability(history, model, options)

    return check


def stats() -> Check:
    def check(history: Sequence[Op], options: Mapping[str, Any]) -> dict[str, Any]:
        return check_stats(history)

    return check


def fencing(per_lock_tokens: bool = False) -> Check:
    """Token uniqueness and order, stale writes, and fenced-register linearizability.
    ``per_lock_tokens``: tokens are unique and ordered per lock, not across locks (a sharded
    cluster: each shard's Raft group mints its own tokens)."""

    def check(history: Sequence[Op], options: Mapping[str, Any]) -> dict[str, Any]:
        linear = _linearizability(history, "fenced-register", options)
        return check_fencing(history, time_limit=options.get("time_limit"), linearizability=linear,
                             per_key_tokens=per_lock_tokens)

    return check


def lock_exclusion(ttl_ms: float) -> Check:
    """No two owners' leases of one lock overlap; a free lock is not refused (checkers/locks.py).

    Option ``clock_slack_ms``: how far the nodes' clocks may disagree (lease TTLs are stamped
    with the leader's clock, so a clock fault can shorten a lease); without it, the slack the
    run's own clock faults call for (``clock_slack_from_history``)."""

    def check(history: Sequence[Op], options: Mapping[str, Any]) -> dict[str, Any]:
        slack = options.get("clock_slack_ms")
        return check_lock_exclusion(history, ttl_ms=ttl_ms, clock_slack_ms=(
            slack if slack is not None else clock_slack_from_history(history, ttl_ms)))

    return check
