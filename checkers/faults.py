"""When faults were active: windows and instants from the nemesis ops of a history.

A :class:`FaultSpec` says which nemesis ``f`` names open a fault window, which
close it, and which are instantaneous; nemesis packages describe themselves with
one (``nemeses.package.Shading`` has the same fields and is accepted as is, and so
is its ``to_dict()`` form, e.g. read back from ``test.json``). Any ``start-X`` op
without a spec is paired with ``stop-X`` under the name ``X``.

A window runs from the start op's invocation (the fault may act from then on) to
the stop op's completion (it certainly ended by then); a window still open at the
end of the history runs to its end. Every window and instant carries both clocks:
seconds since the test started (plots, the timeline) and positions in the history
(the counterexample page, whose time axis is history order), plus a short
``detail`` of what the fault hit, read from the op's recorded value.

This lives with the checkers (it needs nothing but the history type) so that both
the harness's report and the counterexample page read faults the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from checkers.history import NEMESIS, Op

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class FaultSpec:
    name: str
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    instant: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaultWindow:
    name: str
    start_s: float
    end_s: float
    open_ended: bool = False  # never stopped within the history
    start_pos: int = -1  # position in the history of the start op's invocation
    end_pos: int = -1  # position of the stop op's completion (the last position when open-ended)
    detail: str = ""  # what the start op hit, e.g. "n1 | n2 n3" or "n1"


@dataclass(frozen=True)
class FaultInstant:
    name: str
    f: str
    t_s: float
    pos: int = -1
    detail: str = ""


@dataclass(frozen=True)
class _NemesisOp:
    f: str
    type: str
    start_s: float
    end_s: float
    start_pos: int
    end_pos: int
    value: Any


def coerce_specs(specs: Iterable[Any] | None) -> list[FaultSpec]:
    """FaultSpec from FaultSpec, anything with name/start/stop/instant attributes, or dicts."""
    out: list[FaultSpec] = []
    for s in specs or ():
        if isinstance(s, FaultSpec):
            out.append(s)
            continue
        get = s.get if isinstance(s, Mapping) else (lambda k, d=None, s=s: getattr(s, k, d))
        name = get("name")
        if not isinstance(name, str):
            raise ValueError(f"a fault shading spec needs a name, got {s!r}")
        out.append(FaultSpec(name, tuple(get("start", ()) or ()), tuple(get("stop", ()) or ()),
                             tuple(get("instant", ()) or ())))
    return out


def _nemesis_ops(history: Sequence[Op]) -> list[_NemesisOp]:
    """Each nemesis invocation with its completion (the nemesis has one op at a time); a lone
    completion stands alone, an invocation never completed ends at the end of the history."""
    out: list[_NemesisOp] = []
    pending: tuple[int, Op] | None = None
    last_pos = len(history) - 1
    last_time = max((op.time for op in history), default=0)
    for pos, op in enumerate(history):
        if op.process != NEMESIS:
            continue
        if op.type == "invoke":
            if pending is not None:  # invoked again without completing: keep the first visible
                ppos, inv = pending
                out.append(_NemesisOp(inv.f, "info", inv.time / NS_PER_S, op.time / NS_PER_S, ppos, pos,
                                      inv.value))
            pending = (pos, op)
            continue
        ppos, inv = pending if pending is not None else (pos, op)
        pending = None
        value = op.value if op.value is not None else inv.value
        out.append(_NemesisOp(inv.f, op.type, inv.time / NS_PER_S, op.time / NS_PER_S, ppos, pos, value))
    if pending is not None:
        ppos, inv = pending
        out.append(_NemesisOp(inv.f, "info", inv.time / NS_PER_S, last_time / NS_PER_S, ppos, last_pos,
                              inv.value))
    out.sort(key=lambda n: (n.start_s, n.start_pos))
    return out


def _names(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return [str(value)] if isinstance(value, str) else []


def describe_fault_value(value: Any) -> str:
    """A few words on what a fault op hit, from the value the nemesis recorded: the sides of a
    partition, the nodes killed, paused, skewed or damaged; "" when the value says nothing."""
    if not isinstance(value, Mapping):
        return ""
    components = value.get("components")
    if isinstance(components, (list, tuple)) and components:
        return " | ".join(" ".join(_names(c)) for c in components)
    for key in ("killed", "paused", "isolated", "nodes", "targets", "damaged", "victims", "offsets",
                "rates", "started", "resumed", "healed"):
        names = _names(value.get(key))
        if names:
            return " ".join(names)
    target = value.get("target")
    return str(target) if isinstance(target, str) else ""


def fault_events(history: Sequence[Op], specs: Iterable[Any] | None = None
                 ) -> tuple[list[FaultWindow], list[FaultInstant]]:
    """The fault windows and instants a history's nemesis ops describe under SPECS."""
    spec_list = coerce_specs(specs)
    starts = {f: s.name for s in spec_list for f in s.start}
    stops = {f: s.name for s in spec_list for f in s.stop}
    instants = {f: s.name for s in spec_list for f in s.instant}
    nemesis = _nemesis_ops(history)
    for p in nemesis:  # generic start-X / stop-X pairs the specs did not claim
        for prefix, table in (("start-", starts), ("stop-", stops)):
            if p.f.startswith(prefix) and p.f not in starts and p.f not in stops and p.f not in instants:
                table[p.f] = p.f[len(prefix):]
    end = max((op.time for op in history), default=0) / NS_PER_S
    open_at: dict[str, _NemesisOp] = {}
    windows: list[FaultWindow] = []
    points: list[FaultInstant] = []
    for p in nemesis:
        if p.type == "fail":
            continue  # a fault op that certainly did not happen opens or closes nothing
        if p.f in stops and stops[p.f] in open_at:
            name = stops[p.f]
            first = open_at.pop(name)
            windows.append(FaultWindow(name, first.start_s, p.end_s, start_pos=first.start_pos,
                                       end_pos=p.end_pos, detail=describe_fault_value(first.value)))
        elif p.f in starts:
            open_at.setdefault(starts[p.f], p)
        elif p.f in instants:
            points.append(FaultInstant(instants[p.f], p.f, p.end_s, p.end_pos, describe_fault_value(p.value)))
    for name, first in open_at.items():
        windows.append(FaultWindow(name, first.start_s, max(end, first.start_s), open_ended=True,
                                   start_pos=first.start_pos, end_pos=len(history) - 1,
                                   detail=describe_fault_value(first.value)))
    windows.sort(key=lambda w: (w.start_s, w.name))
    return windows, points


def process_nodes(history: Iterable[Op]) -> dict[int | str, str]:
    """Client process -> the node its client is bound to, from the ``node`` field the harness
    records on client invocations (histories written before it, or by other tools, have none:
    the mapping is then empty)."""
    out: dict[int | str, str] = {}
    for op in history:
        if op.type == "invoke" and op.process != NEMESIS:
            node = op.extra.get("node") if op.extra else None
            if isinstance(node, str) and op.process not in out:
                out[op.process] = node
    return out
