"""The linearizability checker as the harness uses it: a history in, a result dict out.

``check_linearizability(history, model)`` returns
``{"valid": True | False | "unknown", "checker": "linearizability", "model", ...}``
with, when invalid, a counterexample per failing key (``failures``) and a short
``explanation``.  :func:`analyze` also hands back the search's
:class:`~checkers.checker.LinearizationInfo` for the HTML page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from checkers import counterexample
from checkers.checker import LinearizationInfo, check_operations_verbose
from checkers.history import Op
from checkers.mapping import PROJECT, Conventions, to_operations
from checkers.model import CheckResult, Model
from checkers.models import make_model

DEFAULT_TIME_LIMIT = 60.0
# Failing keys summarised in the explanation text (all are in "failures").
MAX_EXPLAINED = 3


@dataclass
class Analysis:
    """The result dict plus what produced it (for reports and the HTML page)."""

    result: dict[str, Any]
    model: Model
    info: LinearizationInfo
    counterexamples: list[counterexample.Counterexample] = field(default_factory=list)


def analyze(history: Sequence[Op], model: str | Model = "cas-register", *, initial: Any = None,
            time_limit: float | None = DEFAULT_TIME_LIMIT, conventions: Conventions = PROJECT,
            workers: int | None = None, all_failures: bool = True) -> Analysis:
    """Check ``history`` under ``model`` (a name from ``checkers.models`` or a :class:`Model`
    whose name is one of them, which says how the history's f names map to inputs).

    ``all_failures`` (the default here, which regression timing relies on) searches every
    partition, so the report names every failing key; False stops at the first violation
    found (``ukehi-jepsen check`` and ``run`` without ``--all-failures``): the verdict is
    the same, the report names the key(s) found by then."""
    m = make_model(model, initial) if isinstance(model, str) else model
    operations = to_operations(history, m.name, conventions)
    # With all_failures every partition is searched, not only up to the first violation: the
    # report names every failing key, and the earliest violation (what a regression suite
    # times) is the real one, not whichever key a worker happened to finish first. Valid
    # histories cost the same either way.
    verdict, info = check_operations_verbose(m, operations, time_limit, workers=workers,
                                             stop_on_violation=not all_failures)
    failing = info.failing()
    cxs = [counterexample.build(m, p) for p in failing]
    unfinished = [p for p in info.partitions if p.result is CheckResult.UNKNOWN]
    pending = sum(1 for op in operations if op.pending)
    result: dict[str, Any] = {
        "valid": {CheckResult.OK: True, CheckResult.ILLEGAL: False, CheckResult.UNKNOWN: "unknown"}[verdict],
        "checker": "linearizability",
        "model": m.name,
        "operations": len(operations),
        "pending": pending,
        "partitions": len(info.partitions),
        "elapsed_s": round(info.elapsed, 3),
        "failures": [counterexample.to_dict(m, cx) for cx in cxs],
    }
    # The search splits the history into parts it checks one by one: one per key for the keyed
    # models. The text calls them keys ("partition" means a network partition everywhere else);
    # the result's field keeps its name, "partitions", for the readers of results.json.
    unit = ("key(s)" if any(_partition_key(p.operations) is not None for p in info.partitions)
            else "independent part(s)")
    if verdict is CheckResult.OK:
        result["explanation"] = (f"linearizable: {len(operations)} operation(s) ({pending} pending) on "
                                 f"{len(info.partitions)} {unit}, checked in {info.elapsed:.2f} s")
    elif verdict is CheckResult.ILLEGAL:
        not_checked = sum(1 for p in info.partitions if not p.checked or p.result is CheckResult.UNKNOWN)
        if all_failures:
            tail = (f"\n({not_checked} other {unit} not finished within the time limit)"
                    if not_checked else "")
        else:
            result["stopped_at_first_violation"] = True
            tail = (f"\n(stopped at the first violation: {not_checked} other {unit} not checked "
                    "to the end; --all-failures names every failing key)" if not_checked else "")
        shown = "\n".join(counterexample.summary(m, cx) for cx in cxs[:MAX_EXPLAINED])
        if len(cxs) > MAX_EXPLAINED:
            shown += f"\n... and {len(cxs) - MAX_EXPLAINED} more failing {unit} (see failures)"
        result["explanation"] = "not linearizable:\n" + shown + tail
    else:
        keys = [counterexample._jsonable(_partition_key(p.operations)) for p in unfinished]
        result["unknown_keys"] = keys[:20]
        limit = "no" if not time_limit else f"the {time_limit:g} s"
        result["explanation"] = (f"unknown: {limit} time limit ran out with {len(unfinished)} {unit} "
                                 f"unfinished (keys {keys[:5]}{'...' if len(keys) > 5 else ''}); "
                                 "give it more time (--time-limit) or check a shorter history")
    return Analysis(result, m, info, cxs)


def _partition_key(operations: Sequence[Any]) -> Any:
    first = operations[0].input if operations else None
    return first[1] if isinstance(first, tuple) and len(first) > 1 else None


def check_linearizability(history: Sequence[Op], model: str | Model = "cas-register", *,
                          initial: Any = None, time_limit: float | None = DEFAULT_TIME_LIMIT,
                          conventions: Conventions = PROJECT, workers: int | None = None,
                          all_failures: bool = True) -> dict[str, Any]:
    """Judge ``history`` under ``model``; see the module docstring for the result's shape."""
    return analyze(history, model, initial=initial, time_limit=time_limit, conventions=conventions,
                   workers=workers, all_failures=all_failures).result
