"""Data the run, history, log and compare pages show, computed from a stored run."""

from __future__ import annotations

import json
import os
import re
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from .catalog import Run, verdict_word
from .paths import valid_part, walk_files

PLOTS = ("latency.png", "latency-quantiles.png", "rate.png", "clock.png")
HISTORY_PAGE = 500
LOG_LINES = 5000
_TS = re.compile(r"\bts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\b")


def load_history(run: Run) -> tuple[list[Any], str | None]:
    """The run's history (a torn last line dropped) and an error to show instead, if any."""
    from harness.store import RunDir, StoreError, load_history as store_load

    if not (run.path / "history.jsonl").is_file():
        return [], "this run has no history.jsonl"
    try:
        history, _ = store_load(RunDir(run.path), ignore_torn_tail=True)
    except StoreError as err:
        return [], str(err)
    return history, None


def shading(run: Run) -> list[Any]:
    try:
        from harness.registry import SHADING
    except Exception:  # noqa: BLE001 - a registry that cannot load leaves plots unshaded
        return []
    return [SHADING[n] for n in run.nemeses if n in SHADING]


def fault_windows(run: Run, history: Sequence[Any]) -> list[Any]:
    from harness.report.faults import fault_events

    try:
        windows, _ = fault_events(history, shading(run))
    except Exception:  # noqa: BLE001
        return []
    return windows


def checker_rows(run: Run) -> list[dict[str, Any]]:
    """Each checker: verdict word, its explanation (or error), details as pretty JSON."""
    rows = []
    for name, result in ((run.results or {}).get("checkers") or {}).items():
        if not isinstance(result, dict):
            continue
        explanation = result.get("explanation") or result.get("error") or ""
        details = {k: v for k, v in result.items() if k not in ("explanation",)}
        rows.append({"name": name, "verdict": verdict_word(result.get("valid")),
                     "explanation": explanation if isinstance(explanation, str) else json.dumps(explanation, indent=2),
                     "page": result.get("page") if isinstance(result.get("page"), str) else None,
                     "seconds": result.get("seconds"),
                     "details": json.dumps(details, indent=2, sort_keys=True, default=str)})
    return rows


def pretty_json(path: Path) -> str | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


def run_files(run: Run) -> list[dict[str, Any]]:
    """Every servable file of the run (relative name, size, kind), for the file list."""
    out = []
    for path in walk_files(run.path):
        rel = path.relative_to(run.path).as_posix()
        size = path.stat().st_size
        suffix = path.suffix.lower()
        kind = "image" if suffix == ".png" else "text" if suffix in TEXT_SUFFIXES else "other"
        out.append({"name": rel, "size": size, "kind": kind})
    return out


