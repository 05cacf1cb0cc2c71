"""The counterexample page: one self-contained HTML file, no network assets, no JavaScript.

For each key drawn (each independent part of the history the checker searched; a model
without keys has one): operations as interval bars, one row per process (a pending
operation runs to the right edge, dashed); the longest linearizable prefix numbered
in linearization order and shaded green; the operation that could not be linearized
in red; the operations that could have come next outlined in orange; and a table of
the linearization with the state after each step, ending at the failing point.
Hover a bar for its details (SVG ``<title>``).

Given the history the operations came from (``history=``), the page also says which
node each process's client talked to (the ``node`` the harness records on client
invocations) and when faults were active: fault windows are shaded across every
process row, with what they hit (``shading=`` names the nemesis ops that open and
close them, as for the plots; see :mod:`checkers.faults`).
"""

from __future__ import annotations

import bisect
import html
from typing import Any, Iterable, Sequence

from checkers import counterexample as cxmod
from checkers.checker import LinearizationInfo, PartitionInfo
from checkers.faults import FaultInstant, FaultWindow, fault_events, process_nodes
from checkers.history import Op
from checkers.model import CheckResult, Model, Operation

MAX_PARTITIONS = 12   # keys (partitions) drawn (failing ones first)
FAULT_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22")
FAULT_ROW_H = 16
MAX_OPS = 150         # operations drawn per partition (a window around the failure)
ROW_H = 26
LEFT = 150
WIDTH = 1100

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.verdict-ok{color:#1a7f37} .verdict-illegal{color:#cf222e} .verdict-unknown{color:#9a6700}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
tr.fail td{background:#ffebe9;font-weight:600}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
pre{background:#f6f8fa;padding:10px;font-size:12px;white-space:pre-wrap}
svg text{font-size:11px;font-family:ui-monospace,monospace}
.context td:first-child{white-space:nowrap}
.fault-sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle;opacity:.6}
"""


class PageContext:
    """What the history says around the operations: each process's node and the fault windows
    and instants (with positions in the history, the page's time axis)."""

    def __init__(self, history: Sequence[Op] | None = None, shading: Iterable[Any] | None = None) -> None:
        self.history = list(history) if history is not None else None
        self.nodes: dict[Any, str] = process_nodes(self.history) if self.history is not None else {}
        self.windows: list[FaultWindow] = []
        self.instants: list[FaultInstant] = []
        if self.history is not None:
            self.windows, self.instants = fault_events(self.history, shading)
        names = sorted({w.name for w in self.windows} | {i.name for i in self.instants})
        self.color = {n: FAULT_COLORS[i % len(FAULT_COLORS)] for i, n in enumerate(names)}

    def process_label(self, process: Any) -> str:
        node = self.nodes.get(process)
        return f"process {process}" + (f" → {node}" if node else "")

    def seconds(self, pos: int) -> str:
        if self.history is None or not 0 <= pos < len(self.history):
            return ""
        return f"{self.history[pos].time / 1e9:.3f} s"

    def index(self, pos: int) -> Any:
        if self.history is None or not 0 <= pos < len(self.history):
            return pos
        return self.history[pos].index

    def describe(self, w: FaultWindow) -> str:
        what = w.name + (f" {w.detail}" if w.detail else "")
        end = "the end of the history (never healed)" if w.open_ended else \
            f"op index {self.index(w.end_pos)} ({self.seconds(w.end_pos)})"
        return f"{what}: from op index {self.index(w.start_pos)} ({self.seconds(w.start_pos)}) to {end}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _window(part: PartitionInfo, cx: cxmod.Counterexample | None) -> list[int]:
    """Positions of the operations to draw: around the failing point, or the first ones."""
    n = len(part.operations)
    if cx is None:
        return list(range(min(n, MAX_OPS)))
    focus = set(cx.prefix[-(MAX_OPS // 2):]) | {c.position for c in cx.candidates}
    if cx.blocked >= 0:
        focus.add(cx.blocked)
    if not focus:
        return list(range(min(n, MAX_OPS)))
    ops = part.operations
    lo = min(ops[i].call for i in focus)
    hi = max(ops[i].call for i in focus)
    chosen = [i for i, op in enumerate(ops)
              if op.call <= hi and (op.return_time is None or op.return_time >= lo)]
    if len(chosen) > MAX_OPS:  # keep the focus, then the ops nearest to the failure
        rest = sorted((i for i in chosen if i not in focus), key=lambda i: -ops[i].call)
        chosen = sorted(focus | set(rest[:max(0, MAX_OPS - len(focus))]))
    return chosen


def _svg(model: Model, part: PartitionInfo, cx: cxmod.Counterexample | None, shown: list[int],
         ctx: PageContext | None = None) -> str:
    ops = part.operations
    order = {pos: n for n, pos in enumerate(cx.prefix if cx else part.outcome.longest, start=1)}
    candidates = {c.position: c for c in (cx.candidates if cx else [])}
    blocked = cx.blocked if cx else -1
    times = sorted({t for i in shown for t in (ops[i].call, ops[i].return_time) if t is not None})
    rank = {t: r for r, t in enumerate(times)}
    span = max(len(times), 2)
    end_x = WIDTH - 20
    scale = (end_x - LEFT - 30) / (span - 1)
    clients: list[Any] = []
    for i in shown:
        if ops[i].client_id not in clients:
            clients.append(ops[i].client_id)
    row = {c: r for r, c in enumerate(clients)}
    ctx = ctx or PageContext()
    # Faults overlapping the drawn stretch of history; one starting after its last drawn event
    # would be a sliver at the right edge, and is left to the Faults table above.
    lo_pos, hi_pos = (times[0], times[-1]) if times else (0, 0)
    windows = [w for w in ctx.windows if w.end_pos >= lo_pos and w.start_pos <= hi_pos]
    instants = [i for i in ctx.instants if lo_pos <= i.pos <= hi_pos]
    lanes = sorted({w.name for w in windows} | {i.name for i in instants})
    top = 20 + len(lanes) * FAULT_ROW_H  # one labelled lane per fault above the process rows
    height = top + len(clients) * ROW_H + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'role="img" aria-label="operations per process">']

    def x_of(pos: float) -> float:
        """A history position on the rank axis, between the ranks of the times around it."""
        if not times:
            return LEFT
        r = bisect.bisect_left(times, pos)
        if r >= len(times):
            return end_x
        if times[r] == pos or r == 0:
            return LEFT + r * scale
        a, b = times[r - 1], times[r]
        return LEFT + (r - 1 + (pos - a) / (b - a)) * scale

    for w in windows:
        lane = lanes.index(w.name)
        x1 = max(LEFT - 4, x_of(w.start_pos))
        x2 = end_x if w.end_pos > hi_pos else x_of(w.end_pos)
        color = ctx.color[w.name]
        parts.append(f'<g class="fault-window"><title>{_esc(ctx.describe(w))}</title>'
                     f'<rect x="{x1:.1f}" y="{20 + lane * FAULT_ROW_H}" width="{max(x2 - x1, 2):.1f}" '
                     f'height="{height - 25 - lane * FAULT_ROW_H}" fill="{color}" fill-opacity="0.12" '
                     f'stroke="{color}" stroke-opacity="0.5"/>'
                     f'<text x="{x1 + 3:.1f}" y="{20 + lane * FAULT_ROW_H + 12}" fill="{color}">'
                     f'{_esc(w.name + (" " + w.detail if w.detail else ""))}</text></g>')
    for i in instants:
        lane = lanes.index(i.name)
        x = x_of(i.pos)
        color = ctx.color[i.name]
        parts.append(f'<g class="fault-instant"><title>{_esc(i.f)} {_esc(i.detail)} at op index '
                     f'{_esc(ctx.index(i.pos))} ({_esc(ctx.seconds(i.pos))})</title>'
                     f'<line x1="{x:.1f}" y1="{20 + lane * FAULT_ROW_H}" x2="{x:.1f}" y2="{height - 5}" '
                     f'stroke="{color}" stroke-dasharray="4 3" stroke-width="2"/>'
                     f'<text x="{x + 3:.1f}" y="{20 + lane * FAULT_ROW_H + 12}" fill="{color}">'
                     f'{_esc(i.f + (" " + i.detail if i.detail else ""))}</text></g>')
    if lanes:
        parts.append(f'<text x="4" y="{20 + 12}" fill="#555">faults</text>')
    for c, r in row.items():
        y = top + r * ROW_H
        parts.append(f'<text x="4" y="{y + 15}">{_esc(ctx.process_label(c))}</text>'
                     f'<line x1="{LEFT}" y1="{y + ROW_H - 2}" x2="{end_x}" y2="{y + ROW_H - 2}" '
                     'stroke="#eee"/>')
    for i in shown:
        op = ops[i]
        x1 = LEFT + rank[op.call] * scale
        x2 = end_x if op.return_time is None else LEFT + rank[op.return_time] * scale
        x2 = max(x2, x1 + 6)
        y = top + 2 + row[op.client_id] * ROW_H
        if i == blocked:
            fill, stroke = "#ff8182", "#cf222e"
        elif i in order:
            fill, stroke = "#aceebb", "#1a7f37"
        elif i in candidates:
            fill, stroke = "#fff8c5", "#bc4c00"
        else:
            fill, stroke = "#eaeef2", "#8c959f"
        dash = ' stroke-dasharray="4 3"' if op.return_time is None else ""
        label = model.describe_operation(op.input, op.output)
        tip = [label, f"{ctx.process_label(op.client_id)}, op index {op.index}",
               "pending (no completion)" if op.return_time is None else ""]
        if i in order:
            tip.append(f"linearized #{order[i]}")
        if i in candidates:
            c = candidates[i]
            tip.append("could come next: " + ("legal, state after " + model.describe_state(c.state_after)
                                              if c.legal else "illegal in the state it met"))
        if i == blocked:
            tip.append("could not be linearized")
        parts.append(f'<g><title>{_esc(" | ".join(t for t in tip if t))}</title>'
                     f'<rect x="{x1:.1f}" y="{y}" width="{x2 - x1:.1f}" height="{ROW_H - 8}" rx="3" '
                     f'fill="{fill}" stroke="{stroke}"{dash}/>')
        width_chars = int((x2 - x1) / 6.6)
        text = (f"#{order[i]} " if i in order else "") + label
        if width_chars >= 3:
            text = text if len(text) <= width_chars else text[:max(width_chars - 1, 1)] + "…"
            parts.append(f'<text x="{x1 + 3:.1f}" y="{y + 13}">{_esc(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _table(model: Model, part: PartitionInfo, cx: cxmod.Counterexample, ctx: PageContext) -> str:
    ops = part.operations
    with_nodes = bool(ctx.nodes)
    node_th = "<th>node</th>" if with_nodes else ""
    cols = 6 if with_nodes else 5

    def node_td(op: Operation) -> str:
        return f"<td>{_esc(ctx.nodes.get(op.client_id, '?'))}</td>" if with_nodes else ""

    def faults_at(op: Operation) -> str:
        end = op.return_time if op.return_time is not None else float("inf")
        active = [w.name + (f" {w.detail}" if w.detail else "") for w in ctx.windows
                  if w.start_pos <= end and w.end_pos >= op.call]
        return (f' <span class="faults" title="faults active while it ran">[{_esc("; ".join(active))}]</span>'
                if active else "")

    rows = [f'<table><tr><th>#</th><th>operation</th><th>process</th>{node_th}<th>op index</th>'
            '<th>state after</th></tr>']
    start = max(0, len(cx.prefix) - MAX_OPS // 2)
    if start:
        rows.append(f'<tr><td colspan="{cols}">… {start} earlier step(s) not shown</td></tr>')
    for n in range(start, len(cx.prefix)):
        op = ops[cx.prefix[n]]
        rows.append(f"<tr><td>{n + 1}</td><td>{_esc(model.describe_operation(op.input, op.output))}"
                    f"{faults_at(op)}</td><td>{_esc(op.client_id)}</td>{node_td(op)}<td>{op.index}</td>"
                    f"<td>{_esc(model.describe_state(cx.states[n + 1]))}</td></tr>")
    if cx.blocked >= 0:
        op = ops[cx.blocked]
        rows.append(f'<tr class="fail"><td>✗</td><td>{_esc(model.describe_operation(op.input, op.output))}'
                    f"{faults_at(op)}</td><td>{_esc(op.client_id)}</td>{node_td(op)}<td>{op.index}</td>"
                    f"<td>cannot be linearized; met state {_esc(model.describe_state(cx.state))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _context(ctx: PageContext, parts: Sequence[PartitionInfo]) -> str:
    """Which node each drawn process talked to, and every fault window, as two short tables."""
    if ctx.history is None:
        return ""
    out = []
    processes: list[Any] = []
    for part in parts:
        for op in part.operations:
            if op.client_id not in processes:
                processes.append(op.client_id)
    processes.sort(key=lambda p: (not isinstance(p, int), p if isinstance(p, int) else 0, str(p)))
    if ctx.nodes:
        by_node: dict[str, list[Any]] = {}
        for proc in processes:
            by_node.setdefault(ctx.nodes.get(proc, "?"), []).append(proc)
        out.append('<h2>Clients</h2><table class="context"><tr><th>node</th><th>processes talking to it'
                   '</th></tr>' + "".join(f"<tr><td>{_esc(node)}</td><td>{_esc(', '.join(map(str, procs)))}"
                                          "</td></tr>" for node, procs in sorted(by_node.items()))
                   + "</table><p>Each client is bound to one node and sends every request there first "
                   "(a follower redirects it to the leader).</p>")
    else:
        out.append("<p>This history does not record which node each process talked to (histories the "
                   "harness writes now do: <code>node</code> on each client invocation).</p>")
    if ctx.windows or ctx.instants:
        rows = [f'<tr><td><i class="fault-sw" style="background:{ctx.color[w.name]}"></i>'
                f'{_esc(w.name)}</td><td>{_esc(ctx.describe(w).split(": ", 1)[1])}</td>'
                f'<td>{_esc(w.detail)}</td></tr>' for w in ctx.windows]
        rows += [f'<tr><td><i class="fault-sw" style="background:{ctx.color[i.name]}"></i>{_esc(i.f)}</td>'
                 f'<td>at op index {_esc(ctx.index(i.pos))} ({_esc(ctx.seconds(i.pos))})</td>'
                 f'<td>{_esc(i.detail)}</td></tr>' for i in ctx.instants]
        out.append('<h2>Faults</h2><table class="context"><tr><th>fault</th><th>active</th><th>hit</th></tr>'
                   + "".join(rows) + "</table><p>Shaded behind the operations below where they overlap "
                   "them, and listed next to each step of the linearization they overlap.</p>")
    else:
        out.append("<p>No faults were recorded in this history.</p>")
    return "".join(out)


def render(model: Model, info: LinearizationInfo,
           counterexamples: Sequence[cxmod.Counterexample] | None = None, title: str = "",
           history: Sequence[Op] | None = None, shading: Iterable[Any] | None = None) -> str:
    """The page as a string (see :func:`visualize`)."""
    ctx = PageContext(history, shading)
    failing = info.failing()
    if counterexamples is None:
        counterexamples = [cxmod.build(model, p) for p in failing]
    cx_of = {id(p): cx for p, cx in zip(failing, counterexamples)}
    verdict = ("illegal" if failing else
               "unknown" if any(p.result is CheckResult.UNKNOWN for p in info.partitions) else "ok")
    words = {"ok": "linearizable", "illegal": "NOT linearizable", "unknown": "unknown (time limit)"}
    n_ops = sum(len(p.operations) for p in info.partitions)
    # The checker splits the history into parts it checks one by one: one per key for keyed
    # models. Call them keys, not "partitions", a word that means network partitions elsewhere.
    unit = "key(s)" if any(_key(p.operations) is not None for p in info.partitions) else "independent part(s)"
    out = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
           f"<title>{_esc(title or 'linearizability')}: {words[verdict]}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title or 'Linearizability check')}: "
           f'<span class="verdict-{verdict}">{words[verdict]}</span></h1>',
           f"<p>model <b>{_esc(model.name)}</b> · {n_ops} operation(s) on {len(info.partitions)} "
           f"{unit}, each checked on its own · {info.elapsed:.2f} s</p>",
           '<p class="legend"><span><i class="sw" style="background:#aceebb"></i>linearized (#order)</span>'
           '<span><i class="sw" style="background:#ff8182"></i>could not be linearized</span>'
           '<span><i class="sw" style="background:#fff8c5;border:1px solid #bc4c00"></i>could come next'
           '</span><span><i class="sw" style="background:#eaeef2"></i>other</span>'
           "<span>dashed: pending (info / never completed)</span></p>"]
    drawn = sorted(info.partitions, key=lambda p: {CheckResult.ILLEGAL: 0, CheckResult.UNKNOWN: 1,
                                                    CheckResult.OK: 2}[p.result])[:MAX_PARTITIONS]
    out.append(_context(ctx, drawn))
    for part in drawn:
        cx = cx_of.get(id(part))
        key = _key(part.operations)
        heading = "" if key is None else f"key {key!r} · "
        out.append(f"<h2>{_esc(heading)}{len(part.operations)} operation(s) · "
                   f'<span class="verdict-{part.result.value}">{part.result.value}</span></h2>')
        shown = _window(part, cx)
        if len(shown) < len(part.operations):
            out.append(f"<p>showing {len(shown)} of {len(part.operations)} operations"
                       f"{' around the failing point' if cx else ''}</p>")
        if cx is not None:
            out.append(f"<pre>{_esc(cxmod.summary(model, cx))}</pre>")
        out.append(_svg(model, part, cx, shown, ctx))
        if cx is not None:
            out.append(_table(model, part, cx, ctx))
    if len(info.partitions) > len(drawn):
        out.append(f"<p>{len(info.partitions) - len(drawn)} more {unit} not drawn.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def _key(operations: Sequence[Operation]) -> Any:
    first = operations[0].input if operations else None
    return first[1] if isinstance(first, tuple) and len(first) > 1 else None


def visualize(model: Model, info: LinearizationInfo, path: str,
              counterexamples: Sequence[cxmod.Counterexample] | None = None, title: str = "",
              history: Sequence[Op] | None = None, shading: Iterable[Any] | None = None) -> None:
    """Write the page for a verbose check's ``info`` to ``path`` (Porcupine's ``Visualize``).

    ``history``: the events the operations came from (the same list, so positions match),
    for each process's node and the fault windows; ``shading``: fault specs for those
    windows (``checkers.faults.FaultSpec`` or alike)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(model, info, counterexamples, title, history, shading))
