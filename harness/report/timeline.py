"""timeline.html: one column per process, every operation a box from invocation to completion.

Self-contained (inline CSS, no scripts, no external assets). Hovering a box shows its
f, key, value, type, latency, node and error through the native tooltip; boxes tall
enough carry that as text too (the op and its value, then the key). The column heads
name the node each client process talks to when the history records it.

Time runs down the page in order, but not linearly (:class:`TimeScale`): time while
client ops are in flight takes more room than time while none is, every box gets
room for a one-line label, and a stretch between two events is capped at
``GAP_CAP_PX`` and marked with how long it lasted, so a history that idles for an
hour is as short as one that did not. A history too big for ``MAX_HEIGHT_PX`` is
squeezed evenly to fit (labels then show where they still fit); with more than
``max_ops`` operations it is also sampled evenly, and the page says so at the top.

Fault windows are bands across every process column (each fault its own color,
labelled with what it hit, e.g. ``partition n1 | n2 n3``); instantaneous faults
are lines across every column.
"""

from __future__ import annotations

import bisect
import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from checkers.history import NEMESIS, Op
from harness.report.faults import describe_fault_value, fault_events, process_nodes
from harness.report.pairs import OpPair, history_span_s, pair_ops

MAX_OPS = 100_000
COLUMN_PX = 120
GUTTER_PX = 84  # time ticks and the length of shortened gaps
BUSY_PX_PER_S = 400.0  # elapsed time while a client op is in flight: 1 ms = 0.4 px
IDLE_PX_PER_S = 60.0  # and while none is
GAP_CAP_PX = 36.0  # the most one stretch between two event times may take
GAP_MARK_S = 0.5  # stretches longer than this (and capped) are marked with their length
MAX_HEIGHT_PX = 16_000
MIN_BOX_PX = 2
LABEL_PX = 12  # every box gets this much when it can: room for a one-line label
TICK_EVERY_PX = 90
LABEL_MARGIN_PX = 300  # right of the columns, for fault labels
FAULT_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22")

