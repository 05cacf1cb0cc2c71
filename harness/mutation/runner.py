"""Run mutants against the unit tests and a fixed harness budget, each in its own copy.

For every mutant: copy the pristine snapshot, apply the mutant, then

- unit: ``python -m pytest -x`` over a fast, relevant subset (the Raft core, storage, KV,
  fencing and node-driver tests), with a timeout. Killed = any failure, a collection error
  (the mutant broke an import) or the timeout.
- sim (when a budget is given): a fixed set of ``python -m harness.cli sim --seed K`` runs
  (``simbudget``); killed = a seed's verdict is invalid; a Python exception escaping node
  code is its own category ("sim: node raised"), a kill only if the unmutated copy raised on
  none of the seeds; a seed over its time limit is ``hung`` (a kill) when that limit is at
  least 10x (``TIMEOUT_KILL_FACTOR``) the unmutated copy's time on the same seed, else a
  ``timeout`` (not a kill).
- harness: a few short ``python -m harness.cli run`` with fixed seeds (stop at the first one
  that kills). Killed = a verdict of invalid (exit 1), or ``hung``: the run outlived its
  limit and that limit is at least 10x the unmutated copy's time for the same run (the
  same rule as the sim's; with the default limit, time limit + 150 s, it rarely holds).
  Unknown (exit 2), a crash (255) or any other timeout do not count as kills; they are
  reported on their own.

The harness kills a mutant when the sim step or a real run does. Before any mutant, the
unmutated snapshot goes through the same steps (the baseline): if the unit tests fail, a
harness run is not valid or a sim seed is not valid there, every mutant would look killed,
so the run stops.
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
from .simbudget import (BASELINE_SEED_TIMEOUT, TIMEOUT_KILL_FACTOR, SeedOutcome, SimBudget, SimSeed, classify_seed,
                        judge_timeout, run_seeds, seed_log, step_status, timeout_is_kill)
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
    log and sends snapshots; ``nodes=N`` there is the run's node count (``--nodes N``, e.g.
    5 for a membership run: 3 voters and 2 spares), not a node option.
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
        options = [arg for o in self.node_options if not o.startswith("nodes=") for arg in ("--node-option", o)]
        nodes = [arg for o in self.node_options if o.startswith("nodes=") for arg in ("--nodes", o.split("=", 1)[1])]
        return [python, "-m", "harness.cli", "run", "--workload", self.workload, *nemesis,
                "--time-limit", f"{self.time_limit:g}", "--seed", str(self.seed),
                "--results-dir", str(results_dir), *nodes, *options]


# The default real runs, each aimed at code short runs of one fault mix never reach: the
# default mix (leader-targeted partitions, kills, pauses, clocks, WAL damage), a follower
# lagging past a compaction (InstallSnapshot and restore), and membership changes on 5
# nodes (3 voters, 2 spares). Every run also gets the availability checker (a build that
# never serves is invalid, not a crash). The simulator seeds (simbudget) come first.
DEFAULT_HARNESS_RUNS: tuple[HarnessRun, ...] = (
    HarnessRun("register", "default", 20, 1),
    HarnessRun("register", "snapshot-lag", 20, 2),
    HarnessRun("register", "membership", 20, 3, ("nodes=5",)),
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
    # The simulator budget (None: no sim step). sim_timeout is each seed's wall limit (0 =
    # automatic, set from the baseline); sim_raise_kills is decided by the baseline (a raise
    # counts as a kill only if the unmutated copy raised on none of the seeds).
    sim: SimBudget | None = None
    sim_timeout: float = 0.0
    sim_raise_kills: bool = True
    # The unmutated copy's wall time per sim seed and per real run (label), from the
    # baseline: a mutant's timeout is a kill ("hung") only with a limit >= 10x that time.
    # Empty (the baseline itself): no timeout is a kill.
    sim_clean_seconds: dict[str, float] = field(default_factory=dict)   # by seed key: "K" or "NAME@K"
    run_clean_seconds: dict[str, float] = field(default_factory=dict)
    # False: a mutant the sim killed skips the real runs (faster; the report then cannot say
    # which of the two would have caught it).
    runs_after_sim_kill: bool = True
    # Stand-in commands (tests only): argv lists run from the copy instead of pytest / the
    # harness / the sim ("{seed}" in sim_command is replaced by the seed, "{nemesis}" by the
    # nemesis of a NAME@K seed, "" for a swarm seed).
    unit_command: Sequence[str] | None = None
    harness_command: Sequence[str] | None = None
    sim_command: Sequence[str] | None = None


@dataclass
class StepResult:
    # unit: killed|survived|error|skipped ; harness: killed|hung|survived|unknown|crashed|timeout|skipped ;
    # sim: the harness's statuses plus raised (node code raised; a kill only when `kill` says so)
    status: str
    seconds: float = 0.0
    detail: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    kill: bool | None = None    # None: killed iff status == "killed"

    @property
    def counts_as_kill(self) -> bool:
        return self.status == "killed" if self.kill is None else self.kill

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 1), "detail": self.detail}
        if self.kill is not None:
            data["kill"] = self.kill
        if self.runs:
            data["runs"] = self.runs
        return data


@dataclass
class MutantResult:
    mutant: Mutant | None       # None = the baseline
    unit: StepResult
    harness: StepResult         # the real runs
    sim: StepResult = field(default_factory=lambda: StepResult("skipped"))

    @property
    def harness_killed(self) -> bool:
        """Killed by the harness budget: a real run or the sim step."""
        return self.harness.counts_as_kill or self.sim.counts_as_kill

    @property
    def harness_judged(self) -> bool:
        return self.harness.status != "skipped" or self.sim.status != "skipped"

    @property
    def killed(self) -> bool:
        return self.unit.status == "killed" or self.harness_killed

    def to_json(self) -> dict[str, Any]:
        data = self.mutant.to_json() if self.mutant else {"id": "baseline"}
        data.update(unit=self.unit.to_json(), harness=self.harness.to_json(), sim=self.sim.to_json())
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


def tests_nearest_first(tests: Sequence[str], mutant_path: str | None) -> list[str]:
    """The unit test paths with those about the mutated module first (tests/raft for
    ukehi/raft/core.py, tests/test_kv.py for ukehi/kv.py); options keep their place.

    Only the order changes, never the set: a mutant is killed or not by the same tests, but
    with -x it dies at its first failing test, and a Raft-core mutant no longer waits for
    every storage and node test to pass first (on a loaded machine the whole subset takes
    ten minutes)."""
    if not mutant_path:
        return list(tests)
    topics = {part.removesuffix(".py") for part in Path(mutant_path).parts} - {"ukehi", "__init__"}

    def near(test: str) -> bool:
        words = {w for part in Path(test).parts for w in part.removesuffix(".py").split("_")}
        return not test.startswith("-") and bool(topics & words)

    return sorted(tests, key=lambda t: 0 if near(t) else 1)


def run_unit(copy: Path, cfg: Config, log: Path, mutant: Mutant | None = None) -> StepResult:
    timeout = cfg.unit_timeout if cfg.unit_timeout > 0 else BASELINE_UNIT_TIMEOUT
    argv = list(cfg.unit_command) if cfg.unit_command else [
        cfg.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
        "-o", "addopts=", "--timeout", f"{timeout:g}",
        *tests_nearest_first(cfg.unit_tests, mutant.path if mutant else None)]
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
        limit = spec.time_limit + HARNESS_OVERHEAD_S
        rc, seconds = _run(argv, cwd=copy, env=env, timeout=limit, log=log, interrupt_first=True)
        total += seconds
        status = {0: "survived", 1: "killed", 2: "unknown"}.get(rc, "timeout" if rc is None else "crashed")
        clean = cfg.run_clean_seconds.get(spec.label)
        if status == "timeout" and timeout_is_kill(limit, clean):
            status = "hung"  # the same rule as a sim seed's (simbudget.judge_timeout)
        if rc is None or rc not in (0, 1, 2):
            _cleanup_runs(copy, cfg, state_dir)
        failed, run_dir = _failed_checkers(results_dir, log)
        if run_dir and (Path(run_dir) / "results.json").exists():
            shutil.copy(Path(run_dir) / "results.json", logdir / f"harness-{i}-results.json")
        entry = {"run": spec.label, "exit": rc, "status": status, "seconds": round(seconds, 1),
                 "failed_checkers": failed}
        if status in ("crashed", "timeout", "hung"):
            # e.g. "the cluster did not come up: no leader after 30 s": the mutant broke liveness
            entry["error"] = _harness_error(log)
        if status in ("timeout", "hung"):
            entry["error"] = (f"outlived its {limit:g} s limit; clean run "
                              + (f"{clean:g} s" if clean is not None else "not measured")
                              + (f" (limit >= {TIMEOUT_KILL_FACTOR:g}x: a kill)" if status == "hung"
                                 else f" (limit < {TIMEOUT_KILL_FACTOR:g}x: not a kill)")
                              + (f"; {entry['error']}" if entry.get("error") else ""))
        runs.append(entry)
        statuses.append(status)
        if status in ("killed", "hung"):
            break
    for status in ("killed", "hung", "crashed", "timeout", "unknown"):
        if status in statuses:
            first = next(r for r in runs if r["status"] == status)
            detail = f"{first['run']}: exit {first['exit']}"
            if first["failed_checkers"]:
                detail += f" ({', '.join(first['failed_checkers'])})"
            if first.get("error"):
                detail += f": {first['error']}"
            return StepResult(status, total, detail, runs, kill=True if status == "hung" else None)
    return StepResult("survived", total, "", runs)


def run_sim(copy: Path, cfg: Config, logdir: Path, *, baseline: bool = False) -> StepResult:
    """The sim step: the budget's seeds, one process each, from the copy."""
    assert cfg.sim is not None
    env = child_env(copy)
    timeout = BASELINE_SEED_TIMEOUT if baseline and not cfg.sim.seed_timeout else (cfg.sim_timeout or cfg.sim.seed_timeout
                                                                                  or BASELINE_SEED_TIMEOUT)

    def one(run: SimSeed, limit: float) -> SeedOutcome:
        argv = ([a.replace("{seed}", str(run.seed)).replace("{nemesis}", run.nemesis) for a in cfg.sim_command]
                if cfg.sim_command else cfg.sim.argv(cfg.python, run))
        log = seed_log(logdir, run)
        rc, seconds = _run(argv, cwd=copy, env=env, timeout=limit, log=log)
        outcome = classify_seed(run.seed, rc, log.read_text(encoding="utf-8", errors="replace"), seconds, run.nemesis)
        return judge_timeout(outcome, limit, None if baseline else cfg.sim_clean_seconds.get(run.label))

    outcomes = run_seeds(cfg.sim, one, timeout=timeout, raise_kills=cfg.sim_raise_kills and not baseline,
                         stop_early=not baseline)
    status, kill, detail = step_status(outcomes, cfg.sim_raise_kills and not baseline)
    return StepResult(status, sum(o.seconds for o in outcomes), detail, [o.to_json() for o in outcomes], kill=kill)


