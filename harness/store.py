"""The run store: ``results/<test>/<timestamp>/`` and its ``latest`` links.

Layout (DESIGN.md): ``test.json``, ``history.jsonl``, ``results.json``,
``run.log``, plots, ``timeline.html``, ``nodes/<node>/`` logs. ``latest``
symlinks point at the newest run of a test (``results/<test>/latest``) and of
any test (``results/latest``); they are relative so a moved store still works.
"""

from __future__ import annotations

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


def new_run(root: str | os.PathLike[str], test_name: str, now: datetime | None = None) -> RunDir:
    """Make a fresh run directory and point the ``latest`` links at it."""
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
    _point(test_dir / "latest", path.name)
    _point(base / "latest", os.path.join(test_name, path.name))
    return RunDir(path)


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
