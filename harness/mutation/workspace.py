"""Private copies of the project, one per mutant: the shared working tree is never written.

A run takes one pristine snapshot of the project (``git archive <rev>`` when the project is a
git checkout, so other people's uncommitted edits do not leak into the measurement; a plain
copy of the tree otherwise), then copies it once per mutant, applies the mutant there and
runs everything from that copy with ``PYTHONPATH`` pointing at it. The venv has the project
installed in editable mode (a meta-path finder that points at the source tree); ``PYTHONPATH``
entries come first on ``sys.path``, so the copy wins, and `preflight` proves it before any
mutant runs: the copy's modules are the ones imported, and a fatal mutant planted in the copy
makes ``python -m ukehi.cli`` fail (the same command line the harness starts nodes with).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Mapping

from .operators import Mutant, apply

_IGNORED = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", "results", ".pytest_cache",
                                  "*.egg-info", ".hypothesis", "mutants")
SENTINEL = "ukehi-mutation-preflight-sentinel"


class WorkspaceError(Exception):
    """The project could not be copied or the copy is not what gets imported."""


def git_commit(root: Path, rev: str = "HEAD") -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def snapshot(root: Path, dest: Path, rev: str | None = "HEAD") -> str | None:
    """Write a pristine copy of the project at `dest`; returns the commit it came from (None: a plain copy)."""
    root = root.resolve()
    commit = git_commit(root, rev) if rev else None
    if rev and commit is None and (root / ".git").exists():
        raise WorkspaceError(f"--rev {rev!r} is not a commit of {root}")
    if commit:
        proc = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit],
                              capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise WorkspaceError(f"git archive {commit} failed: {proc.stderr.decode(errors='replace').strip()}")
        dest.mkdir(parents=True, exist_ok=False)
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(dest, filter="data")
    else:
        shutil.copytree(root, dest, ignore=_IGNORED, symlinks=True)
    _byte_compile(dest)
    return commit


#: the project's packages, byte-compiled once in the pristine copy
_PACKAGES = ("ukehi", "harness", "checkers", "nemeses", "workloads")


def _byte_compile(dest: Path) -> None:
    """Compile the snapshot's packages once. Every process run from a copy has
    PYTHONDONTWRITEBYTECODE set, so without this each simulator seed and node process would
    compile every module it imports again (about 0.6 s a process; a mutant runs dozens)."""
    import compileall

    for package in _PACKAGES:
        if (dest / package).is_dir():
            compileall.compile_dir(str(dest / package), quiet=2)


def make_copy(pristine: Path, dest: Path, mutant: Mutant | None) -> Path:
    """Copy the snapshot to `dest` and apply `mutant` there (None: the unmutated baseline)."""
    shutil.copytree(pristine, dest, symlinks=True)
    if mutant is not None:
        target = dest / mutant.path
        source = target.read_text(encoding="utf-8")
        target.write_text(apply(source, mutant), encoding="utf-8")
        # Its bytecode compiled from the unmutated source must never run: Python would
        # recompile on a changed mtime or size anyway, but a mutant may keep the size and
        # land in the same second.
        for stale in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
            stale.unlink()
    return dest


def child_env(copy: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for every process run from `copy`: its modules first, no stale bytecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONHASHSEED"] = env.get("PYTHONHASHSEED", "0")
    env.pop("PYTEST_ADDOPTS", None)
    if extra:
        env.update(extra)
    return env


def preflight(pristine: Path, scratch: Path, python: str = sys.executable) -> list[str]:
    """Prove that code run from a copy imports the copy; returns what was checked.

    Raises WorkspaceError when the shared tree (or an installed copy) would be imported
    instead, which would make every mutant look like a survivor.
    """
    checks: list[str] = []
    copy = make_copy(pristine, scratch / "preflight", None)
    try:
        env = child_env(copy)
        # Every project package the copy holds must be imported from the copy.
        mods = [m for m in ("ukehi", "ukehi.raft", "harness", "nemeses", "workloads", "checkers")
                if (copy / m.replace(".", "/") / "__init__.py").exists()]
        probe = ("import importlib, json\n"
                 f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {mods!r}}}))\n")
        out = subprocess.run([python, "-c", probe], cwd=scratch, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise WorkspaceError(f"cannot import the project from its copy: {out.stderr.strip()[-500:]}")
        files = json.loads(out.stdout.strip().splitlines()[-1])
        outside = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(copy.resolve())}
        if "ukehi" not in files or outside:
            raise WorkspaceError(f"modules imported from outside the copy {copy}: {outside or 'ukehi missing'}; "
                                 "check PYTHONPATH handling and the editable install")
        checks.append(f"imports resolve to the copy: {', '.join(sorted(files))}")
        # A deliberately fatal mutant: the node's own entry point must die on it.
        init = copy / "ukehi" / "__init__.py"
        init.write_text(f"raise ImportError({SENTINEL!r})\n" + init.read_text(encoding="utf-8"), encoding="utf-8")
        fatal = subprocess.run([python, "-m", "ukehi.cli", "--help"], cwd=scratch, env=env,
                               capture_output=True, text=True, timeout=120)
        if fatal.returncode == 0 or SENTINEL not in fatal.stderr:
            raise WorkspaceError("a fatal mutant planted in the copy did not stop `python -m ukehi.cli`: "
                                 "nodes would run the shared tree's code, not the mutant")
        checks.append("a fatal mutant in the copy stops `python -m ukehi.cli` (run from outside the copy)")
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return checks
