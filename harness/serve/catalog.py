"""What is in a results dir, read for the browser: runs, their state, and groups of runs.

A *run* is ``<root>/<test>/<timestamp>/`` with a ``test.json`` or a ``history.jsonl``
(harness/store.py). Its state:

- ``valid`` / ``invalid`` / ``unknown``: from ``results.json`` (the checkers ran); a run
  stopped by Ctrl-C or SIGTERM has a ``results.json`` marked ``incomplete``: *incomplete*;
- ``running``: no ``results.json`` yet and one of its files was written in the last
  :data:`LIVE_SECONDS` (the harness is driving clients, healing or checking);
- ``incomplete``: no ``results.json``, the history was closed (``history.closed``) but never
  judged (``ukehi-jepsen analyze`` judges it);
- ``crashed``: no ``results.json`` and the history was never closed: the harness stopped
  in the middle of the run.

*Groups*: the runs of one ``run --test-count N`` (same test directory, same settings but
the seed, seeds one apart, in time order: the store keeps no other mark of them), a
``matrix`` table (``<root>/matrix/<timestamp>/matrix.json``) and a ``regress`` table
(``<root>/regress/<timestamp>/regress.json``). Each gives its flake rate: invalid runs / runs.

Reads are cached by (path, size, mtime), so a page over a large store re-reads only
what changed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .paths import valid_part

LIVE_SECONDS = 120.0
VERDICTS = ("valid", "invalid", "unknown", "running", "incomplete", "crashed")
# Keys of test.json that differ between the runs of one --test-count group or do not
# describe the test at all.
_NOT_SETTINGS = ("seed", "run_id", "versions", "backend_class", "results_dir")


@dataclass
class Run:
    id: str  # "<test>/<timestamp>", the name in every URL
    test: str
    stamp: str
    path: Path
    spec: dict[str, Any] | None
    results: dict[str, Any] | None
    state: str
    problems: list[str] = field(default_factory=list)  # unreadable files, said on the page
    duration_s: float | None = None
    progress: str | None = None
    idle_s: float | None = None
    group: str | None = None  # id of its --test-count group

    @property
    def started(self) -> str:
        return stamp_text(self.stamp)

    @property
    def workload(self) -> str:
        return str((self.spec or {}).get("workload", "?"))

    @property
    def nemeses(self) -> list[str]:
        return [str(n) for n in (self.spec or {}).get("nemeses", []) or []]

    @property
    def nodes(self) -> list[str]:
        return [str(n) for n in (self.spec or {}).get("nodes", []) or []]

    @property
    def backend(self) -> str:
        return str((self.spec or {}).get("backend", "?"))

    @property
    def seed(self) -> Any:
        return (self.spec or {}).get("seed")

    @property
    def ops(self) -> int | None:
        ops = (self.results or {}).get("ops")
        return ops if isinstance(ops, int) else None

    @property
    def checkers(self) -> dict[str, str]:
        """checker name -> valid / invalid / unknown."""
        out = {}
        for name, result in ((self.results or {}).get("checkers") or {}).items():
            out[name] = verdict_word(result.get("valid") if isinstance(result, dict) else None)
        return out

    def text(self) -> str:
        """What the free-text filter searches."""
        return " ".join([self.id, self.workload, ",".join(self.nemeses), self.backend, self.state,
                         json.dumps((self.spec or {}).get("node_options", {})),
                         json.dumps((self.spec or {}).get("workload_options", {}))]).lower()


def verdict_word(valid: Any) -> str:
    return {True: "valid", False: "invalid"}.get(valid, "unknown") if not isinstance(valid, str) else \
        ("unknown" if valid not in ("valid", "invalid") else valid)


def stamp_text(stamp: str) -> str:
    """``20261127T132301.123Z`` -> ``2026-11-27 13:23:01 UTC`` (the name itself if it is not one)."""
    try:
        when = datetime.strptime(stamp.split("-")[0], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return stamp
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


class _Cache:
    def __init__(self) -> None:
        self._data: dict[Path, tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, load: Any) -> Any:
        try:
            st = os.stat(path)
        except OSError:
            self._data.pop(path, None)
            raise
        key = (st.st_size, st.st_mtime_ns)
        hit = self._data.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = load(path)
        self._data[path] = (key, value)
        return value


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _last_time_s(path: Path) -> float | None:
    """The ``time`` of the last whole line of a history, read from its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            op = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(op, dict) and isinstance(op.get("time"), (int, float)):
            return op["time"] / 1e9
    return None


