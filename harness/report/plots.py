"""PNG plots of a history: latency, latency quantiles, rate and clock offsets.

Pure functions from a history (and fault shading specs) to a file. They use
matplotlib's object API with the Agg canvas, so they need no display, no pyplot
global state, and are safe to call from any thread. An empty history gives a
plot that says so instead of an error.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from checkers.history import Op
from harness.report.faults import fault_events
from harness.report.pairs import OpPair, history_span_s, pair_ops

OUTCOME_COLORS = {"ok": "#2a9d3f", "fail": "#d62728", "info": "#f0a202"}
# Each operation its own color, as in Jepsen's plots: successes in distinct cool hues, failures
# in shades of red, unknown outcomes in shades of orange; the marker still tells f apart too.
OP_COLORS = {"ok": ("#1f77b4", "#2a9d3f", "#9467bd", "#17becf", "#8c564b", "#e377c2"),
             "fail": ("#d62728", "#ff6f91", "#a50f15", "#f4a6a6"),
             "info": ("#f0a202", "#ffbb78", "#c76b00", "#ffd92f")}
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")
FAULT_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22")
QUANTILES = ((0.5, "p50", "-"), (0.95, "p95", "--"), (0.99, "p99", "-."), (1.0, "max", ":"))
# latency-quantiles.png draws these two per operation (its colors): the typical and the tail
PLOTTED_QUANTILES = ("p50", "p99")
FIGSIZE = (11, 5.5)
DPI = 100


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, format="png")
    return p


def _empty(ax: Axes, title: str, what: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=14, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def _markers(fs: Iterable[str]) -> dict[str, str]:
    return {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(sorted(set(fs)))}


def op_color(fs: Iterable[str], f: str, outcome: str) -> str:
    """The color of ``f``'s ``outcome`` among the operations ``fs``: f's own hue in that
    outcome's family (ok: cool hues, fail: reds, info: oranges)."""
    palette = OP_COLORS.get(outcome)
    if palette is None:
        return "black"
    return palette[sorted(set(fs)).index(f) % len(palette)]


def _shade(ax: Axes, history: Sequence[Op], specs: Iterable[Any] | None) -> list[Line2D]:
    """Shade fault windows and draw fault instants; return legend handles for them."""
    windows, instants = fault_events(history, specs)
    names = sorted({w.name for w in windows} | {i.name for i in instants})
    color = {n: FAULT_COLORS[i % len(FAULT_COLORS)] for i, n in enumerate(names)}
    for w in windows:
        ax.axvspan(w.start_s, w.end_s, color=color[w.name], alpha=0.15, lw=0, zorder=0)
    for i in instants:
        ax.axvline(i.t_s, color=color[i.name], lw=1.2, ls="--", zorder=1)
    windowed = {w.name for w in windows}
    return [Line2D([], [], color=color[n], lw=8, alpha=0.3, label=f"fault: {n}") if n in windowed
            else Line2D([], [], color=color[n], lw=1.2, ls="--", label=f"fault: {n}") for n in names]


def _client_pairs(history: Sequence[Op]) -> list[OpPair]:
    return [p for p in pair_ops(history) if p.is_client and not p.incomplete]


