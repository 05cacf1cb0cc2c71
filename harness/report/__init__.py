"""Plots and pages rendered from a stored history.

    from harness.report import render_all
    files = render_all(load_jsonl("history.jsonl"), run_dir, specs=nemesis.shading())

Every renderer is a pure function ``(history, path, specs) -> path``; ``specs``
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

RENDERERS: dict[str, Callable[..., Path]] = {
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
    """Write every plot and the timeline into OUT_DIR; return file name -> path.

    clock.png is always written (it says so when no clock faults were recorded),
    so a run directory has the same files whatever the nemeses were.
    """
    spec_list = list(specs or ())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: render(history, out / name, spec_list) for name, render in RENDERERS.items()}
