"""One mutation run from start to stored report: snapshot, pick mutants, preflight, baseline, run, report."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..store import check_writable, timestamp
from .operators import OPERATORS, Mutant, Validator, collect_mutants, python_files, select
from .report import plain_table, triage_lines, write_report, _score_line
from .runner import BaselineFailed, Config, MutantResult, check_baseline, evaluate, run_mutants
from .simbudget import TIMEOUT_KILL_FACTOR, SeedOutcome, auto_timeout
from .triage import Matching, Registry, load_registry
from .workspace import preflight, snapshot

DEFAULT_TARGETS: tuple[str, ...] = ("ukehi/raft", "ukehi/storage", "ukehi/kv.py", "ukehi/fencing.py", "ukehi/node/driver.py")


@dataclass
class Outcome:
    figures: dict[str, Any]
    report_dir: Path
    results: list[MutantResult]
    commit: str | None


def list_mutants(root: Path, targets: Sequence[str], operators: Sequence[str] = OPERATORS, *,
                 seed: int = 0, sample: int = 0, ids: Sequence[str] = (),
                 rev: str | None = "HEAD") -> tuple[list[Mutant], int, str | None]:
    """(the mutants a run with these options would evaluate, how many exist, the commit), from --rev."""
    with tempfile.TemporaryDirectory(prefix="ukehi-mutation-list-") as scratch:
        pristine = Path(scratch) / "pristine"
        commit = snapshot(root, pristine, rev)
        population = collect_mutants(pristine, targets, operators)
        return (select(population, sample=sample, seed=seed, ids=ids, valid=Validator(pristine)),
                len(population), commit)


def list_with_triage(root: Path, targets: Sequence[str], operators: Sequence[str] = OPERATORS, *,
                     seed: int = 0, sample: int = 0, ids: Sequence[str] = (), rev: str | None = "HEAD",
                     triage: Registry | None = None) -> tuple[list[Mutant], int, str | None, Matching]:
    """`list_mutants`, plus the triage registry matched against every mutant of the targets'
    files (all operators, so an entry is stale only when the code under it changed)."""
    registry = triage if triage is not None else load_registry(None)
    with tempfile.TemporaryDirectory(prefix="ukehi-mutation-list-") as scratch:
        pristine = Path(scratch) / "pristine"
        commit = snapshot(root, pristine, rev)
        population = collect_mutants(pristine, targets, operators)
        chosen = select(population, sample=sample, seed=seed, ids=ids, valid=Validator(pristine))
        matching = _match_triage(registry, pristine, targets, operators, population)
        return chosen, len(population), commit, matching


def _match_triage(registry: Registry, pristine: Path, targets: Sequence[str], operators: Sequence[str],
                  population: Sequence[Mutant]) -> Matching:
    """Match the registry against every mutant of the targets' files; entries of operators this
    run left out are matched against those operators' mutants too (never falsely stale)."""
    everything = population if set(operators) >= set(OPERATORS) else collect_mutants(pristine, targets)
    return registry.match(everything, pristine, files=python_files(pristine, targets))