TEXT_SUFFIXES = {".json", ".jsonl", ".log", ".txt", ".md", ".edn", ".closed", ".csv"}
CONTENT_TYPES = {".png": "image/png", ".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".svg": "image/svg+xml", ".zip": "application/zip"}


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    return "text/plain; charset=utf-8" if suffix in TEXT_SUFFIXES else "application/octet-stream"


def preview(path: Path, lines: int = 12, limit: int = 4096) -> str:
    with open(path, "rb") as fh:
        head = fh.read(limit).decode("utf-8", errors="replace")
    return "\n".join(head.splitlines()[:lines])


# --- history ------------------------------------------------------------------------------
def filter_history(history: Sequence[Any], process: str, key: str, type_: str, f: str) -> list[Any]:
    def keep(op: Any) -> bool:
        return ((not process or str(op.process) == process) and (not key or str(op.key) == key)
                and (not type_ or op.type == type_) and (not f or op.f == f))

    return [op for op in history if keep(op)]


def history_choices(history: Sequence[Any]) -> dict[str, list[str]]:
    def sort(values: set[str]) -> list[str]:
        return sorted(values, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    return {"process": sort({str(op.process) for op in history}),
            "key": sort({str(op.key) for op in history if op.key is not None}),
            "type": ["invoke", "ok", "fail", "info"],
            "f": sorted({op.f for op in history})}


def history_row(op: Any) -> dict[str, Any]:
    return {"index": op.index, "time": f"{op.time / 1e9:.3f}", "process": op.process, "type": op.type, "f": op.f,
            "key": "" if op.key is None else json.dumps(op.key),
            "value": "" if op.value is None else json.dumps(op.value, default=str),
            "error": "" if op.error is None else (op.error if isinstance(op.error, str) else json.dumps(op.error))}


# --- node logs ----------------------------------------------------------------------------
def node_logs(run: Run) -> list[str]:
    nodes = run.path / "nodes"
    if not nodes.is_dir() or nodes.is_symlink():
        return []
    return sorted(d.name for d in nodes.iterdir()
                  if valid_part(d.name) and d.is_dir() and not d.is_symlink()
                  and (d / "node.log").is_file() and not (d / "node.log").is_symlink())


def test_origin(run: Run, history: Sequence[Any]) -> float | None:
    """Wall-clock time (epoch s) of the history's time 0: the history file was last written
    when its last op was appended, so origin = its mtime - that op's time. History times are
    monotonic and node logs are wall clock; this lines them up to within a flush."""
    if not history:
        return None
    try:
        mtime = os.stat(run.path / "history.jsonl").st_mtime
    except OSError:
        return None
    return mtime - max(op.time for op in history) / 1e9


def marked_log(run: Run, node: str, history: Sequence[Any], windows: Sequence[Any]
               ) -> tuple[list[dict[str, Any]], int, float | None]:
    """Lines of a node's log with their test time, the faults active then, and a marker row
    where a fault window opens or closes; (rows, total lines, origin)."""
    path = run.path / "nodes" / node / "node.log"
    origin = test_origin(run, history)
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    edges = sorted([(w.start_s, f"{w.name} starts") for w in windows]
                   + [(w.end_s, f"{w.name} ends") for w in windows if not w.open_ended])
    rows: list[dict[str, Any]] = []
    pending = list(edges)
    for line in lines[:LOG_LINES]:
        t = _line_time(line, origin)
        if t is not None:
            while pending and pending[0][0] <= t:
                at, what = pending.pop(0)
                rows.append({"marker": f"{what} at {at:.2f} s"})
        active = [w.name for w in windows if t is not None and w.start_s <= t <= w.end_s]
        rows.append({"line": line, "t": None if t is None else f"{t:.2f}", "faults": active})
    if origin is not None and len(lines) <= LOG_LINES:
        rows += [{"marker": f"{what} at {at:.2f} s (after the last line)"} for at, what in pending]
    return rows, len(lines), origin


def _line_time(line: str, origin: float | None) -> float | None:
    if origin is None:
        return None
    match = _TS.search(line)
    if not match:
        return None
    text = match.group(1)
    try:
        when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    from datetime import timezone

    return when.replace(tzinfo=timezone.utc).timestamp() - origin


# --- compare --------------------------------------------------------------------------------
def quantiles(history: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per client op name: ok count, latency p50 / p90 / p99 / max in ms."""
    from harness.report.pairs import pair_ops

    by_f: dict[str, list[float]] = {}
    for p in pair_ops(history):
        if p.is_client and p.type == "ok" and not p.incomplete:
            by_f.setdefault(p.f, []).append(p.latency_ms)
    out = {}
    for f, values in sorted(by_f.items()):
        values.sort()

        def q(x: float) -> float:
            return values[min(len(values) - 1, int(x * len(values)))]

        out[f] = {"count": len(values), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": values[-1]}
    return out


def spec_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[dict[str, Any]]:
    a, b = a or {}, b or {}
    rows = []
    for key in sorted(set(a) | set(b)):
        va = json.dumps(a.get(key), sort_keys=True, default=str) if key in a else "-"
        vb = json.dumps(b.get(key), sort_keys=True, default=str) if key in b else "-"
        rows.append({"key": key, "a": va, "b": vb, "same": va == vb})
    return rows


# --- zip ----------------------------------------------------------------------------------
def zip_run(run: Run) -> tuple[int, Iterator[bytes]]:
    """The run directory as a zip (regular files only, symlinks never followed), streamed
    from a temporary file so a large run does not sit in memory."""
    import tempfile

    spool = tempfile.TemporaryFile()
    top = f"{run.test}-{run.stamp}"
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in walk_files(run.path):
            zf.write(path, f"{top}/{path.relative_to(run.path).as_posix()}")
    size = spool.tell()
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                block = spool.read(256 * 1024)
                if not block:
                    return
                yield block
        finally:
            spool.close()

    return size, chunks()


__all__ = ["PLOTS", "checker_rows", "content_type", "filter_history", "history_choices", "history_row",
           "load_history", "marked_log", "node_logs", "pretty_json", "preview", "quantiles", "run_files",
           "spec_diff", "zip_run"]
