"""A picture of one cycle, hand-written SVG (no Graphviz needed).

Transactions sit on a circle in cycle order; each edge is an arrow to the next one,
coloured by type and labelled with its type and key; under the circle, one line per
transaction lists its micro-ops.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

COLORS = {"ww": "#1f77b4", "wr": "#2ca02c", "rw": "#d62728", "process": "#9467bd",
          "realtime": "#ff7f0e"}


def cycle_svg(steps: Sequence[dict[str, Any]], txns: dict[str, str], title: str = "") -> str:
    """``steps``: ``[{"from", "to", "type", "key"}, ...]`` around the cycle;
    ``txns``: name -> description."""
    k = len(steps)
    radius = 60 + 22 * k
    cx = cy = radius + 70
    width = 2 * cx
    lines = [txns.get(s["from"], s["from"]) for s in steps]
    height = 2 * cy + 18 * len(lines) + 30
    width = max(width, 9 * max((len(x) for x in lines), default=0) + 20)
    pos = []
    for i in range(k):
        angle = -math.pi / 2 + 2 * math.pi * i / k
        pos.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
           "<defs>"]
    for name, color in COLORS.items():
        out.append(f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
                   f'fill="{color}"/></marker>')
    out.append("</defs>")
    if title:
        out.append(f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>')
    node_r = 26
    for i, step in enumerate(steps):
        (x1, y1), (x2, y2) = pos[i], pos[(i + 1) % k]
        dx, dy = x2 - x1, y2 - y1
        d = math.hypot(dx, dy) or 1.0
        ux, uy = dx / d, dy / d
        sx, sy = x1 + ux * node_r, y1 + uy * node_r
        ex, ey = x2 - ux * node_r, y2 - uy * node_r
        # bend outwards so that a two-transaction cycle shows two arrows
        mx, my = (sx + ex) / 2, (sy + ey) / 2
        nx, ny = mx - cx, my - cy
        nd = math.hypot(nx, ny)
        if nd < 1:
            nx, ny, nd = -uy, ux, 1.0
        bend = 28 if k == 2 else 18
        qx, qy = mx + nx / nd * bend, my + ny / nd * bend
        t = step["type"]
        color = COLORS.get(t, "#333")
        out.append(f'<path d="M {sx:.1f} {sy:.1f} Q {qx:.1f} {qy:.1f} {ex:.1f} {ey:.1f}" fill="none" '
                   f'stroke="{color}" stroke-width="2" marker-end="url(#arrow-{escape(t)})"/>')
        label = t if step.get("key") is None else f"{t} k={step['key']}"
        lx, ly = mx + nx / nd * (bend + 14), my + ny / nd * (bend + 14)
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" fill="{color}" text-anchor="middle">'
                   f"{escape(label)}</text>")
    for i, step in enumerate(steps):
        x, y = pos[i]
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{node_r}" fill="#fff" stroke="#333" '
                   f'stroke-width="1.5"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(step["from"])}</text>')
    y = 2 * cy + 10
    for line in lines:
        out.append(f'<text x="10" y="{y}">{escape(line)}</text>')
        y += 18
    out.append("</svg>")
    return "\n".join(out)


def reads_svg(key: Any, reads: Sequence[tuple[str, Sequence[Any]]], title: str = "") -> str:
    """Two (or more) reads of one key that no single order of appends explains, one row
    of boxes per read, elements aligned by position: the shared prefix grey, where the
    rows part red (the first position whose elements differ, and everything after)."""
    rows = [(name, [str(e) for e in values]) for name, values in reads]
    common = 0
    longest = max((len(v) for _, v in rows), default=0)
    while common < longest and len({v[common] if common < len(v) else None for _, v in rows}) == 1:
        common += 1
    cell = max(28, 8 * max((len(e) for _, v in rows for e in v), default=1) + 10)
    label_w = 9 * max((len(n) for n, _ in rows), default=2) + 20
    caption = f"key {key}: the reads agree on the grey prefix and part at the red"
    width = max(label_w + cell * max(longest, 1) + 20, 8 * len(caption) + 20, 8 * len(title) + 20)
    height = 40 + 34 * len(rows) + 24
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">']
    if title:
        out.append(f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>')
    for r, (name, values) in enumerate(rows):
        y = 34 + 34 * r
        out.append(f'<text x="10" y="{y + 18}">{escape(name)}</text>')
        for i, e in enumerate(values):
            fill = "#eee" if i < common else "#f8d0d0"
            stroke = "#999" if i < common else "#d62728"
            x = label_w + cell * i
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="26" fill="{fill}" '
                       f'stroke="{stroke}"/>')
            out.append(f'<text x="{x + (cell - 2) / 2:.0f}" y="{y + 17}" text-anchor="middle">{escape(e)}</text>')
    out.append(f'<text x="10" y="{height - 8}">{escape(caption)}</text>')
    out.append("</svg>")
    return "\n".join(out)
