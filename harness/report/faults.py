"""Fault windows and instants for shading plots, from the nemesis ops of a history.

A :class:`FaultSpec` says which nemesis ``f`` names open a fault window, which
close it, and which are instantaneous; nemesis packages describe themselves with
one (``nemeses.package.Shading`` has the same fields and is accepted as is, and so
is its ``to_dict()`` form, e.g. read back from ``test.json``). Any ``start-X`` op
without a spec is paired with ``stop-X`` under the name ``X``.

A window runs from the start op's invocation (the fault may act from then on) to
the stop op's completion (it certainly ended by then); a window still open at the
end of the history runs to its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from checkers.history import Op
from harness.report.pairs import history_span_s, pair_ops


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


@dataclass(frozen=True)
class FaultInstant:
    name: str
    f: str
    t_s: float


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


def fault_events(history: Sequence[Op], specs: Iterable[Any] | None = None
                 ) -> tuple[list[FaultWindow], list[FaultInstant]]:
    """The fault windows and instants a history's nemesis ops describe under SPECS."""
    spec_list = coerce_specs(specs)
    starts = {f: s.name for s in spec_list for f in s.start}
    stops = {f: s.name for s in spec_list for f in s.stop}
    instants = {f: s.name for s in spec_list for f in s.instant}
    nemesis = [p for p in pair_ops(history) if not p.is_client]
    for p in nemesis:  # generic start-X / stop-X pairs the specs did not claim
        for prefix, table in (("start-", starts), ("stop-", stops)):
            if p.f.startswith(prefix) and p.f not in starts and p.f not in stops and p.f not in instants:
                table[p.f] = p.f[len(prefix):]
    _, end = history_span_s(history)
    open_at: dict[str, float] = {}
    windows: list[FaultWindow] = []
    points: list[FaultInstant] = []
    for p in nemesis:
        if p.type == "fail":
            continue  # a fault op that certainly did not happen opens or closes nothing
        if p.f in stops and stops[p.f] in open_at:
            name = stops[p.f]
            windows.append(FaultWindow(name, open_at.pop(name), p.end_s))
        elif p.f in starts:
            open_at.setdefault(starts[p.f], p.start_s)
        elif p.f in instants:
            points.append(FaultInstant(instants[p.f], p.f, p.end_s))
    for name, t in open_at.items():
        windows.append(FaultWindow(name, t, max(end, t), open_ended=True))
    windows.sort(key=lambda w: (w.start_s, w.name))
    return windows, points