def live_progress(run: Run, now: float) -> str:
    """The harness's progress line (harness/progress.py) for a run still being written,
    rebuilt from its history: elapsed test time, ops/s over the last 5 s, counts, faults."""
    from checkers.history import load_jsonl
    from harness.interpreter import Counters
    from harness.progress import format_line
    from harness.report.faults import fault_events

    history_path = run.path / "history.jsonl"
    try:
        history = load_jsonl(str(history_path)) if history_path.exists() else []
    except Exception:  # noqa: BLE001 - a line being written right now; show what we can
        history = []
    counters = Counters()
    for op in history:
        if op.is_client and op.type in ("ok", "fail", "info"):
            counters.record(op.type)
    try:
        from harness.registry import SHADING

        specs = [SHADING[n] for n in run.nemeses if n in SHADING]
        windows, _ = fault_events(history, specs)
        counters.active_faults = {w.name for w in windows if w.open_ended}
    except Exception:  # noqa: BLE001 - shading is a nicety here
        pass
    elapsed = max((op.time for op in history), default=0) / 1e9
    recent = sum(1 for op in history if op.is_client and op.type != "invoke" and op.time / 1e9 >= elapsed - 5)
    limit = float((run.spec or {}).get("time_limit") or 0.0)
    if not history:
        phase = "setup"
    elif (run.path / "history.closed").exists():
        phase = "checking"
    elif elapsed < limit:
        phase = "main"
    else:
        phase = "heal/final"
    return format_line(elapsed, limit, counters, recent / 5.0 if elapsed else 0.0, phase)


