"""Plots as a user reads them (issue 16): each operation its own color (failures red, unknown
outcomes orange), latency quantiles as few series that break over stretches with no data."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.colors import to_rgb

from checkers.history import Op
from harness.report import plots

S = 1_000_000_000


def _ops() -> list[Op]:
    ops: list[Op] = []

    def pair(t: float, process: int, f: str, outcome: str, key: int = 1) -> None:
        ops.append(Op(len(ops), int(t * S), process, "invoke", f, key, 1))
        ops.append(Op(len(ops), int((t + 0.01) * S), process, outcome, f, key, 1))

    # reads, writes and cas between 0 and 2 s, nothing from 2 to 8 s, then again 8-10 s
    for i in range(20):
        t = 0.1 * i
        pair(t, 0, "read", "ok")
        pair(t + 0.02, 1, "write", "ok")
        pair(t + 0.04, 2, "cas", "fail" if i % 2 else "ok")
        pair(8 + t, 0, "read", "ok")
        pair(8 + t + 0.02, 1, "write", "info" if i == 3 else "ok")
    ops.sort(key=lambda o: o.time)
    return [Op(i, o.time, o.process, o.type, o.f, o.key, o.value) for i, o in enumerate(ops)]


def test_each_operation_has_its_own_color_and_outcomes_keep_their_family():
    fs = {"read", "write", "cas"}
    ok = {f: plots.op_color(fs, f, "ok") for f in fs}
    assert len(set(ok.values())) == 3
    for f in fs:
        r, g, b = to_rgb(plots.op_color(fs, f, "fail"))
        assert r > 0.6 and r > g and r > b, f  # red-ish
        r, g, b = to_rgb(plots.op_color(fs, f, "info"))
        assert r > 0.75 and 0.4 < g < 0.95 and b < 0.5, f  # orange


def _figure_of(render, monkeypatch, tmp_path: Path):
    seen = {}
    real = plots._save

    def save(fig, path):
        seen["fig"] = fig
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    render(_ops(), tmp_path / "out.png")
    return seen["fig"].axes[0]


def test_latency_scatter_colors_ok_ops_apart(monkeypatch, tmp_path):
    ax = _figure_of(plots.render_latency, monkeypatch, tmp_path)
    colors = {c.get_label(): tuple(c.get_facecolor()[0][:3]) for c in ax.collections}
    assert colors["read ok"] != colors["write ok"] != colors["cas ok"] != colors["read ok"]
    assert colors["cas fail"][0] > colors["cas fail"][1]


def test_quantiles_two_series_per_operation_broken_over_gaps(monkeypatch, tmp_path):
    ax = _figure_of(plots.render_latency_quantiles, monkeypatch, tmp_path)
    labels = sorted(line.get_label() for line in ax.lines)
    assert labels == ["cas p50", "cas p99", "read p50", "read p99", "write p50", "write p99"]
    read = next(line for line in ax.lines if line.get_label() == "read p50")
    xs, ys = read.get_xdata(), read.get_ydata()
    gap = [x for x, y in zip(xs, ys) if math.isnan(y)]
    assert len(gap) == 1 and 2.0 < gap[0] < 8.0  # one break, in the idle stretch
    assert all(not math.isnan(y) for x, y in zip(xs, ys) if x < 2.0 or x > 8.0)
    colors = {line.get_label().split()[0]: line.get_color() for line in ax.lines}
    assert len(set(colors.values())) == 3


def test_with_gaps_leaves_contiguous_windows_alone():
    assert plots.with_gaps([(0.5, 1.0), (1.5, 2.0), (2.5, 3.0)], 1.0) == ([0.5, 1.5, 2.5], [1.0, 2.0, 3.0])
    xs, ys = plots.with_gaps([(0.5, 1.0), (3.5, 2.0)], 1.0)
    assert xs[1] == 2.0 and math.isnan(ys[1]) and ys[2] == 2.0
