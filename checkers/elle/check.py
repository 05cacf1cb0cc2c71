"""The checker: transactions -> version orders -> dependency graph -> cycles -> verdict."""

from __future__ import annotations

import gc
import time
from typing import Any, Iterable

from checkers.elle.graph import (EDGE_NAMES, PROCESS, Graph, component_subgraphs,
                                 cycles_in_component, strongly_connected)
from checkers.elle.list_append import ListAppend
from checkers.elle.models import check_models, ruled_out, weakest
from checkers.elle.rw_register import RwRegister
from checkers.elle.svg import cycle_svg, reads_svg
from checkers.elle.txn import Txn, transactions
from checkers.history import Op

ELLE_MODELS = ("list-append", "rw-register")
DEFAULT_CONSISTENCY = ("strict-serializable",)


def check(history: Iterable[Op], model: str = "list-append", *,
          consistency_models: Iterable[str] = DEFAULT_CONSISTENCY, sequential_keys: bool = False,
          linearizable_keys: bool = False, time_limit: float | None = 30.0,
          max_examples: int = 8, pictures: int = 3) -> dict[str, Any]:
    """Judge a transactional history; ``{"valid", "anomaly_types", "anomalies", "not", ...}``.

    ``valid`` is false when an anomaly rules out one of ``consistency_models``; "unknown"
    when the history has no ``ok`` transaction. ``anomalies`` maps each type to at most
    ``max_examples`` instances (``counts`` has how many there were); cycle anomalies carry
    ``steps`` (one sentence per edge) and, for the first ``pictures`` of each type, ``svg``
(incompatible-order instances too: the two reads drawn). Each instance has ``ops``, the
invocation indexes of its transactions; ``violation_indexes`` are the history indexes at
which the anomalies found became visible.
    ``time_limit`` bounds the cycle search (past it, each component gets one cycle of any
    class).
    """
    wanted = check_models(consistency_models)
    # the graph is millions of small objects and no cycles of them: the cyclic garbage
    # collector would walk them all over and over, for nothing (3x slower at 100k txns)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(history, model, wanted, sequential_keys, linearizable_keys, time_limit,
                      max_examples, pictures)
    finally:
        if enabled:
            gc.enable()


def _check(history: Iterable[Op], model: str, wanted: tuple[str, ...], sequential_keys: bool,
           linearizable_keys: bool, time_limit: float | None, max_examples: int,
           pictures: int) -> dict[str, Any]:
    started = time.monotonic()
    deadline = None if not time_limit else started + time_limit
    txns, failed = transactions(history)
    if model == "list-append":
        inference: Any = ListAppend(txns, failed)
    elif model == "rw-register":
        inference = RwRegister(txns, failed, sequential_keys=sequential_keys,
                               linearizable_keys=linearizable_keys)
    else:
        raise ValueError(f"unknown transactional model {model!r}; choose {' or '.join(ELLE_MODELS)}")
    n = len(txns)
    graph = Graph(n)
    inference.add_edges(graph)
    graph.add_many(*process_order(txns), PROCESS)
    graph.add_realtime([t.invoke for t in txns], [t.complete for t in txns])
    built = time.monotonic()
    comps = strongly_connected(graph.size, graph.src, graph.dst)
    sccs = time.monotonic()
    anomalies: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in inference.anomalies.items()}
    if comps:
        for sub in component_subgraphs(graph, comps):
            for cycle in cycles_in_component(sub, n, deadline=deadline):
                name = _classify_name(cycle)
                anomalies.setdefault(name, []).append(
                    _describe_cycle(cycle, txns, inference, len(anomalies.get(name, ())) < pictures))
    for inst in anomalies.get("incompatible-order", ())[:pictures]:
        if "reads" in inst and len(inst.get("txns", ())) == len(inst["reads"]):
            inst["svg"] = reads_svg(inst["key"], list(zip(inst["txns"], inst["reads"])),
                                    title=f"key {inst['key']}: incompatible reads")
    by_name = {t.name: t for t in txns}
    by_name.update((t.name, t) for t in failed)
    first_seen = sorted({locate(inst, by_name) for insts in anomalies.values() for inst in insts} - {-1})
    counts = {k: len(v) for k, v in anomalies.items() if v}
    types = sorted(counts)
    out_models = ruled_out(types)
    ok_count = sum(1 for t in txns if t.type == "ok")
    if ok_count == 0:
        valid: Any = "unknown"
    else:
        valid = not any(m in out_models for m in wanted)
    result: dict[str, Any] = {
        "valid": valid,
        "model": model,
        "consistency_models": list(wanted),
        "anomaly_types": types,
        "anomalies": {k: anomalies[k][:max_examples] for k in types},
        "counts": counts,
        "not": weakest(out_models),
        "also_not": sorted(out_models - set(weakest(out_models))),
        # history indexes at which each anomaly found became visible (its last transaction
        # completed): regress's "first violation" is the earliest
        "violation_indexes": first_seen,
        "txns": {"ok": ok_count, "info": n - ok_count, "fail": len(failed),
                 # of the fails: info ones the node data shows never committed (whitebox/resolve.py)
                 **({"resolved": resolved} if (resolved := sum(1 for t in failed if t.resolved)) else {})},
        "graph": {"nodes": graph.size, "edges": len(graph), "sccs": len(comps),
                  "seconds": {"build": round(built - started, 3), "scc": round(sccs - built, 3),
                              "total": round(time.monotonic() - started, 3)}},
    }
    result["explanation"] = explain(result)
    return result