class Catalog:
    """The runs and groups of one results dir (``root`` resolved)."""

    def __init__(self, root: Path, live_seconds: float = LIVE_SECONDS) -> None:
        self.root = root
        self.live_seconds = live_seconds
        self._cache = _Cache()

    # --- runs -----------------------------------------------------------------------------
    def _run_dirs(self) -> Iterable[tuple[str, str, Path]]:
        try:
            tests = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            return
        for test in tests:
            if not valid_part(test.name) or not test.is_dir(follow_symlinks=False):
                continue
            try:
                stamps = list(os.scandir(test.path))
            except OSError:
                continue
            for entry in stamps:
                if not valid_part(entry.name) or not entry.is_dir(follow_symlinks=False):
                    continue
                path = Path(entry.path)
                if (path / "test.json").is_file() or (path / "history.jsonl").is_file():
                    yield test.name, entry.name, path

    def load_run(self, test: str, stamp: str, path: Path, now: float | None = None) -> Run:
        now = time.time() if now is None else now
        problems: list[str] = []
        spec = results = None
        for name in ("test.json", "results.json"):
            file = path / name
            if not file.exists():
                continue
            try:
                data = self._cache.get(file, _json)
            except (OSError, ValueError) as err:
                problems.append(f"{name} cannot be read: {err}")
                continue
            if not isinstance(data, dict):
                problems.append(f"{name} is not a JSON object")
            elif name == "test.json":
                spec = data
            else:
                results = data
        history = path / "history.jsonl"
        duration = self._cache.get(history, _last_time_s) if history.is_file() else None
        run = Run(f"{test}/{stamp}", test, stamp, path, spec, results, "unknown", problems, duration)
        if results is not None:
            # a run stopped by SIGINT/SIGTERM is judged on its partial history and marked so
            run.state = "incomplete" if results.get("incomplete") is True else verdict_word(results.get("valid"))
            return run
        newest = max((_mtime(path / n) for n in ("history.jsonl", "run.log", "test.json", "history.closed")),
                     default=0.0)
        run.idle_s = max(0.0, now - newest)
        if run.idle_s <= self.live_seconds:
            run.state = "running"
            run.progress = live_progress(run, now)
        elif (path / "history.closed").exists():
            run.state = "incomplete"
        else:
            run.state = "crashed"
        return run

    def runs(self) -> list[Run]:
        """Every run, newest first, with its --test-count group marked."""
        now = time.time()
        runs = [self.load_run(t, s, p, now) for t, s, p in self._run_dirs()]
        runs.sort(key=lambda r: (r.stamp, r.test), reverse=True)
        for group in self._test_count_groups(runs):
            for run in group.runs:
                run.group = group.id
        return runs

    def run(self, run_id: str) -> Run:
        from .paths import NotFound, safe_path, split_name

        parts = split_name(run_id)
        if len(parts) != 2:
            raise NotFound(run_id)
        path = safe_path(self.root, parts, want="dir")
        if not ((path / "test.json").is_file() or (path / "history.jsonl").is_file()):
            raise NotFound(run_id)
        run = self.load_run(parts[0], parts[1], path)
        for group in self._test_count_groups([r for r in self.runs() if r.test == parts[0]]):
            if any(r.id == run.id for r in group.runs):
                run.group = group.id
        return run

    def find_run(self, stored_path: str | None) -> str | None:
        """The run id of a run dir named by another machine's path (matrix.json, regress.json)."""
        if not stored_path:
            return None
        p = Path(stored_path)
        try:
            rel = p.resolve().relative_to(self.root)
            parts = rel.parts
        except (OSError, ValueError):
            parts = p.parts[-2:]
        if len(parts) == 2 and all(valid_part(x) for x in parts) and (self.root / parts[0] / parts[1]).is_dir() \
                and not (self.root / parts[0]).is_symlink() and not (self.root / parts[0] / parts[1]).is_symlink():
            return f"{parts[0]}/{parts[1]}"
        return None

    # --- groups ---------------------------------------------------------------------------
    def _test_count_groups(self, runs: list[Run]) -> list["Group"]:
        by_test: dict[str, list[Run]] = {}
        for run in runs:
            if run.spec is not None and isinstance(run.seed, int):
                by_test.setdefault(run.test, []).append(run)
        groups = []
        for test, members in by_test.items():
            members.sort(key=lambda r: r.stamp)
            chain: list[Run] = []
            for run in members:
                if chain and _settings(chain[-1]) == _settings(run) and run.seed == chain[-1].seed + 1:
                    chain.append(run)
                    continue
                if len(chain) > 1:
                    groups.append(Group.test_count(chain))
                chain = [run]
            if len(chain) > 1:
                groups.append(Group.test_count(chain))
        return groups

    def groups(self, runs: list[Run] | None = None) -> list["Group"]:
        runs = self.runs() if runs is None else runs
        out = self._test_count_groups(runs)
        for kind, file in (("matrix", "matrix.json"), ("regress", "regress.json")):
            base = self.root / kind
            if not base.is_dir() or base.is_symlink():
                continue
            for entry in sorted(os.scandir(base), key=lambda e: e.name, reverse=True):
                if valid_part(entry.name) and entry.is_dir(follow_symlinks=False) and (Path(entry.path) / file).is_file():
                    group = self.table_group(kind, entry.name)
                    if group is not None:
                        out.append(group)
        out.sort(key=lambda g: g.stamp, reverse=True)
        return out

    def table_group(self, kind: str, stamp: str) -> "Group | None":
        """A matrix or regress table; None when its JSON cannot be read."""
        from .paths import safe_path

        path = safe_path(self.root, [kind, stamp, f"{kind}.json"], want="file")
        try:
            data = self._cache.get(path, _json)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if kind == "matrix":
            return Group.matrix(stamp, data, self)
        return Group.regress(stamp, data, self)

    def group(self, group_id: str) -> "Group":
        from .paths import NotFound, split_name

        parts = split_name(group_id)
        if parts[0] in ("matrix", "regress") and len(parts) == 2:
            group = self.table_group(parts[0], parts[1])
            if group is None:
                raise NotFound(group_id)
            return group
        if parts[0] == "test-count" and len(parts) == 3:
            for group in self._test_count_groups([r for r in self.runs() if r.test == parts[1]]):
                if group.id == group_id:
                    return group
        raise NotFound(group_id)

    def regress_history(self) -> dict[str, dict[str, int]]:
        """Over every stored regress table: case label -> {"runs": n, "invalid": k}."""
        out: dict[str, dict[str, int]] = {}
        for g in self.groups([]):
            if g.kind != "regress":
                continue
            for row in g.rows:
                key = f"{row['bug']} / seed {row['seed']}"
                entry = out.setdefault(key, {"runs": 0, "invalid": 0})
                entry["runs"] += 1
                entry["invalid"] += 1 if row["invalid"] else 0
        return out