def evaluate(pristine: Path, scratch: Path, logdir: Path, mutant: Mutant | None, cfg: Config) -> MutantResult:
    """Copy, mutate, run the unit tests, the sim budget and the real runs; the copy is removed afterwards."""
    copy = make_copy(pristine, Path(tempfile.mkdtemp(prefix="m-", dir=scratch)) / "project", mutant)
    try:
        if mutant is None and cfg.jobs > 1 and cfg.unit and cfg.harness:
            # The baseline runs every step whatever the others find, and no mutant runs
            # meanwhile: its unit tests and its harness budget share the job slots. (Each
            # writes only its own files in the copy: pytest no cache, runs their results dir.)
            with ThreadPoolExecutor(max_workers=1) as side:
                pending = side.submit(run_unit, copy, cfg, logdir / "unit.log", None)
                sim, harness = _harness_steps(copy, cfg, logdir, None)
                return MutantResult(None, pending.result(), harness, sim)
        unit = run_unit(copy, cfg, logdir / "unit.log", mutant) if cfg.unit else StepResult("skipped")
        wanted = cfg.harness and (cfg.harness_for == "all" or unit.status == "killed" or not cfg.unit or mutant is None)
        sim, harness = _harness_steps(copy, cfg, logdir, mutant) if wanted else (StepResult("skipped"),) * 2
        return MutantResult(mutant, unit, harness, sim)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def _harness_steps(copy: Path, cfg: Config, logdir: Path, mutant: Mutant | None) -> tuple[StepResult, StepResult]:
    """(sim, real runs). The sim first: it is the cheaper part of the budget."""
    sim = run_sim(copy, cfg, logdir, baseline=mutant is None) if cfg.sim else StepResult("skipped")
    runs_wanted = bool(cfg.harness_runs) and (cfg.runs_after_sim_kill or not sim.counts_as_kill or mutant is None)
    harness = run_harness(copy, cfg, logdir) if runs_wanted else StepResult("skipped")
    return sim, harness


