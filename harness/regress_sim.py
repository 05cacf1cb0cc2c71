"""The regress suite's simulated column (issue 13): every planted bug searched for by the
simulator (``harness.sim.runner.run_seed``) under a fixed budget of seeds.

Deterministic by construction, so CI cannot flake on it: the budget is a count of seeds
(never wall time) from ``SIM_START_SEED``, each seed decides its whole run, seeds run in
worker processes spawned with ``PYTHONHASHSEED=0`` (as ``ukehi-jepsen sim`` does), and the
first failing seed *in seed order* is what counts, whatever the number of workers. The
swarm draws the options per seed; nothing is tuned per bug: a case only names the
simulated workload its bug needs (``Case.sim_workload``).

When the column fails the suite (and ``regress`` exits 1):

- the correct build: any failing seed within the budget (a false alarm, or a real bug:
  replay it with the printed command);
- a planted bug that the case table records as found by the simulator within k seeds
  (``Case.sim_found_within``), when the budget covers k, and that is not found now: its
  detection was lost (if the simulator's draws changed on purpose, re-measure and update
  the table).

Any other bug not found within the budget is shown as "not found (sim)" and never fails
the suite; a bug whose workload the simulator does not run yet is "not run".

After the swarm's seeds, each row may also run every targeted fault family of the simulator
(``harness.sim.targeted``: figure-eight, stale-leader, ...) *alone* for a few seeds
(``family_seeds``; ``regress`` gives 3, ``--quick`` 1). The swarm switches each family on for
half of its seeds among every other fault, and the moment a family waits for (a leader's
append of old-term entries, a vote just granted) lines up in a mixed schedule only rarely;
run alone, each family reaches its moment in most seeds. This is stratified sampling over
the families the simulator already has, the same for every bug and the correct build,
never a schedule chosen for one bug. A probe of that part is named ``FAMILY@SEED`` and
replays with ``ukehi-jepsen sim --seed SEED --nemesis FAMILY``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from .regress import BUG_CASES, CORRECT, WHITEBOX_CHECKERS, Case

#: the first seed of every search (the README's seeds-to-first-failure table starts here too)
SIM_START_SEED = 0
#: seeds per bug (and for the correct build): the full suite, and --quick
SIM_SEEDS = 30
SIM_SEEDS_QUICK = 10
#: seeds per targeted family run alone after the swarm's seeds: the full suite, and --quick
SIM_FAMILY_SEEDS = 3
SIM_FAMILY_SEEDS_QUICK = 1
#: the corruption-policy checker judges the sim's WAL damage like a real run's
SIM_ALSO_COUNTS = WHITEBOX_CHECKERS | {"corruption-policy"}


@dataclass
class SimRow:
    """One row of the simulated column: a planted bug (or the correct build) and its search."""

    bug: str
    workload: str
    start_seed: int
    budget: int  # swarm seeds allowed
    outcome: str  # "found" | "not found (sim)" | "LOST" | "clean" | "FALSE ALARM" | "not run"
    ok: bool
    seeds_run: int = 0  # up to and including the first find (bugs), all of the budget (correct build)
    first_failing_seed: int | None = None
    seeds_to_first_failure: int | None = None  # probes run up to and including the find (swarm first)
    caught_by: list[str] = field(default_factory=list)
    failing_seeds: list[Any] = field(default_factory=list)  # correct build: every failing probe (int or FAMILY@K)
    found_within: int | None = None  # the case table's record (bugs)
    family_seeds: int = 0  # seeds per targeted family run alone after the swarm's
    families: list[str] = field(default_factory=list)
    first_failing_family: str | None = None  # the find was a family run alone (its name)
    found_by_family: str | None = None  # the case table's record of a family probe (FAMILY@K)
    replay: str = ""
    run_dir: str = ""
    wall_s: float = 0.0
    detail: str = ""

    @property
    def cell(self) -> str:
        """The short text of the main table's sim column."""
        if self.outcome == "found":
            where = (f"{self.first_failing_family}@{self.first_failing_seed}" if self.first_failing_family
                     else f"seed {self.first_failing_seed}")
            return f"{where} ({self.seeds_to_first_failure} of {self.probes})"
        if self.outcome == "not found (sim)":
            return f"not found (sim) in {self.probes}"
        if self.outcome == "LOST":
            return f"LOST: not in {self.probes} (was {self.found_by_family or self.found_within})"
        if self.outcome in ("clean", "FALSE ALARM"):
            return f"{len(self.failing_seeds)} of {self.seeds_run} failing"
        return self.outcome

    @property
    def probes(self) -> int:
        """Seeds in the whole budget: the swarm's and every family's alone."""
        return self.budget + self.family_seeds * len(self.families)

    @property
    def span(self) -> str:
        swarm = f"{self.start_seed}..{self.start_seed + self.budget - 1}"
        if not self.family_seeds or not self.families:
            return swarm
        alone = f"0..{self.family_seeds - 1}" if self.family_seeds > 1 else "0"
        return f"{swarm}, then seeds {alone} of each of {len(self.families)} families alone"