def process_order(txns: list[Txn]) -> tuple[list[int], list[int]]:
    """Process-order edges: each transaction follows its process's last ``ok`` one.

    Nothing follows an ``info`` transaction: it may take effect at any time after its
    invocation, even after the process's next transaction (when a client goes on under
    the same process after a timeout; our interpreter retires the process, other
    histories may not), so an edge out of it could make a cycle that did not happen.
    """
    last_ok: dict[Any, int] = {}
    src: list[int] = []
    dst: list[int] = []
    for t in txns:  # invocation order
        prev = last_ok.get(t.process)
        if prev is not None:
            src.append(prev)
            dst.append(t.id)
        if t.type == "ok":
            last_ok[t.process] = t.id
    return src, dst


# fields of an anomaly instance that name transactions (``T<invocation index>``)
_TXN_FIELDS = ("txn", "writer", "txns", "cycle")


def locate(inst: dict[str, Any], by_name: dict[str, Txn]) -> int:
    """Add ``ops`` (the invocation indexes of the transactions an anomaly involves) to
    ``inst`` and return the history index at which it became visible: the last of their
    completions (an ``info`` transaction counts at its invocation, all we know of it)."""
    names: set[str] = set()
    for f in _TXN_FIELDS:
        v = inst.get(f)
        if isinstance(v, str):
            names.add(v)
        elif isinstance(v, (list, dict)):
            names.update(x for x in v if isinstance(x, str))
    found = [by_name[n] for n in names if n in by_name]
    inst["ops"] = sorted(t.invoke for t in found)
    return max((t.complete if t.complete is not None else t.invoke for t in found), default=-1)


def _classify_name(cycle: list[tuple[int, int, int]]) -> str:
    from checkers.elle.graph import classify
    return classify(cycle)


def _describe_cycle(cycle: list[tuple[int, int, int]], txns: list, inference: Any,
                    picture: bool) -> dict[str, Any]:
    steps = []
    for a, b, t in cycle:
        kind = EDGE_NAMES[t]
        A, B = txns[a], txns[b]
        if kind == "process":
            key, text = None, (f"{A.name} < {B.name} because process {A.process} ran {A.name} and "
                               f"then {B.name}")
        elif kind == "realtime":
            key, text = None, (f"{A.name} < {B.name} because {A.name} completed (history index "
                               f"{A.complete}, {A.complete_time / 1e9:.3f} s) before {B.name} began "
                               f"(index {B.invoke}, {B.invoke_time / 1e9:.3f} s)")
        else:
            key, text = inference.explain(a, b, t)
        steps.append({"from": A.name, "to": B.name, "type": kind, "key": key, "explanation": text})
    described = {txns[a].name: txns[a].describe() for a, _, _ in cycle}
    out: dict[str, Any] = {"cycle": [s["from"] for s in steps] + [steps[0]["from"]],
                           "steps": steps, "txns": described}
    if picture:
        out["svg"] = cycle_svg(steps, described, title=" -> ".join(out["cycle"]))
    return out


def explain(result: dict[str, Any]) -> str:
    """A few lines a person can read: the verdict, the weakest models ruled out, and the
    first instance of each anomaly."""
    if not result["anomaly_types"]:
        if result["valid"] == "unknown":
            return "no transaction completed ok: nothing to judge"
        return (f"no anomalies in {result['txns']['ok']} ok transactions: consistent with "
                f"{', '.join(result['consistency_models'])}")
    counts = result["counts"]
    lines = ["anomalies: " + ", ".join(f"{t} ({counts[t]})" for t in result["anomaly_types"]),
             f"not {', '.join(result['not'])}" + (f" (nor {', '.join(result['also_not'])})"
                                                   if result["also_not"] else "")]
    for t in result["anomaly_types"]:
        first = result["anomalies"][t][0]
        if "steps" in first:
            lines.append(f"{t}: {' -> '.join(first['cycle'])}")
            lines.extend(f"  {s['explanation']}" for s in first["steps"])
            lines.extend(f"    {d}" for d in first["txns"].values())
        else:
            lines.append(f"{t}: {first['explanation']}")
    return "\n".join(lines)
