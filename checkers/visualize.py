"""The counterexample page: one self-contained HTML file, no network assets, no JavaScript.

For each partition drawn: operations as interval bars, one row per process (a pending
operation runs to the right edge, dashed); the longest linearizable prefix numbered
in linearization order and shaded green; the operation that could not be linearized
in red; the operations that could have come next outlined in orange; and a table of
the linearization with the state after each step, ending at the failing point.
Hover a bar for its details (SVG ``<title>``).
"""

from __future__ import annotations

import html
from typing import Any, Sequence

from checkers import counterexample as cxmod
from checkers.checker import LinearizationInfo, PartitionInfo
from checkers.model import CheckResult, Model, Operation

MAX_PARTITIONS = 12   # partitions drawn (failing ones first)
MAX_OPS = 150         # operations drawn per partition (a window around the failure)
ROW_H = 26
LEFT = 90
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
"""


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


def _svg(model: Model, part: PartitionInfo, cx: cxmod.Counterexample | None, shown: list[int]) -> str:
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
    height = len(clients) * ROW_H + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'role="img" aria-label="operations per process">']
    for c, r in row.items():
        y = 20 + r * ROW_H
        parts.append(f'<text x="4" y="{y + 15}">process {_esc(c)}</text>'
                     f'<line x1="{LEFT}" y1="{y + ROW_H - 2}" x2="{end_x}" y2="{y + ROW_H - 2}" '
                     'stroke="#eee"/>')
    for i in shown:
        op = ops[i]
        x1 = LEFT + rank[op.call] * scale
        x2 = end_x if op.return_time is None else LEFT + rank[op.return_time] * scale
        x2 = max(x2, x1 + 6)
        y = 22 + row[op.client_id] * ROW_H
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
        tip = [label, f"process {op.client_id}, op index {op.index}",
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


def _table(model: Model, part: PartitionInfo, cx: cxmod.Counterexample) -> str:
    ops = part.operations
    rows = ['<table><tr><th>#</th><th>operation</th><th>process</th><th>op index</th>'
            '<th>state after</th></tr>']
    start = max(0, len(cx.prefix) - MAX_OPS // 2)
    if start:
        rows.append(f'<tr><td colspan="5">… {start} earlier step(s) not shown</td></tr>')
    for n in range(start, len(cx.prefix)):
        op = ops[cx.prefix[n]]
        rows.append(f"<tr><td>{n + 1}</td><td>{_esc(model.describe_operation(op.input, op.output))}</td>"
                    f"<td>{_esc(op.client_id)}</td><td>{op.index}</td>"
                    f"<td>{_esc(model.describe_state(cx.states[n + 1]))}</td></tr>")
    if cx.blocked >= 0:
        op = ops[cx.blocked]
        rows.append(f'<tr class="fail"><td>✗</td><td>{_esc(model.describe_operation(op.input, op.output))}'
                    f"</td><td>{_esc(op.client_id)}</td><td>{op.index}</td>"
                    f"<td>cannot be linearized; met state {_esc(model.describe_state(cx.state))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def render(model: Model, info: LinearizationInfo,
           counterexamples: Sequence[cxmod.Counterexample] | None = None, title: str = "") -> str:
    """The page as a string (see :func:`visualize`)."""
    failing = info.failing()
    if counterexamples is None:
        counterexamples = [cxmod.build(model, p) for p in failing]
    cx_of = {id(p): cx for p, cx in zip(failing, counterexamples)}
    verdict = ("illegal" if failing else
               "unknown" if any(p.result is CheckResult.UNKNOWN for p in info.partitions) else "ok")
    words = {"ok": "linearizable", "illegal": "NOT linearizable", "unknown": "unknown (time limit)"}
    n_ops = sum(len(p.operations) for p in info.partitions)
    out = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
           f"<title>{_esc(title or 'linearizability')}: {words[verdict]}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title or 'Linearizability check')}: "
           f'<span class="verdict-{verdict}">{words[verdict]}</span></h1>',
           f"<p>model <b>{_esc(model.name)}</b> · {n_ops} operation(s) in {len(info.partitions)} "
           f"partition(s) · {info.elapsed:.2f} s</p>",
           '<p class="legend"><span><i class="sw" style="background:#aceebb"></i>linearized (#order)</span>'
           '<span><i class="sw" style="background:#ff8182"></i>could not be linearized</span>'
           '<span><i class="sw" style="background:#fff8c5;border:1px solid #bc4c00"></i>could come next'
           '</span><span><i class="sw" style="background:#eaeef2"></i>other</span>'
           "<span>dashed: pending (info / never completed)</span></p>"]
    drawn = sorted(info.partitions, key=lambda p: {CheckResult.ILLEGAL: 0, CheckResult.UNKNOWN: 1,
                                                    CheckResult.OK: 2}[p.result])[:MAX_PARTITIONS]
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
        out.append(_svg(model, part, cx, shown))
        if cx is not None:
            out.append(_table(model, part, cx))
    if len(info.partitions) > len(drawn):
        out.append(f"<p>{len(info.partitions) - len(drawn)} more partition(s) not drawn.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def _key(operations: Sequence[Operation]) -> Any:
    first = operations[0].input if operations else None
    return first[1] if isinstance(first, tuple) and len(first) > 1 else None


def visualize(model: Model, info: LinearizationInfo, path: str,
              counterexamples: Sequence[cxmod.Counterexample] | None = None, title: str = "") -> None:
    """Write the page for a verbose check's ``info`` to ``path`` (Porcupine's ``Visualize``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(model, info, counterexamples, title))