def probe_plan(budget: int, family_seeds: int, start_seed: int = SIM_START_SEED) -> list[tuple[str | None, int]]:
    """A row's probes in search order: the swarm's seeds, then each targeted family alone
    (``(family, seed)``; family None = the swarm's draw of every fault)."""
    from harness.sim.runner import TARGETED

    return ([(None, s) for s in range(start_seed, start_seed + budget)]
            + [(family, s) for family in TARGETED for s in range(family_seeds)])


def probe_label(family: str | None, seed: int) -> Any:
    return seed if family is None else f"{family}@{seed}"


def _sim_one(args: tuple[int, Any, str | None, frozenset[str] | None]) -> dict[str, Any]:
    """Worker: one seed; stores the run when it counts (``results_dir`` set).
    ``counts``: the checkers whose failure is the bug found (None: any failure, the correct build)."""
    seed, settings, results_dir, counts = args
    from harness.sim.runner import run_seed
    from harness.sim.store import replay_command, store_result

    r = run_seed(seed, settings, keep_world=results_dir is not None)
    failing = r.failing_checkers()
    counting = bool(failing) and (counts is None or any(n in counts for n in failing))
    out = {"seed": seed, "valid": r.valid, "failing": failing, "counting": counting,
           "wall": r.wall_seconds, "replay": replay_command(seed, settings), "run": ""}
    if counting and results_dir is not None:
        out["run"] = store_result(r, settings, results_dir)
    return out


@contextmanager
def sim_pool(workers: int) -> Iterator[Callable[[list[tuple[Any, ...]]], list[dict[str, Any]]]]:
    """A pool of spawned workers with PYTHONHASHSEED=0 (a seed replays identically in any
    process); yields ``map`` over job tuples, results in job order."""
    before = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # the spawned workers inherit it at start
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers)
    finally:
        if before is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = before
    try:
        yield lambda jobs: pool.map(_sim_one, jobs, chunksize=1)
    finally:
        pool.terminate()
        pool.join()


def _settings(workload: str, bug: str | None, family: str | None = None) -> Any:
    from harness.sim.runner import SimSettings

    settings = SimSettings(workload=workload, node_options=(("unsafe_bug", bug),) if bug else ())
    return settings if family is None else replace(settings, nemeses=(family,))


