"""Judge a stored run: run every checker of its workload over its history, then render.

Used at the end of ``run`` and by ``analyze``, so a stored run is always
re-checkable from ``test.json`` and ``history.jsonl`` alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

from checkers.availability import availability_checker
from checkers.probes import PROBES_FILE, probes_checker
from checkers.results import merge_valid
from checkers.shard_availability import unaffected_shards_checker, wanted as wants_unaffected_shards
from checkers.whitebox import sharded_whitebox_checkers, whitebox_checkers
from checkers.whitebox.resolve import JUDGE_RESOLVED_VIEW, RESOLVABLE, Resolution, judge_resolved, resolve_from_files

from .registry import SHADING, WORKLOADS, damages_wal, wal_policy_checker
from .report import render_all
from .sharding import is_sharded
from .spec import TestSpec
from .store import RunDir, load_history, load_spec


def _fault_checkers(spec: TestSpec, run: RunDir) -> dict[str, Any]:
    """Checkers a run needs because of its faults, not its workload: after WAL damage, whether
    each damaged node kept its CorruptionPolicy's promise (read from the node logs); while the
    rebalance nemesis moved shards, whether the other shards stayed available (the history)."""
    out: dict[str, Any] = {}
    if wants_unaffected_shards(spec.nemeses, spec.node_options):
        out["unaffected-shards"] = unaffected_shards_checker(spec.workload, int(spec.node_options["shards"]))
    if not damages_wal(spec.nemeses):
        return out
    logs = {n: run.path / "nodes" / n / "node.log" for n in spec.nodes}
    return {**out, "corruption-policy": wal_policy_checker(spec.nemeses, logs, spec.corruption_policy)}


def _run_checkers(spec: TestSpec, run: RunDir) -> dict[str, Any]:
    """Checkers every run gets: did the cluster of the build under test serve at all
    (checkers/availability.py; a build that never serves is invalid, not unknown), and,
    where the bad-input battery ran (a run older than it, or stopped before its final phase,
    has no probes.jsonl), did every node refuse bad input (checkers/probes.py)."""
    out = {"availability": availability_checker(run.path, spec.time_limit)}
    if (run.path / PROBES_FILE).exists():
        out["bad-input"] = probes_checker(run.path)
    return out


#: set (to anything but "" or 0) to judge the recorded history only, e.g. to measure what the
#: resolution adds: `UKEHI_JEPSEN_NO_RESOLVE=1 ukehi-jepsen analyze RUN`
NO_RESOLVE_ENV = "UKEHI_JEPSEN_NO_RESOLVE"


def _resolution(spec: TestSpec, run: RunDir, history: list[Any]) -> Resolution | None:
    """Which info writes of the run provably never committed, from every node's files; None when
    not asked for (the environment variable) or not possible (no node files, a sharded run)."""
    if os.environ.get(NO_RESOLVE_ENV, "") not in ("", "0"):
        return None
    base = run.path / "nodes"
    if spec.workload not in RESOLVABLE or is_sharded(spec.node_options) or not base.is_dir():
        return None
    if spec.leave_running:
        return Resolution(refused="the nodes were left running: their files may still change")
    names = list(dict.fromkeys([*spec.nodes, *sorted(p.name for p in base.iterdir() if p.is_dir())]))
    return resolve_from_files(base, names, history, spec.workload, spec.nodes)


def check_run(run: RunDir, *, time_limit: float | None = None, ignore_torn_tail: bool = False,
              all_failures: bool = True) -> dict[str, Any]:
    """Raises StoreError (one line) when test.json or the history cannot be read.

    ``all_failures`` (default, what regress relies on): the linearizability checker names
    every failing key; False stops at the first violation (`ukehi-jepsen run` by default).

    The checkers in ``JUDGE_RESOLVED_VIEW`` judge the history with each info write that the
    node files show never committed turned into a fail (``results.json`` ``resolution`` says
    how many; history.jsonl stays as recorded)."""
    spec = load_spec(run)
    history, history_note = load_history(run, ignore_torn_tail=ignore_torn_tail)
    # Only the checker list is needed here, not live clients.
    workload = WORKLOADS[spec.workload]([], spec.concurrency, spec.workload_options)
    shading = [SHADING[n] for n in spec.nemeses if n in SHADING]
    options = {"time_limit": time_limit if time_limit is not None else 120.0,
               "run_dir": str(run.path), "shading": shading, "all_failures": all_failures}
    results: dict[str, Any] = {}
    # What the nodes persisted and logged. A sharded node has a Raft log per group: each
    # group is judged as its own cluster (checkers/whitebox check_sharded_nodes).
    if is_sharded(spec.node_options):
        whitebox = sharded_whitebox_checkers(run.path, spec.nodes, spec.workload, int(spec.node_options["shards"]))
    else:
        whitebox = whitebox_checkers(run.path, spec.nodes, spec.workload)
    resolution = _resolution(spec, run, history)
    view = resolution.view(history) if resolution is not None else history
    used_by: list[str] = []
    for name, check in {**workload.checkers, **_fault_checkers(spec, run), **_run_checkers(spec, run), **whitebox}.items():
        started = time.monotonic()
        try:
            if resolution is not None and name in JUDGE_RESOLVED_VIEW and name in workload.checkers:
                used_by.append(name)
                # the recorded history, for "would it be valid without the resolution?" (no
                # run_dir: its pages are the resolved view's)
                raw_options = {k: v for k, v in options.items() if k != "run_dir"}
                result = judge_resolved(check, history, view, resolution, options, raw_options)
            else:
                result = check(history, options)
        except Exception as err:  # noqa: BLE001 - a checker crash is an unknown verdict, not a pass
            result = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
        result["seconds"] = round(time.monotonic() - started, 3)
        results[name] = result
    verdict = {"valid": merge_valid(r.get("valid", "unknown") for r in results.values()),
               "checkers": results, "ops": sum(1 for op in history if op.type == "invoke" and op.is_client)}
    if resolution is not None:
        verdict["resolution"] = {**resolution.summary(), "used_by": used_by}
    if history_note:
        verdict["history_note"] = history_note
    run.write_json("results.json", verdict)
    render_all(history, run.path, shading)
    return verdict
