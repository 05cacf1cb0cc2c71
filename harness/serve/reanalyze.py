"""Re-check a stored run with today's checkers, without touching what was stored.

The stored run stays as it was: ``analyze`` (harness/analysis.py ``check_run``) runs on a
copy at ``<run>/reanalysis/<timestamp>/`` (the run's files, its own ``results.json`` kept as
``results.stored.json``, the old plots and pages left out so the ones there are new). The
check runs in a background thread; the copy's state is on disk: ``results.json`` when done,
``error.txt`` when it failed, neither while running. :func:`verdict_diff` compares the stored
verdicts with the new ones.
"""

from __future__ import annotations

import shutil
import threading
import traceback
from pathlib import Path
from typing import Any

from harness.store import RunDir, timestamp

from .catalog import verdict_word

REANALYSIS = "reanalysis"
STORED_RESULTS = "results.stored.json"
ERROR = "error.txt"
# Derived files the check writes again: left out of the copy so nothing old is shown as new.
_DERIVED = {"results.json", "latency.png", "latency-quantiles.png", "rate.png", "clock.png", "timeline.html",
            "linearizability.html"}


def start(run_path: Path, *, time_limit: float = 120.0) -> str:
    """Copy the run, start checking the copy, return the copy's name (a timestamp)."""
    stamp = timestamp()
    dest = run_path / REANALYSIS / stamp
    dest.parent.mkdir(exist_ok=True)

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {REANALYSIS} if Path(directory) == run_path else set()
        if Path(directory) == run_path:
            skip |= _DERIVED & set(names)
        return skip

    shutil.copytree(run_path, dest, symlinks=True, ignore=ignore)
    stored = run_path / "results.json"
    if stored.is_file():
        shutil.copyfile(stored, dest / STORED_RESULTS)
    thread = threading.Thread(target=_check, args=(dest, time_limit), name=f"reanalyze-{stamp}", daemon=True)
    thread.start()
    return stamp


def _check(dest: Path, time_limit: float) -> None:
    from harness.analysis import check_run

    try:
        check_run(RunDir(dest), time_limit=time_limit)
    except Exception:  # noqa: BLE001 - said on the page, never lost
        (dest / ERROR).write_text(traceback.format_exc(), encoding="utf-8")


def state(dest: Path) -> str:
    if (dest / "results.json").is_file():
        return "done"
    if (dest / ERROR).is_file():
        return "failed"
    return "running"


def verdict_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per checker (and the overall verdict first): before, after, changed."""
    before = before or {}
    after = after or {}
    rows = [{"name": "(overall)", "before": verdict_word(before.get("valid")) if before else "-",
             "after": verdict_word(after.get("valid")) if after else "-"}]
    b_checkers = before.get("checkers") or {}
    a_checkers = after.get("checkers") or {}
    for name in list(dict.fromkeys([*b_checkers, *a_checkers])):
        b, a = b_checkers.get(name), a_checkers.get(name)
        rows.append({"name": name,
                     "before": verdict_word(b.get("valid")) if isinstance(b, dict) else "-",
                     "after": verdict_word(a.get("valid")) if isinstance(a, dict) else "-"})
    for row in rows:
        row["changed"] = row["before"] != row["after"]
    return rows


def reanalyses(run_path: Path) -> list[str]:
    base = run_path / REANALYSIS
    if not base.is_dir() or base.is_symlink():
        return []
    return sorted((p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)