def _settings(run: Run) -> dict[str, Any]:
    return {k: v for k, v in (run.spec or {}).items() if k not in _NOT_SETTINGS}


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime if stat.S_ISREG(os.lstat(path).st_mode) else 0.0
    except OSError:
        return 0.0


def rate(invalid: int, total: int) -> str:
    return f"{invalid}/{total} ({100.0 * invalid / total:.0f}%)" if total else "-"


@dataclass
class Group:
    """Runs judged together: a --test-count series, a matrix or a regress table."""

    id: str
    kind: str  # "test-count" | "matrix" | "regress"
    stamp: str
    title: str
    runs: list[Run] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # matrix cells or regress rows
    summary: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def started(self) -> str:
        return stamp_text(self.stamp)

    @property
    def total(self) -> int:
        if self.kind == "test-count":
            return len(self.runs)
        return sum(r["total"] for r in self.rows)

    @property
    def invalid(self) -> int:
        if self.kind == "test-count":
            return sum(1 for r in self.runs if r.state == "invalid")
        return sum(r["invalid"] for r in self.rows)

    @property
    def flake_rate(self) -> str:
        return rate(self.invalid, self.total)

    @property
    def failed_cases(self) -> int:
        """regress: the cases that failed the suite (an escape, a false alarm, an unknown). Its
        invalid runs are mostly planted bugs caught, so the flake rate alone reads as alarming."""
        return sum(1 for r in self.rows if not r.get("ok")) if self.kind == "regress" else 0

    @classmethod
    def test_count(cls, runs: list[Run]) -> "Group":
        first = runs[0]
        seeds = f"seeds {runs[0].seed}..{runs[-1].seed}"
        return cls(f"test-count/{first.test}/{first.stamp}", "test-count", first.stamp,
                   f"{first.test}: {len(runs)} runs, {seeds}", runs=list(runs))

    @classmethod
    def matrix(cls, stamp: str, data: dict[str, Any], catalog: Catalog) -> "Group":
        rows = []
        for cell in data.get("cells") or []:
            if not isinstance(cell, dict):
                continue
            counts = {str(k): int(v) for k, v in (cell.get("counts") or {}).items() if isinstance(v, int)}
            if not counts and cell.get("outcome"):
                counts = {str(cell["outcome"]): 1}
            total = sum(counts.values())
            runs = cell.get("runs") or [{"outcome": cell.get("outcome"), "run_dir": cell.get("run_dir")}]
            rows.append({
                "policy": str(cell.get("policy", "?")), "target": str(cell.get("target", "?")),
                "outcome": str(cell.get("outcome", "?")), "label": str(cell.get("label") or cell.get("outcome")),
                "victims": cell.get("victims") or [], "decided_by": cell.get("decided_by") or [],
                "summary": str(cell.get("summary", "")), "counts": counts, "total": total,
                "invalid": counts.get("invalid", 0), "rate": rate(counts.get("invalid", 0), total),
                "runs": [{"outcome": r.get("outcome"), "run": catalog.find_run(r.get("run_dir")),
                          "run_dir": r.get("run_dir")} for r in runs if isinstance(r, dict)],
            })
        group = cls(f"matrix/{stamp}", "matrix", stamp, f"CorruptionPolicy matrix ({len(rows)} cells)",
                    rows=rows, command=str(data.get("command", "")))
        group.summary = {"nodes": data.get("nodes"), "policies": list(dict.fromkeys(r["policy"] for r in rows)),
                         "targets": list(dict.fromkeys(r["target"] for r in rows))}
        return group

    @classmethod
    def regress(cls, stamp: str, data: dict[str, Any], catalog: Catalog) -> "Group":
        rows = []
        for row in data.get("rows") or []:
            if not isinstance(row, dict):
                continue
            outcome = str(row.get("outcome", "?"))
            # invalid verdicts: a detected bug, an escape judged invalid by another checker, a false alarm
            invalid = bool(row.get("caught_by")) or outcome in ("detected", "FALSE ALARM")
            rows.append({**row, "outcome": outcome, "total": 1, "invalid": int(invalid),
                         "run": catalog.find_run(row.get("run_dir")), "ok": bool(row.get("ok"))})
        summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
        quick = " --quick" if data.get("quick") else ""
        return cls(f"regress/{stamp}", "regress", stamp, f"regress{quick} ({len(rows)} cases)", rows=rows,
                   summary=summary, command=f"ukehi-jepsen regress{quick}")
