"""Run mutants against the unit tests and a fixed harness budget, each in its own copy.

For every mutant: copy the pristine snapshot, apply the mutant, then

- unit: ``python -m pytest -x`` over a fast, relevant subset (the Raft core, storage, KV,
  fencing and node-driver tests), with a timeout. Killed = any failure, a collection error
  (the mutant broke an import) or the timeout.
- harness: a few short ``python -m harness.cli run`` with fixed seeds (stop at the first one
  that kills). Killed = a verdict of invalid (exit 1). Unknown (exit 2), a crash (255) or a
  timeout do not count as kills; they are reported on their own.

Before any mutant, the unmutated snapshot goes through the same steps (the baseline): if the
unit tests fail or a harness run is not valid there, every mutant would look killed, so the
run stops.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .operators import Mutant
from .workspace import child_env, make_copy

# Fast tests first: with -x a mutant dies at its first failing test.
DEFAULT_UNIT_TESTS: tuple[str, ...] = (
    "tests/test_kv.py", "tests/test_fencing_token.py", "tests/storage", "tests/node/test_node_units.py",
    "tests/raft",
)
DEFAULT_UNIT_TIMEOUT = 0.0  # auto: 3x the baseline's unit run (at least 60 s)
BASELINE_UNIT_TIMEOUT = 900.0


@dataclass(frozen=True)
class HarnessRun:
    """One fixed harness run: ``WORKLOAD/NEMESIS/SECONDS/SEED[/KEY=VALUE,...]``.

    NEMESIS ``default`` is the run's default fault mix; the optional last part gives node
    options (``--node-option``), e.g. ``snapshot_threshold=100`` so a short run compacts its
    log and sends snapshots.
    """

    workload: str
    nemesis: str
    time_limit: float
    seed: int
    node_options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "HarnessRun":
        parts = text.split("/")
        if len(parts) not in (4, 5):
            raise ValueError(f"harness run {text!r}: write WORKLOAD/NEMESIS/SECONDS/SEED[/KEY=VALUE,...], "
                             "e.g. register/partition,kill/15/1")
        options = tuple(o.strip() for o in parts[4].split(",") if o.strip()) if len(parts) == 5 else ()
        if any("=" not in o for o in options):
            raise ValueError(f"harness run {text!r}: node options are KEY=VALUE, comma separated")
        try:
            return cls(parts[0].strip(), parts[1].strip(), float(parts[2]), int(parts[3]), options)
        except ValueError:
            raise ValueError(f"harness run {text!r}: SECONDS must be a number and SEED an integer") from None

    @property
    def label(self) -> str:
        label = f"{self.workload}/{self.nemesis}/{self.time_limit:g}/{self.seed}"
        return label + (f"/{','.join(self.node_options)}" if self.node_options else "")

    def argv(self, python: str, results_dir: Path) -> list[str]:
        # NEMESIS "default" leaves --nemesis out: the run's default fault mix.
        nemesis = [] if self.nemesis == "default" else ["--nemesis", self.nemesis]
        options = [arg for o in self.node_options for arg in ("--node-option", o)]
        return [python, "-m", "harness.cli", "run", "--workload", self.workload, *nemesis,
                "--time-limit", f"{self.time_limit:g}", "--seed", str(self.seed),
                "--results-dir", str(results_dir), *options]


DEFAULT_HARNESS_RUNS: tuple[HarnessRun, ...] = (
    HarnessRun("register", "partition,kill", 15, 1),
    HarnessRun("register", "kill-all", 15, 2),
    HarnessRun("register", "partition,pause", 15, 3),
)
# Start-up, teardown and checking on a loaded 2-core machine, on top of the main phase.
HARNESS_OVERHEAD_S = 150.0


@dataclass
class Config:
    unit: bool = True
    harness: bool = True
    unit_tests: Sequence[str] = DEFAULT_UNIT_TESTS
    unit_timeout: float = DEFAULT_UNIT_TIMEOUT  # seconds; 0 = auto (set from the baseline)
    harness_runs: Sequence[HarnessRun] = DEFAULT_HARNESS_RUNS
    harness_for: str = "all"           # "all" or "unit-killed" (harness only where the unit tests killed)
    jobs: int = 1
    time_budget: float = 0.0           # seconds; 0 = no limit. Mutants not started by then are "not run".
    python: str = sys.executable
    # Stand-in commands (tests only): argv lists run from the copy instead of pytest / the harness.
    unit_command: Sequence[str] | None = None
    harness_command: Sequence[str] | None = None


@dataclass
class StepResult:
    status: str                 # unit: killed|survived|error|skipped ; harness: killed|survived|unknown|crashed|timeout|skipped
    seconds: float = 0.0
    detail: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 1), "detail": self.detail}
        if self.runs:
            data["runs"] = self.runs
        return data


@dataclass
class MutantResult:
    mutant: Mutant | None       # None = the baseline
    unit: StepResult
    harness: StepResult

    @property
    def killed(self) -> bool:
        return self.unit.status == "killed" or self.harness.status == "killed"

    def to_json(self) -> dict[str, Any]:
        data = self.mutant.to_json() if self.mutant else {"id": "baseline"}
        data.update(unit=self.unit.to_json(), harness=self.harness.to_json())
        return data


class BaselineFailed(Exception):
    """The unmutated copy fails its own checks: mutant results would mean nothing."""


def _run(argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path,
         interrupt_first: bool = False) -> tuple[int | None, float]:
    """Run argv in its own process group, output to `log`; (exit code or None on timeout, seconds)."""
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            # The harness tears its cluster down on SIGINT; give it time before SIGKILL.
            for sig, grace in ((signal.SIGINT, 60.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                if not interrupt_first and sig == signal.SIGINT:
                    continue
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            out.write(f"\n[mutation] timed out after {timeout:g} s\n".encode())
    return rc, time.monotonic() - start


def _tail(path: Path, pattern: str, limit: int = 200) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if re.search(pattern, line)]
    return (lines[-1] if lines else "")[:limit]


def run_unit(copy: Path, cfg: Config, log: Path) -> StepResult:
    timeout = cfg.unit_timeout if cfg.unit_timeout > 0 else BASELINE_UNIT_TIMEOUT
    argv = list(cfg.unit_command) if cfg.unit_command else [
        cfg.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
        "-o", "addopts=", "--timeout", f"{timeout:g}", *cfg.unit_tests]
    rc, seconds = _run(argv, cwd=copy, env=child_env(copy), timeout=timeout, log=log)
    if rc is None:
        return StepResult("killed", seconds, f"timeout after {timeout:g} s")
    if rc == 0:
        return StepResult("survived", seconds)
    if rc in (4, 5):  # pytest usage error / no tests collected: the command is wrong, not the mutant caught
        return StepResult("error", seconds, f"pytest exit {rc}: " + _tail(log, r"ERROR|error|no tests"))
    return StepResult("killed", seconds, _tail(log, r"^(FAILED|ERROR) |Error|error") or f"exit {rc}")


def _harness_error(log: Path) -> str:
    """Why a harness run crashed: its own error line if it printed one, else the last exception."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    own = [line for line in lines if line.startswith("ukehi-jepsen: error:") or line.startswith("[mutation]")]
    other = [line for line in lines if re.match(r"^\w+(Error|Exception)\b", line)]
    return ((own or other or [""])[0 if own else -1]).strip()[:160]