def render_latency(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None) -> Path:
    """Every client op as a point: invocation time vs latency (log); color = f and outcome
    (:func:`op_color`), marker = f."""
    fig, ax = _figure()
    pairs = _client_pairs(history)
    title = "Latency of every operation"
    if not pairs:
        _empty(ax, title, "no client operations in this history")
        return _save(fig, path)
    marker = _markers(p.f for p in pairs)
    fs = {p.f for p in pairs}
    groups: dict[tuple[str, str], list[OpPair]] = defaultdict(list)
    for p in pairs:
        groups[(p.f, p.type)].append(p)
    handles = _shade(ax, history, specs)
    for (f, outcome), ps in sorted(groups.items()):
        ax.scatter([p.start_s for p in ps], [max(p.latency_ms, 1e-3) for p in ps], s=10,
                   marker=marker[f], color=op_color(fs, f, outcome), alpha=0.7,
                   label=f"{f} {outcome}", zorder=2, linewidths=0)
    ax.set_yscale("log")
    ax.set_xlabel("time since test start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty sorted list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def quantile_window(history: Sequence[Op], window_s: float | None = None) -> float:
    """Width (s) of latency-quantiles' time windows: ``window_s``, or 1/40 of the history."""
    t0, t1 = history_span_s(history)
    return window_s or max((t1 - t0) / 40.0, 1e-3)


def with_gaps(points: Sequence[tuple[float, float]], width: float) -> tuple[list[float], list[float]]:
    """x and y lists for a line through window midpoints, broken (NaN) where windows with no
    data lie between two points, so a line never bridges a stretch without operations."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        if xs and x - xs[-1] > 1.5 * width:
            xs.append((xs[-1] + x) / 2)
            ys.append(math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def latency_quantiles(history: Sequence[Op], window_s: float | None = None
                      ) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """f -> quantile name -> [(window midpoint s, latency ms)] over completed client ops."""
    pairs = _client_pairs(history)
    if not pairs:
        return {}
    t0, _ = history_span_s(history)
    width = quantile_window(history, window_s)
    buckets: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in pairs:
        buckets[p.f][int((p.start_s - t0) // width)].append(p.latency_ms)
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for f, by_bucket in buckets.items():
        series: dict[str, list[tuple[float, float]]] = {name: [] for _, name, _ in QUANTILES}
        for b in sorted(by_bucket):
            values = sorted(by_bucket[b])
            mid = t0 + (b + 0.5) * width
            for q, name, _ in QUANTILES:
                series[name].append((mid, _quantile(values, q)))
        out[f] = series
    return out


def render_latency_quantiles(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None,
                             window_s: float | None = None) -> Path:
    """p50 (solid) and p99 (dashed) latency per time window, one color per f (its ok color in
    the other plots); lines break over windows without operations."""
    fig, ax = _figure()
    title = "Latency quantiles over time"
    data = latency_quantiles(history, window_s)
    if not data:
        _empty(ax, title, "no client operations in this history")
        return _save(fig, path)
    width = quantile_window(history, window_s)
    handles = _shade(ax, history, specs)
    styles = {name: style for _, name, style in QUANTILES}
    styles["p99"] = "--"
    for f in sorted(data):
        color = op_color(data, f, "ok")
        for name in PLOTTED_QUANTILES:
            xs, ys = with_gaps([(x, max(y, 1e-3)) for x, y in data[f][name]], width)
            ax.plot(xs, ys, ls=styles[name], color=color, marker=".", markersize=3, label=f"{f} {name}",
                    zorder=2)
    ax.set_yscale("log")
    ax.set_xlabel("time since test start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def throughput(history: Sequence[Op], bin_s: float = 1.0) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(f, outcome) -> [(bin start s, completions per second)], counted by completion time."""
    pairs = _client_pairs(history)
    if not pairs:
        return {}
    t0, t1 = history_span_s(history)
    nbins = max(1, math.ceil((t1 - t0) / bin_s + 1e-9))
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * nbins)
    for p in pairs:
        counts[(p.f, p.type)][min(nbins - 1, int((p.end_s - t0) // bin_s))] += 1
    return {k: [(t0 + i * bin_s, c / bin_s) for i, c in enumerate(v)] for k, v in counts.items()}


def render_rate(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None,
                bin_s: float = 1.0) -> Path:
    """Completed client ops per second; color = f and outcome (:func:`op_color`), marker = f."""
    fig, ax = _figure()
    title = "Throughput"
    data = throughput(history, bin_s)
    if not data:
        _empty(ax, title, "no client operations in this history")
        return _save(fig, path)
    marker = _markers(f for f, _ in data)
    fs = {f for f, _ in data}
    handles = _shade(ax, history, specs)
    for (f, outcome), pts in sorted(data.items()):
        # steps-post draws each bin from its start: repeat the last value at the last bin's end
        xs, ys = [x for x, _ in pts] + [pts[-1][0] + bin_s], [y for _, y in pts] + [pts[-1][1]]
        ax.plot(xs, ys, color=op_color(fs, f, outcome), markevery=list(range(len(pts))),
                marker=marker[f], markersize=4, lw=1, drawstyle="steps-post", label=f"{f} {outcome}", zorder=2)
    ax.set_xlabel("time since test start (s)")
    ax.set_ylabel(f"operations per second ({bin_s:g} s bins)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def clock_offsets(history: Sequence[Op]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """kind ("offsets" set by the nemesis, "measured" as nodes reported) -> node -> [(t s, offset s)].

    Read from nemesis completions whose value is a dict with an ``offsets`` and/or
    ``measured`` mapping of node name to seconds (the clock nemesis records both).
    """
    out: dict[str, dict[str, list[tuple[float, float]]]] = {"offsets": defaultdict(list),
                                                              "measured": defaultdict(list)}
    for p in pair_ops(history):
        if p.is_client or not isinstance(p.value, dict):
            continue
        for kind in out:
            readings = p.value.get(kind)
            if isinstance(readings, dict):
                for node, offset in readings.items():
                    if isinstance(offset, (int, float)) and not isinstance(offset, bool):
                        out[kind][str(node)].append((p.end_s, float(offset)))
    return {k: dict(v) for k, v in out.items() if v}


def render_clock(history: Sequence[Op], path: str | Path, specs: Iterable[Any] | None = None) -> Path | None:
    """Per-node clock offsets over time: steps for what was set, crosses for what nodes reported.

    A history with no clock offsets recorded (no clock fault ran) gets no plot: nothing is
    written, a clock.png left by an earlier rendering of the same run is removed, and the
    result is None. An empty placeholder only made people look for a fault that never ran."""
    data = clock_offsets(history)
    if not data:
        Path(path).unlink(missing_ok=True)
        return None
    fig, ax = _figure()
    title = "Clock offsets per node"
    handles = _shade(ax, history, specs)
    _, t1 = history_span_s(history)
    nodes = sorted({n for series in data.values() for n in series})
    color = {n: FAULT_COLORS[i % len(FAULT_COLORS)] for i, n in enumerate(nodes)}
    for node, pts in sorted(data.get("offsets", {}).items()):
        xs, ys = [x for x, _ in pts] + [t1], [y for _, y in pts] + [pts[-1][1]]
        ax.plot(xs, ys, drawstyle="steps-post", color=color[node], lw=1.5, label=f"{node} set")
    for node, pts in sorted(data.get("measured", {}).items()):
        ax.scatter([x for x, _ in pts], [y for _, y in pts], color=color[node], marker="x", s=25,
                   label=f"{node} reported", zorder=3)
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xlabel("time since test start (s)")
    ax.set_ylabel("node clock - real clock (s)")
    ax.set_title(title)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)
