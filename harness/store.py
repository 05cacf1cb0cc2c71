"""The run store: ``results/<test>/<timestamp>/`` and its ``latest`` links.

Layout (DESIGN.md): ``test.json``, ``history.jsonl``, ``results.json``,
``run.log``, plots, ``timeline.html``, ``nodes/<node>/`` logs. ``latest``
symlinks point at the newest run of a test (``results/<test>/latest``) and of
any test (``results/latest``); they are relative so a moved store still works.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HISTORY = "history.jsonl"
TEST = "test.json"
RESULTS = "results.json"
RUN_LOG = "run.log"
# Written once the harness has closed the history: every line in it is whole. A run without
# it stopped while writing (killed, crashed), so a cut-off last line is its torn final write.
HISTORY_CLOSED = "history.closed"


class StoreError(Exception):
    """The results directory cannot be used; the message says what to do."""


@dataclass(frozen=True)
class RunDir:
    """One run's directory in the store."""

    path: Path

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def test(self) -> Path:
        return self.path / TEST

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def run_log(self) -> Path:
        return self.path / RUN_LOG

    @property
    def history_closed(self) -> bool:
        """Whether the harness recorded that it closed the history (see HISTORY_CLOSED)."""
        return (self.path / HISTORY_CLOSED).exists()

    def mark_history_closed(self) -> None:
        (self.path / HISTORY_CLOSED).write_text("the harness closed history.jsonl; every line is whole\n",
                                                encoding="utf-8")

    def node_dir(self, node: str) -> Path:
        d = self.path / "nodes" / node
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))


def check_writable(root: str | os.PathLike[str]) -> Path:
    """Create ``root`` if needed and prove it is writable, or raise StoreError with the fix."""
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise StoreError(f"results dir {str(path)!r} is not usable ({err.strerror or err}); "
                         "choose another with --results-dir or fix its permissions") from None
    return path


def timestamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"


def new_run(root: str | os.PathLike[str], test_name: str, now: datetime | None = None, *,
            latest: bool = True) -> RunDir:
    """Make a fresh run directory and (unless ``latest=False``) point the ``latest`` links
    at it; a run repoints them itself with :func:`point_latest` once its history starts."""
    base = check_writable(root)
    test_dir = base / test_name
    test_dir.mkdir(parents=True, exist_ok=True)
    stamp = timestamp(now)
    path = test_dir / stamp
    suffix = 1
    while path.exists():  # two runs in the same millisecond
        path = test_dir / f"{stamp}-{suffix}"
        suffix += 1
    path.mkdir()
    run = RunDir(path)
    if latest:
        point_latest(run)
    return run


def point_latest(run: RunDir) -> None:
    """Point ``<root>/<test>/latest`` and ``<root>/latest`` at ``run`` (relative links)."""
    test_dir = run.path.parent
    _point(test_dir / "latest", run.path.name)
    _point(test_dir.parent / "latest", os.path.join(test_dir.name, run.path.name))


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + f".tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def resolve_run(path: str | os.PathLike[str] | None, root: str | os.PathLike[str] = "results") -> RunDir:
    """A run dir from a path, a test dir (its latest run) or nothing (the latest run of all)."""
    candidate = Path(path) if path is not None else Path(root) / "latest"
    if candidate.is_dir() and not (candidate / HISTORY).exists() and (candidate / "latest").exists():
        candidate = candidate / "latest"
    if not candidate.exists():
        where = "no run has been stored yet" if path is None else f"{str(candidate)!r} does not exist"
        raise StoreError(f"cannot find a run: {where}; give a run directory such as "
                         "results/<test>/<timestamp>")
    if not (candidate / HISTORY).exists():
        raise StoreError(f"{str(candidate)!r} has no {HISTORY}; give a run directory such as "
                         "results/<test>/<timestamp>")
    return RunDir(candidate.resolve())


def load_spec(run: RunDir) -> Any:
    """The run's ``test.json`` as a TestSpec; StoreError with one line saying what is wrong."""
    from .registry import WORKLOADS
    from .spec import SpecError, TestSpec

    where = run.test
    data = _load_json(where)
    if not isinstance(data, dict):
        raise StoreError(f"{where}: expected a JSON object describing the test, got {type(data).__name__}")
    try:
        spec = TestSpec.from_dict(data)
    except (SpecError, TypeError, ValueError) as err:
        raise StoreError(f"{where}: not a test this version can read ({err})") from None
    if spec.workload not in WORKLOADS:
        raise StoreError(f"{where}: unknown workload {spec.workload!r}; known: {', '.join(WORKLOADS)}")
    return spec


def load_history(run: RunDir, *, ignore_torn_tail: bool = False) -> tuple[list[Any], str | None]:
    """The run's history and, when a cut-off last line was dropped, a note saying so.

    A torn last line is dropped only with ``ignore_torn_tail`` or when the run's store shows
    that the harness never closed the history (it was killed mid-write); otherwise it is an
    error, as is any other bad line. Errors are StoreError, one line, naming file and line.
    """
    from checkers.history import HistoryError, TornTailError, read_jsonl

    text = _read_text(run.history, "a history file")
    try:
        return read_jsonl(io.StringIO(text), torn_tail="error"), None
    except TornTailError as err:
        if not (ignore_torn_tail or not run.history_closed):
            raise StoreError(f"{run.history}: {err}") from None
        why = "as asked (--ignore-torn-tail)" if ignore_torn_tail else \
            "the harness stopped while writing it (no history.closed in the run)"
        note = f"ignored the cut-off last line {err.line_number} of {run.history.name}: {why}"
        return read_jsonl(io.StringIO(text), torn_tail="ignore"), note
    except HistoryError as err:
        raise StoreError(f"{run.history}: {err}") from None


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise StoreError(f"cannot read {path}: {err.strerror or err}; check the path") from None
    except UnicodeDecodeError as err:
        raise StoreError(f"{path} is not UTF-8 text (byte {err.start}); is it {what}?") from None


def _load_json(path: Path) -> Any:
    text = _read_text(path, "a test.json")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StoreError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