_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
.note { background: #fff3cd; border: 1px solid #e0c36a; padding: 6px 10px; margin: 8px 0; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 3px; }
.legend .fault-key { color: #222; border: 1px solid; }
.wrap { position: relative; margin-top: 12px; }
.heads { display: flex; margin-left: %(gutter)dpx; position: sticky; top: 0; background: #fff; z-index: 6;
         border-bottom: 1px solid #ccc; width: max-content; }
.head { flex: 0 0 %(col)dpx; box-sizing: border-box; overflow: hidden; text-overflow: ellipsis;
        text-align: center; font-weight: 600; line-height: 1.2; padding: 2px 0; }
.head small { display: block; font-weight: 400; color: #555; font-size: 11px; }
.body { position: relative; margin-left: %(gutter)dpx; }
.col { position: absolute; top: 0; bottom: 0; width: %(col)dpx; border-left: 1px solid #e4e4e4; z-index: 1; }
.op { position: absolute; min-height: %(minbox)dpx; border-radius: 2px; box-sizing: border-box; z-index: 3;
      overflow: hidden; white-space: nowrap; text-overflow: ellipsis; color: #fff;
      font: 10px/11px ui-monospace, Menlo, Consolas, monospace; padding: 0 3px; opacity: .9; }
.op:hover { opacity: 1; outline: 2px solid #000; z-index: 5; }
.op span { display: block; overflow: hidden; text-overflow: ellipsis; }
.ok { background: #2a9d3f; } .fail { background: #d62728; } .info { background: #f0a202; color: #222; }
.nemesis-op { background: #555; }
.fault { position: absolute; left: 0; right: 0; z-index: 0; border-top: 1px solid; border-bottom: 1px dashed; }
.instant { position: absolute; left: 0; right: 0; height: 0; border-top: 2px dashed; z-index: 4; }
.fault-label { position: absolute; font-size: 11px; font-weight: 600; padding: 0 4px; border-left: 3px solid;
               background: rgba(255,255,255,.9); z-index: 4; white-space: nowrap; line-height: 14px; }
.gap { position: absolute; left: -%(gutter)dpx; right: 0; z-index: 2; font-size: 11px; font-weight: 600;
       color: #444; background: repeating-linear-gradient(135deg, #f6f6f6 0 6px, #e4e4e4 6px 12px); }
.gap span { display: inline-block; width: %(tickw)dpx; text-align: right; }
.tick { position: absolute; left: -%(gutter)dpx; width: %(tickw)dpx; text-align: right; font-size: 10px; color: #777;
        border-top: 1px solid #ddd; }
""" % {"col": COLUMN_PX, "minbox": MIN_BOX_PX, "gutter": GUTTER_PX, "tickw": GUTTER_PX - 6}


def _process_key(p: int | str) -> tuple[int, int, str]:
    if p == NEMESIS:
        return (1, 0, "")
    return (0, p, "") if isinstance(p, int) else (0, 1 << 62, str(p))


def _short(value: Any, limit: int = 40) -> str:
    """A value as a person reads it in a box: nil, 7, 3→4 for a cas pair, compact JSON else."""
    if value is None:
        return "nil"
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            v is None or isinstance(v, (int, float, str)) for v in value):
        return f"{_short(value[0])}→{_short(value[1])}"
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _label(p: OpPair, nemesis_detail: str) -> tuple[str, str]:
    """The first and second line of a box's label."""
    if not p.is_client:
        return p.f, nemesis_detail
    if p.value is None and p.type == "ok" and p.f in ("read", "get"):
        first = f"{p.f} nil"  # read the key absent
    elif p.value is None:  # an op without a value (a delete), or a read whose result is unknown
        first = p.f
    elif p.type == "fail" and p.f == "read":
        first = p.f  # a failed read returned nothing
    else:
        first = f"{p.f} {_short(p.value)}"
    second = "" if p.key is None else f"key {_short(p.key)}"
    if p.error is not None and p.type != "ok":
        second = (second + " · " if second else "") + _short(p.error, 30)
    return first, second


def _tooltip(p: OpPair, node: str | None) -> str:
    lines = [f"process {p.process}" + (f" (client of {node})" if node else ""), f"f: {p.f}",
             f"type: {p.type}" + (" (never completed)" if p.incomplete else "")]
    if p.key is not None:
        lines.append(f"key: {json.dumps(p.key, default=str)}")
    if p.value is not None:
        lines.append(f"value: {json.dumps(p.value, default=str)[:300]}")
    if p.error is not None:
        lines.append(f"error: {json.dumps(p.error, default=str)[:300]}")
    lines.append(f"invoked at {p.start_s:.6f} s, latency {p.latency_ms:.3f} ms")
    return "\n".join(lines)


def _sample(pairs: list[OpPair], max_ops: int) -> list[OpPair]:
    if len(pairs) <= max_ops:
        return pairs
    step = len(pairs) / max_ops
    return [pairs[int(i * step)] for i in range(max_ops)]


class TimeScale:
    """Seconds -> pixels down the page, monotonic, so real-time order is kept across columns.

    Between consecutive event times the page advances 1 px plus ``BUSY_PX_PER_S`` per second
    while some client op is in flight, or ``IDLE_PX_PER_S`` while none is, each stretch capped
    at ``GAP_CAP_PX`` (and marked when it lasted ``GAP_MARK_S`` or more). Every op in ``spans``
    then gets at least ``LABEL_PX``, room for a one-line label, by pushing later events down
    (one forward pass: the longest path through those constraints). The whole is scaled down
    evenly when it would pass ``max_height``."""

    def __init__(self, times: Iterable[float], spans: Sequence[tuple[float, float]] = (),
                 busy: Sequence[tuple[float, float]] = (), max_height: float = MAX_HEIGHT_PX) -> None:
        self.times = sorted(set(times) | {t for s in spans for t in s} | {t for s in busy for t in s}) or [0.0]
        at = {t: i for i, t in enumerate(self.times)}
        n = len(self.times)
        in_flight = [0] * (n + 1)
        for a, b in busy:
            if b > a:
                in_flight[at[a]] += 1
                in_flight[at[b]] -= 1
        ending: dict[int, list[int]] = {}
        for a, b in spans:
            if b > a:
                ending.setdefault(at[b], []).append(at[a])
        ys = [0.0] * n
        self.gaps: list[tuple[float, float]] = []  # (start s, end s) of shortened stretches
        running = 0
        for i in range(1, n):
            running += in_flight[i - 1]
            dt = self.times[i] - self.times[i - 1]
            linear = 1.0 + dt * (BUSY_PX_PER_S if running > 0 else IDLE_PX_PER_S)
            if linear > GAP_CAP_PX and dt >= GAP_MARK_S:
                self.gaps.append((self.times[i - 1], self.times[i]))
            y = ys[i - 1] + min(linear, GAP_CAP_PX)
            for first in ending.get(i, ()):
                y = max(y, ys[first] + LABEL_PX)
            ys[i] = y
        total = ys[-1]
        self.factor = min(1.0, max_height / total) if total > 0 else 1.0
        self.ys = [y * self.factor for y in ys]
        self.height = self.ys[-1]

    def __call__(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return 0.0
        if i >= len(self.times) - 1:
            return self.ys[-1]
        a, b = self.times[i], self.times[i + 1]
        return self.ys[i] + (self.ys[i + 1] - self.ys[i]) * (t - a) / (b - a)


def render_timeline(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None,
                    max_ops: int = MAX_OPS, title: str = "Timeline") -> Path:
    all_pairs = pair_ops(history)
    pairs = _sample(all_pairs, max_ops)
    processes = sorted({p.process for p in all_pairs}, key=_process_key)
    column = {proc: i for i, proc in enumerate(processes)}
    nodes = process_nodes(history)
    windows, instants = fault_events(history, specs)
    t0, t1 = history_span_s(history)
    spans = [(p.start_s, p.end_s) for p in pairs]
    scale = TimeScale([t for w in windows for t in (w.start_s, w.end_s)] + [i.t_s for i in instants] + [t0, t1],
                      spans=spans, busy=[(p.start_s, p.end_s) for p in pairs if p.is_client])
    height = int(scale.height) + 24
    span = t1 - t0

    out: list[str] = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
                      f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>"]
    counts = {t: sum(1 for p in all_pairs if p.type == t and p.is_client) for t in ("ok", "fail", "info")}
    out.append(f"<div class='summary'>{len(all_pairs)} operations in {len(processes)} processes over "
               f"{span:.3f} s: {counts['ok']} ok, {counts['fail']} fail, {counts['info']} info "
               "(client ops). Time runs down, faster where nothing happens: striped bands are idle "
               "stretches, shortened. Hover a box for details.</div>")
    names = sorted({w.name for w in windows} | {i.name for i in instants})
    color = {n: FAULT_COLORS[i % len(FAULT_COLORS)] for i, n in enumerate(names)}
    out.append("<div class='legend'><span class='ok' style='color:#fff'>ok</span>"
               "<span class='fail' style='color:#fff'>fail</span><span class='info'>info</span>"
               "<span class='nemesis-op' style='color:#fff'>nemesis</span>"
               + "".join(f"<span class='fault-key' style='background:{color[n]}22;border-color:{color[n]}'>"
                         f"fault: {html.escape(n)}</span>" for n in names) + "</div>")
    if len(pairs) < len(all_pairs):
        out.append(f"<div class='note' id='sampled'>Showing {len(pairs)} of {len(all_pairs)} operations "
                   f"(every {len(all_pairs) / len(pairs):.1f}th, evenly sampled): the history is larger "
                   f"than this page's cap of {max_ops} boxes. Every operation is in history.jsonl.</div>")
    if not all_pairs:
        out.append("<div class='note' id='empty'>This history has no operations.</div>")
    out.append(f"<div class='wrap' data-op-count='{len(pairs)}' data-total-ops='{len(all_pairs)}' "
               f"data-height='{height}'>")

    def head(p: int | str) -> str:
        node = nodes.get(p)
        sub = f"<small>→ {html.escape(node)}</small>" if node else ("<small>faults</small>" if p == NEMESIS else "")
        return f"<div class='head' data-process='{html.escape(str(p))}'>{html.escape(str(p))}{sub}</div>"

    # The heads keep their column's width however many processes there are (a flex row would
    # shrink them to the window and part them from their columns), and the row is as wide as
    # the body, so its white background stays behind every head while it sticks on scrolling.
    width = max(len(processes), 1) * COLUMN_PX + (LABEL_MARGIN_PX if names else 0)
    out.append(f"<div class='heads' style='min-width:{width}px'>"
               + "".join(head(p) for p in processes) + "</div>")
    out.append(f"<div class='body' style='height:{height}px;width:{width}px'>")
    # Bands run across every column and into a margin on the right, where their labels sit
    # clear of the boxes: one lane per fault name, so overlapping faults' labels do not collide.
    label_x = max(len(processes), 1) * COLUMN_PX + 8
    lane = {n: i for i, n in enumerate(names)}
    for w in windows:
        top, bottom = scale(w.start_s), scale(w.end_s)
        c = color[w.name]
        label = w.name + (f" {w.detail}" if w.detail else "") + (" (never healed)" if w.open_ended else "")
        tip = html.escape(f"{label}: {w.start_s:.3f} s to {w.end_s:.3f} s", quote=True)
        out.append(f"<div class='fault' data-fault='{html.escape(w.name)}' style='top:{top:.1f}px;"
                   f"height:{max(bottom - top, 1):.1f}px;background:{c}1f;border-color:{c}' title='{tip}'></div>")
        out.append(f"<div class='fault-label' style='top:{top + 1 + 15 * lane[w.name]:.1f}px;left:{label_x}px;"
                   f"color:{c};border-color:{c}' title='{tip}'>{html.escape(label)} "
                   f"<small>{w.start_s:.2f}–{w.end_s:.2f} s</small></div>")
    for i in instants:
        c = color[i.name]
        label = i.f + (f" {i.detail}" if i.detail else "")
        out.append(f"<div class='instant' data-fault='{html.escape(i.name)}' style='top:{scale(i.t_s):.1f}px;"
                   f"border-color:{c}'></div>")
        out.append(f"<div class='fault-label' style='top:{scale(i.t_s) + 2 + 15 * lane[i.name]:.1f}px;"
                   f"left:{label_x}px;color:{c};border-color:{c}'>{html.escape(label)} "
                   f"<small>at {i.t_s:.2f} s</small></div>")
    for a, b in scale.gaps:
        top, bottom = scale(a), scale(b)
        out.append(f"<div class='gap' style='top:{top + 2:.1f}px;height:{max(bottom - top - 4, 1):.1f}px;"
                   f"line-height:{max(bottom - top - 4, 1):.1f}px' title='{b - a:.2f} s without events, shortened'>"
                   f"<span>⋯ {b - a:.2f} s</span></div>")
    last_tick = -TICK_EVERY_PX
    for t, y in zip(scale.times, scale.ys):
        if y - last_tick >= TICK_EVERY_PX:
            out.append(f"<div class='tick' style='top:{y:.1f}px'>{t:.3f} s</div>")
            last_tick = y
    for proc in processes:
        out.append(f"<div class='col' style='left:{column[proc] * COLUMN_PX}px'></div>")
    nemesis_detail = {p.index: describe_fault_value(p.value) for p in pairs if not p.is_client}
    for p in pairs:
        cls = p.type if p.is_client else "nemesis-op"
        top = scale(p.start_s)
        h = max(scale(p.end_s) - top, MIN_BOX_PX)
        first, second = _label(p, nemesis_detail.get(p.index, ""))
        lines = int((h + 1) // LABEL_PX)
        text = "".join(f"<span>{html.escape(s)}</span>" for s in (first, second)[:lines] if s)
        out.append(f"<div class='op {cls}' style='top:{top:.1f}px;height:{h:.1f}px;"
                   f"left:{column[p.process] * COLUMN_PX + 5}px;width:{COLUMN_PX - 10}px' "
                   f"title='{html.escape(_tooltip(p, nodes.get(p.process)), quote=True)}'>{text}</div>")
    out.append("</div></div></body></html>")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out), encoding="utf-8")
    return target