def search(case: Case | None, workload: str, budget: int, run: Callable[[list[tuple[Any, ...]]], list[dict[str, Any]]],
           workers: int, results_dir: str | None, start_seed: int = SIM_START_SEED, family_seeds: int = 0) -> SimRow:
    """Search the row's probes (``probe_plan``: seeds ``start_seed`` .. ``start_seed + budget - 1``
    of the swarm, then ``family_seeds`` seeds of each targeted family alone) in batches of
    ``workers``: a bug (``case``) until the first probe a counting checker fails, the
    correct build (``case`` None) over the whole budget."""
    from harness.sim.runner import TARGETED
    from harness.sim.runner import WORKLOADS as SIM_WORKLOADS

    bug = case.bug if case is not None else None
    label = bug or CORRECT
    found_within = case.sim_found_within if case is not None else None
    found_by_family = case.sim_found_by_family if case is not None else None
    row = SimRow(label, workload, start_seed, budget, "not run", True, found_within=found_within,
                 family_seeds=family_seeds, families=list(TARGETED) if family_seeds else [],
                 found_by_family=found_by_family)
    if workload not in SIM_WORKLOADS:
        row.detail = (f"the simulator has no {workload} workload yet (it runs {', '.join(SIM_WORKLOADS)}: "
                      "harness/sim/runner.py WORKLOADS)")
        return row
    plan = probe_plan(budget, family_seeds, start_seed)
    settings = {family: _settings(workload, bug, family) for family in {f for f, _ in plan}}
    counts = None if case is None else frozenset(case.expected_checkers) | SIM_ALSO_COUNTS
    started = time.monotonic()
    first: tuple[int, str | None, dict[str, Any]] | None = None  # (position, family, outcome)
    other: tuple[str | None, dict[str, Any]] | None = None  # bug: first probe failing only by another checker
    extra_runs: list[str] = []
    at = 0
    while at < len(plan) and first is None:
        batch = plan[at:at + workers]
        outs = run([(s, settings[family], results_dir, counts) for family, s in batch])
        for n, ((family, _), out) in enumerate(zip(batch, outs), at + 1):
            if case is None and out["valid"] is False:
                row.failing_seeds.append(probe_label(family, out["seed"]))
            if out["counting"]:
                if first is None:
                    first = (n, family, out)
                elif out["run"]:
                    extra_runs.append(out["run"])  # a later probe of the same batch: not the one that counts
            elif out["failing"] and other is None:
                other = (family, out)
        at += len(batch)
        if case is None:
            first = None  # the correct build runs its whole budget
    for path in extra_runs:
        shutil.rmtree(path, ignore_errors=True)
    row.wall_s = round(time.monotonic() - started, 1)
    if case is None:
        row.seeds_run = len(plan)
        if row.failing_seeds:
            row.outcome, row.ok = "FALSE ALARM", False
            failed = row.failing_seeds[0]
            family, seed = (failed.split("@")[0], int(failed.split("@")[1])) if isinstance(failed, str) else (None, failed)
            row.first_failing_seed, row.first_failing_family = seed, family
            row.seeds_to_first_failure = plan.index((family, seed)) + 1
            row.replay = _replay(settings[family], seed)
            row.detail = (f"the correct build failed on {', '.join(map(str, row.failing_seeds))}; "
                          f"replay: {row.replay}")
        else:
            row.outcome = "clean"
        return row
    if first is not None:
        n, family, out = first
        row.outcome = "found"
        row.first_failing_seed, row.first_failing_family = out["seed"], family
        row.seeds_to_first_failure = row.seeds_run = n
        row.caught_by = list(out["failing"])
        row.replay, row.run_dir = out["replay"], out["run"]
        return row
    row.seeds_run = len(plan)
    labels = {str(probe_label(f, s)) for f, s in plan}
    if found_within is not None and found_within <= budget:
        row.outcome, row.ok = "LOST", False
        row.detail = (f"the case table records it found within {found_within} seeds from {start_seed}; not found "
                      f"in {row.probes} now (if the simulator's draws changed on purpose, re-measure and update "
                      "Case.sim_found_within)")
    elif found_by_family is not None and found_by_family in labels:
        row.outcome, row.ok = "LOST", False
        row.detail = (f"the case table records it found by {found_by_family} (that family alone); not found in "
                      f"{row.probes} now (if the simulator's draws changed on purpose, re-measure and update "
                      "Case.sim_found_by_family)")
    else:
        row.outcome = "not found (sim)"
    if other is not None:
        row.detail = ((row.detail + "; ") if row.detail else "") + (
            f"{'seed ' if other[0] is None else ''}{probe_label(other[0], other[1]['seed'])} failed only by "
            f"{', '.join(other[1]['failing'])} (not a checker that names this bug)")
    return row


def _replay(settings: Any, seed: int) -> str:
    from harness.sim.store import replay_command

    return replay_command(seed, settings)


def correct_workloads(cases: Sequence[Case]) -> list[str]:
    """The correct-build rows: one per simulated workload the bug cases use (register first)."""
    return list(dict.fromkeys(["register"] + [c.sim_workload for c in cases if c.sim_workload]))