def run_mutation(*, root: Path, results_dir: str, cfg: Config, targets: Sequence[str] = DEFAULT_TARGETS,
                 operators: Sequence[str] = OPERATORS, seed: int = 0, sample: int = 0, ids: Sequence[str] = (),
                 rev: str | None = "HEAD", command: str = "", keep_scratch: bool = False,
                 say: Callable[[str], None] = print, triage: Registry | None = None) -> Outcome:
    """Run the mutants and store ``<results_dir>/mutation/<timestamp>/mutation.{md,json}``.

    Raises BaselineFailed when the unmutated code does not pass its own checks,
    WorkspaceError when the copy cannot be made or would not be the code imported,
    ValueError for bad targets, operators or ids. TRIAGE: the registry of triaged mutants
    (default: harness/mutation/triage.toml; ``Registry(())`` for none).
    """
    registry = triage if triage is not None else load_registry(None)
    base = check_writable(results_dir) / "mutation"
    scratch = Path(tempfile.mkdtemp(prefix="ukehi-mutation-"))
    try:
        pristine = scratch / "pristine"
        commit = snapshot(root, pristine, rev)
        population = collect_mutants(pristine, targets, operators)
        chosen = select(population, sample=sample, seed=seed, ids=ids, valid=Validator(pristine))
        say(f"mutate: {len(chosen)} of {len(population)} mutants (seed {seed}) of "
            f"{', '.join(targets)} at {commit or 'the working tree'}")
        matching = _match_triage(registry, pristine, targets, operators, population)
        for problem in matching.problems():
            say(f"mutate: {problem}")
        for check in preflight(pristine, scratch, cfg.python):
            say(f"mutate: preflight: {check}")
        base.mkdir(exist_ok=True)
        where = base / timestamp()
        where.mkdir()
        meta = {"command": command, "commit": commit, "seed": seed, "sample": sample, "targets": list(targets),
                "operators": list(operators), "population": len(population),
                "unit_tests": None if not cfg.unit else list(cfg.unit_command or cfg.unit_tests),
                "harness_runs": None if not cfg.harness else
                [" ".join(cfg.harness_command)] if cfg.harness_command else [r.label for r in cfg.harness_runs],
                "sim": None if not cfg.harness or cfg.sim is None else
                (" ".join(cfg.sim_command) + f" for seeds {cfg.sim.label}") if cfg.sim_command else cfg.sim.label,
                "runs_after_sim_kill": cfg.runs_after_sim_kill,
                "harness_for": cfg.harness_for, "jobs": cfg.jobs,
                "triage": {"registry": registry.source, "entries": len(registry.entries),
                           "stale": [e.label for e in matching.stale],
                           "ambiguous": [f"{e.label}: {', '.join(ids)}" for e, ids in matching.ambiguous]}}
        say("mutate: baseline (the unmutated code through the same steps)")
        baseline = evaluate(pristine, scratch, where / "logs" / "baseline", None, cfg)
        say(f"mutate: baseline: unit {baseline.unit.status} ({baseline.unit.seconds:.0f} s), "
            f"harness {baseline.harness.status} ({baseline.harness.seconds:.0f} s)"
            + (f", sim {baseline.sim.status} ({len(baseline.sim.runs)} seeds, {baseline.sim.seconds:.0f} s)"
               if baseline.sim.status != "skipped" else ""))
        try:
            check_baseline(baseline)
        except BaselineFailed:
            (where / "baseline.json").write_text(json.dumps(baseline.to_json(), indent=2) + "\n", encoding="utf-8")
            raise
        if cfg.unit and cfg.unit_timeout <= 0:
            # A mutant that makes a test loop forever is killed by timeout; allow 3x a clean run.
            cfg.unit_timeout = max(60.0, round(3 * baseline.unit.seconds))
            say(f"mutate: unit timeout per mutant: {cfg.unit_timeout:g} s (3x the baseline)")
        meta["unit_timeout"] = cfg.unit_timeout
        if cfg.harness and cfg.sim is not None:
            seeds = [SeedOutcome(r["seed"], r["status"], r["exit"], r["seconds"], r["failed_checkers"],
                                 nemesis=r.get("nemesis", "")) for r in baseline.sim.runs]
            cfg.sim_timeout = auto_timeout(cfg.sim, seeds)
            raised = [o.key for o in seeds if o.status == "raised"]
            # A raise in node code is a kill only if the correct build never raises on these seeds.
            cfg.sim_raise_kills = not raised
            say(f"mutate: sim: each seed's limit {cfg.sim_timeout:g} s; node raises "
                + ("count as kills (the unmutated copy raised on no seed)" if not raised else
                   f"are NOT kills (the unmutated copy raised on seeds {', '.join(map(str, raised))})"))
            meta.update(sim_timeout=cfg.sim_timeout, sim_raise_kills=cfg.sim_raise_kills)
            # A mutant's seed over its limit is a kill ("hung") when the limit is >= 10x this.
            cfg.sim_clean_seconds = {o.key: float(o.seconds) for o in seeds}
        if cfg.harness:
            cfg.run_clean_seconds = {str(r["run"]): float(r["seconds"]) for r in baseline.harness.runs
                                     if r.get("status") == "survived"}
        meta.update(timeout_kill_factor=TIMEOUT_KILL_FACTOR)
        progress = where / "progress.jsonl"

        def on_result(index: int, result: MutantResult) -> None:
            assert result.mutant is not None
            with open(progress, "a", encoding="utf-8") as f:
                f.write(json.dumps(result.to_json()) + "\n")
            say(f"[{index + 1:>3}/{len(chosen)}] {result.mutant.id}  unit={result.unit.status} "
                f"({result.unit.seconds:.0f} s)"
                + (f"  sim={result.sim.status} ({result.sim.seconds:.0f} s)" if result.sim.status != "skipped" else "")
                + f"  runs={result.harness.status} ({result.harness.seconds:.0f} s)"
                + "".join(f"  {d}" for d in (result.sim.detail, result.harness.detail) if d))

        # Started in a seeded random order (reported in id order): when --time-budget cuts the
        # run short, the mutants left out are a random part of the sample, not its last files.
        order = list(range(len(chosen)))
        random.Random(seed).shuffle(order)
        results, not_run = run_mutants(pristine, scratch, where / "logs", chosen, cfg, on_result, order)
        figs = write_report(results_dir, where, results, not_run, meta, baseline, matching.by_id)
        say("")
        say(plain_table(results, figs))
        for line in triage_lines(results, matching.by_id):
            say(line)
        say("")
        say(_score_line(figs))
        return Outcome(figs, where, results, commit)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