def _failed_checkers(results_dir: Path, log: Path) -> tuple[list[str], str]:
    """Names of the checkers that were not valid, from the run's results.json."""
    match = re.search(r"results in (\S+)", log.read_text(encoding="utf-8", errors="replace")) if log.exists() else None
    run_dir = Path(match.group(1)) if match else None
    if run_dir is None or not (run_dir / "results.json").exists():
        found = sorted(results_dir.rglob("results.json")) if results_dir.exists() else []
        run_dir = found[-1].parent if found else None
    if run_dir is None:
        return [], ""
    try:
        verdict = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], ""
    failed = [name for name, res in (verdict.get("checkers") or {}).items()
              if isinstance(res, dict) and res.get("valid") is not True]
    return failed, str(run_dir)


def _cleanup_runs(copy: Path, cfg: Config, state_dir: Path) -> None:
    """Remove what a timed-out harness left behind: only runs recorded in this copy's state dir."""
    code = "from harness.backends.runstate import cleanup_leftovers\nfor line in cleanup_leftovers(): print(line)\n"
    try:
        subprocess.run([cfg.python, "-c", code], cwd=copy, env=child_env(copy, {"UKEHI_JEPSEN_STATE_DIR": str(state_dir)}),
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        pass


def run_harness(copy: Path, cfg: Config, logdir: Path) -> StepResult:
    runs: list[dict[str, Any]] = []
    total = 0.0
    state_dir = copy / ".mutation-state"
    env = child_env(copy, {"UKEHI_JEPSEN_STATE_DIR": str(state_dir)})
    statuses: list[str] = []
    for i, spec in enumerate(cfg.harness_runs):
        results_dir = copy / "results-mutation" / str(i)
        results_dir.mkdir(parents=True, exist_ok=True)
        argv = list(cfg.harness_command) if cfg.harness_command else spec.argv(cfg.python, results_dir)
        log = logdir / f"harness-{i}.log"
        rc, seconds = _run(argv, cwd=copy, env=env, timeout=spec.time_limit + HARNESS_OVERHEAD_S, log=log,
                           interrupt_first=True)
        total += seconds
        status = {0: "survived", 1: "killed", 2: "unknown"}.get(rc, "timeout" if rc is None else "crashed")
        if rc is None or rc not in (0, 1, 2):
            _cleanup_runs(copy, cfg, state_dir)
        failed, run_dir = _failed_checkers(results_dir, log)
        if run_dir and (Path(run_dir) / "results.json").exists():
            shutil.copy(Path(run_dir) / "results.json", logdir / f"harness-{i}-results.json")
        entry = {"run": spec.label, "exit": rc, "status": status, "seconds": round(seconds, 1),
                 "failed_checkers": failed}
        if status in ("crashed", "timeout"):
            # e.g. "the cluster did not come up: no leader after 30 s": the mutant broke liveness
            entry["error"] = _harness_error(log)
        runs.append(entry)
        statuses.append(status)
        if status == "killed":
            break
    for status in ("killed", "crashed", "timeout", "unknown"):
        if status in statuses:
            first = next(r for r in runs if r["status"] == status)
            detail = f"{first['run']}: exit {first['exit']}"
            if first["failed_checkers"]:
                detail += f" ({', '.join(first['failed_checkers'])})"
            if first.get("error"):
                detail += f": {first['error']}"
            return StepResult(status, total, detail, runs)
    return StepResult("survived", total, "", runs)


def evaluate(pristine: Path, scratch: Path, logdir: Path, mutant: Mutant | None, cfg: Config) -> MutantResult:
    """Copy, mutate, run the unit tests and/or the harness; the copy is removed afterwards."""
    copy = make_copy(pristine, Path(tempfile.mkdtemp(prefix="m-", dir=scratch)) / "project", mutant)
    try:
        unit = run_unit(copy, cfg, logdir / "unit.log") if cfg.unit else StepResult("skipped")
        wanted = cfg.harness and (cfg.harness_for == "all" or unit.status == "killed" or not cfg.unit or mutant is None)
        harness = run_harness(copy, cfg, logdir) if wanted else StepResult("skipped")
        return MutantResult(mutant, unit, harness)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def check_baseline(result: MutantResult) -> None:
    problems = []
    if result.unit.status not in ("survived", "skipped"):
        problems.append(f"the unit tests fail on the unmutated code ({result.unit.status}: {result.unit.detail})")
    if result.harness.status not in ("survived", "skipped"):
        problems.append(f"a harness run is not valid on the unmutated code ({result.harness.status}: "
                        f"{result.harness.detail})")
    if problems:
        raise BaselineFailed("; ".join(problems) + ": every mutant would look killed, so nothing was measured")


def run_mutants(pristine: Path, scratch: Path, logroot: Path, mutants: Sequence[Mutant], cfg: Config,
                on_result: Callable[[int, MutantResult], None] | None = None) -> tuple[list[MutantResult], list[Mutant]]:
    """Evaluate mutants with `cfg.jobs` workers; returns (results in mutant order, mutants not run)."""
    deadline = time.monotonic() + cfg.time_budget if cfg.time_budget > 0 else None
    results: dict[int, MutantResult] = {}
    not_run: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work(index: int) -> None:
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            with lock:
                not_run.append(index)
            return
        result = evaluate(pristine, scratch, logroot / f"{index + 1:03d}", mutants[index], cfg)
        with lock:
            results[index] = result
            if on_result:
                on_result(index, result)

    with ThreadPoolExecutor(max_workers=max(1, cfg.jobs)) as pool:
        try:
            for future in [pool.submit(work, i) for i in range(len(mutants))]:
                future.result()
        except KeyboardInterrupt:
            stop.set()  # mutants already running finish; no new one starts
            raise
    return [results[i] for i in sorted(results)], [mutants[i] for i in sorted(not_run)]