def check_baseline(result: MutantResult) -> None:
    problems = []
    if result.unit.status not in ("survived", "skipped"):
        problems.append(f"the unit tests fail on the unmutated code ({result.unit.status}: {result.unit.detail})")
    if result.harness.status not in ("survived", "skipped"):
        problems.append(f"a harness run is not valid on the unmutated code ({result.harness.status}: "
                        f"{result.harness.detail})")
    # A raise alone does not stop the run: it only stops raises from counting as kills.
    bad_seeds = [s for s in result.sim.runs if s["status"] not in ("survived", "raised")]
    if bad_seeds:
        listed = ", ".join(f"{SimSeed(s['seed'], s.get('nemesis', '')).label} {s['status']}" + (f" ({', '.join(s['failed_checkers'])})"
                                                          if s.get("failed_checkers") else "") for s in bad_seeds)
        problems.append(f"sim seeds are not valid on the unmutated code ({listed})")
    if problems:
        raise BaselineFailed("; ".join(problems) + ": every mutant would look killed, so nothing was measured")


def run_mutants(pristine: Path, scratch: Path, logroot: Path, mutants: Sequence[Mutant], cfg: Config,
                on_result: Callable[[int, MutantResult], None] | None = None,
                order: Sequence[int] | None = None) -> tuple[list[MutantResult], list[Mutant]]:
    """Evaluate mutants with `cfg.jobs` workers, starting them in `order` (indexes; default the
    list's order); returns (results in mutant order, mutants not run)."""
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
            for future in [pool.submit(work, i) for i in (order if order is not None else range(len(mutants)))]:
                future.result()
        except KeyboardInterrupt:
            stop.set()  # mutants already running finish; no new one starts
            raise
    return [results[i] for i in sorted(results)], [mutants[i] for i in sorted(not_run)]
