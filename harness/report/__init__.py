"""Plots and pages rendered from a stored history.

    from harness.report import render_all
    files = render_all(load_jsonl("history.jsonl"), run_dir, specs=nemesis.shading())

Every renderer is a pure function ``(history, path, specs) -> path`` (``render_clock``
gives None and writes nothing when the history recorded no clock offsets); ``specs``
lists fault shading specs (``FaultSpec``, ``nemeses.package.Shading`` or their dict
form). See :mod:`harness.report.faults` for how fault windows are derived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from checkers.history import Op
from harness.report.faults import FaultInstant, FaultSpec, FaultWindow, fault_events
from harness.report.plots import (render_clock, render_latency, render_latency_quantiles, render_rate)
from harness.report.timeline import render_timeline

RENDERERS: dict[str, Callable[..., Path | None]] = {
    "latency.png": render_latency,
    "latency-quantiles.png": render_latency_quantiles,
    "rate.png": render_rate,
    "clock.png": render_clock,
    "timeline.html": render_timeline,
}

__all__ = ["FaultInstant", "FaultSpec", "FaultWindow", "RENDERERS", "fault_events", "render_all",
           "render_clock", "render_latency", "render_latency_quantiles", "render_rate", "render_timeline"]


def render_all(history: Sequence[Op], out_dir: str | Path, specs: Iterable[Any] | None = None
               ) -> dict[str, Path]:
    """Write every plot and the timeline into OUT_DIR; return file name -> path of those written.

    clock.png is written only when the history recorded clock offsets (a clock fault ran):
    without them there is nothing to draw, and a stale one from an earlier render is removed.
    """
    spec_list = list(specs or ())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {name: render(history, out / name, spec_list) for name, render in RENDERERS.items()}
    return {name: path for name, path in written.items() if path is not None}