def run_sim_column(budget: int, *, cases: Sequence[Case] = BUG_CASES, only: Sequence[str] = (),
                   workers: int = 2, results_dir: str | None = None, family_seeds: int = 0,
                   progress: Callable[[str], None] = print) -> list[SimRow]:
    """The column's rows: the correct build (unless ``only`` leaves it out), then each bug;
    ``family_seeds``: seeds of each targeted family alone after the swarm's (module doc)."""
    chosen = [c for c in cases if c.bug and (not only or c.bug in only)]
    want_correct = not only or "correct" in only
    plan: list[tuple[Case | None, str | None]] = []
    if want_correct:
        plan += [(None, w) for w in correct_workloads(cases)]
    plan += [(c, c.sim_workload) for c in chosen]
    rows: list[SimRow] = []
    with sim_pool(workers) as run:
        for n, (case, workload) in enumerate(plan, 1):
            label = case.bug if case is not None else CORRECT
            if workload is None:
                assert case is not None
                rows.append(SimRow(label, "-", SIM_START_SEED, budget, "not run", True,
                                   found_within=case.sim_found_within,
                                   detail=case.sim_why or "no simulated workload reaches this bug"))
            else:
                span = SimRow(label, workload, SIM_START_SEED, budget, "", True, family_seeds=family_seeds,
                              families=list(_targeted()) if family_seeds else []).span
                progress(f"[sim {n}/{len(plan)}] {label}: {workload}, seeds {span} ...")
                rows.append(search(case, workload, budget, run, workers, results_dir, family_seeds=family_seeds))
            r = rows[-1]
            cell = f": {r.cell}" if r.outcome in ("found", "clean", "FALSE ALARM") else ""
            progress(f"    {r.outcome}{cell}" + (f" by {', '.join(r.caught_by)}" if r.caught_by else "")
                     + (f" ({r.detail})" if r.detail else "") + f"  [{r.wall_s:.0f} s wall]")
    return rows


def _targeted() -> tuple[str, ...]:
    from harness.sim.runner import TARGETED

    return TARGETED


def format_sim_table(rows: Sequence[SimRow]) -> str:
    lines = ["| bug | sim workload | seeds | result | seeds to first failure | first failing seed | caught by |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        span = r.span
        first = "-" if r.seeds_to_first_failure is None else str(r.seeds_to_first_failure)
        seed = "-" if r.first_failing_seed is None else str(probe_label(r.first_failing_family, r.first_failing_seed))
        result = r.outcome if r.bug != CORRECT else f"{r.outcome} ({r.cell})"
        lines.append(f"| {r.bug} | {r.workload} | {span} | {result} | {first} | {seed} | "
                     f"{', '.join(r.caught_by) or '-'} |")
    return "\n".join(lines)


def sim_notes(rows: Sequence[SimRow]) -> list[str]:
    """One line per row that failed the column or was not run, with why."""
    return [f"sim {r.bug}: {r.outcome}: {r.detail}" for r in rows if r.detail and (not r.ok or r.outcome == "not run")]


def summarize_sim(rows: Sequence[SimRow]) -> dict[str, Any]:
    bugs = [r for r in rows if r.bug != CORRECT]
    correct = [r for r in rows if r.bug == CORRECT]
    found = [r for r in bugs if r.outcome == "found"]
    steps = [r.seeds_to_first_failure for r in found if r.seeds_to_first_failure is not None]
    return {
        "ok": all(r.ok for r in rows),
        "start_seed": SIM_START_SEED,
        "budget": rows[0].budget if rows else None,
        "family_seeds": rows[0].family_seeds if rows else 0,
        "bugs": len(bugs),
        "found": len(found),
        "not_found": sorted(r.bug for r in bugs if r.outcome == "not found (sim)"),
        "not_run": sorted(r.bug for r in bugs if r.outcome == "not run"),
        "lost": sorted(r.bug for r in bugs if r.outcome == "LOST"),
        "correct_seeds": sum(r.seeds_run for r in correct),
        "correct_failures": sum(len(r.failing_seeds) for r in correct),
        "median_seeds_to_first_failure": statistics.median(steps) if steps else None,
        "rows": [asdict(r) for r in rows],
    }
