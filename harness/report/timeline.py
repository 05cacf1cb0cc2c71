"""timeline.html: one column per process, every operation a box from invocation to completion.

Self-contained (inline CSS, no scripts, no external assets): hovering a box shows
its f, key, value, type, latency and error through the native tooltip. Fault
windows are shaded across all columns. Histories with more than ``max_ops``
operations are sampled evenly and the page says so at the top.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from checkers.history import NEMESIS, Op
from harness.report.faults import fault_events
from harness.report.pairs import OpPair, history_span_s, pair_ops

MAX_OPS = 100_000
COLUMN_PX = 90
MAX_HEIGHT_PX = 60_000
MIN_BOX_PX = 2

_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
.note { background: #fff3cd; border: 1px solid #e0c36a; padding: 6px 10px; margin: 8px 0; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 3px; }
.wrap { position: relative; margin-top: 12px; }
.heads { display: flex; margin-left: 60px; position: sticky; top: 0; background: #fff; z-index: 5; }
.head { width: %(col)dpx; text-align: center; font-weight: 600; border-bottom: 1px solid #ccc; }
.body { position: relative; margin-left: 60px; }
.col { position: absolute; top: 0; bottom: 0; width: %(col)dpx; border-left: 1px solid #eee; }
.op { position: absolute; left: 6px; right: 6px; min-height: %(minbox)dpx; border-radius: 2px;
      opacity: .85; box-sizing: border-box; }
.op:hover { opacity: 1; outline: 2px solid #000; z-index: 4; }
.ok { background: #2a9d3f; } .fail { background: #d62728; } .info { background: #f0a202; }
.nemesis-op { background: #555; }
.fault { position: absolute; left: 0; right: 0; background: rgba(31,119,180,.12);
         border-top: 1px dashed #1f77b4; z-index: 0; }
.fault span { font-size: 10px; color: #1f77b4; padding-left: 2px; }
.tick { position: absolute; left: -60px; width: 56px; text-align: right; font-size: 10px; color: #777; }
""" % {"col": COLUMN_PX, "minbox": MIN_BOX_PX}


def _process_key(p: int | str) -> tuple[int, int, str]:
    if p == NEMESIS:
        return (1, 0, "")
    return (0, p, "") if isinstance(p, int) else (0, 1 << 62, str(p))


def _tooltip(p: OpPair) -> str:
    lines = [f"process {p.process}", f"f: {p.f}", f"type: {p.type}" + (" (never completed)" if p.incomplete else "")]
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


def render_timeline(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None,
                    max_ops: int = MAX_OPS, title: str = "Timeline") -> Path:
    all_pairs = pair_ops(history)
    pairs = _sample(all_pairs, max_ops)
    processes = sorted({p.process for p in all_pairs}, key=_process_key)
    column = {proc: i for i, proc in enumerate(processes)}
    t0, t1 = history_span_s(history)
    span = max(t1 - t0, 1e-6)
    px_per_s = min(2000.0, MAX_HEIGHT_PX / span)
    height = int(span * px_per_s) + 40

    def y(t: float) -> float:
        return (t - t0) * px_per_s

    out: list[str] = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
                      f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>"]
    counts = {t: sum(1 for p in all_pairs if p.type == t and p.is_client) for t in ("ok", "fail", "info")}
    out.append(f"<div class='summary'>{len(all_pairs)} operations in {len(processes)} processes over "
               f"{span:.3f} s: {counts['ok']} ok, {counts['fail']} fail, {counts['info']} info "
               "(client ops); hover a box for details.</div>")
    out.append("<div class='legend'><span class='ok'>ok</span><span class='fail'>fail</span>"
               "<span class='info'>info</span><span class='nemesis-op' style='color:#fff'>nemesis</span></div>")
    if len(pairs) < len(all_pairs):
        out.append(f"<div class='note' id='sampled'>Showing {len(pairs)} of {len(all_pairs)} operations "
                   f"(every {len(all_pairs) / len(pairs):.1f}th, evenly sampled): the history is larger "
                   f"than this page's cap of {max_ops} boxes. Every operation is in history.jsonl.</div>")
    if not all_pairs:
        out.append("<div class='note' id='empty'>This history has no operations.</div>")
    out.append(f"<div class='wrap' data-op-count='{len(pairs)}' data-total-ops='{len(all_pairs)}'>")
    out.append("<div class='heads'>" + "".join(
        f"<div class='head' data-process='{html.escape(str(p))}'>{html.escape(str(p))}</div>" for p in processes)
        + "</div>")
    out.append(f"<div class='body' style='height:{height}px;width:{len(processes) * COLUMN_PX}px'>")
    windows, instants = fault_events(history, specs)
    for w in windows:
        out.append(f"<div class='fault' style='top:{y(w.start_s):.1f}px;height:{max(y(w.end_s) - y(w.start_s), 1):.1f}px'>"
                   f"<span>{html.escape(w.name)}</span></div>")
    for i in instants:
        out.append(f"<div class='fault' style='top:{y(i.t_s):.1f}px;height:1px'><span>{html.escape(i.f)}</span></div>")
    ticks = 10
    for k in range(ticks + 1):
        t = t0 + span * k / ticks
        out.append(f"<div class='tick' style='top:{y(t):.1f}px'>{t:.2f} s</div>")
    for proc in processes:
        out.append(f"<div class='col' style='left:{column[proc] * COLUMN_PX}px'></div>")
    for p in pairs:
        cls = p.type if p.is_client else "nemesis-op"
        top, h = y(p.start_s), max(y(p.end_s) - y(p.start_s), MIN_BOX_PX)
        out.append(f"<div class='op {cls}' style='top:{top:.1f}px;height:{h:.1f}px;"
                   f"left:{column[p.process] * COLUMN_PX + 6}px;width:{COLUMN_PX - 12}px' "
                   f"title='{html.escape(_tooltip(p), quote=True)}'></div>")
    out.append("</div></div></body></html>")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out), encoding="utf-8")
    return target
