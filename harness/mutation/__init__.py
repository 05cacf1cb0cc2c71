"""Mutation testing of Ukehi: how many small bugs nobody planted do the unit tests and the harness catch?

`operators` finds mutants (AST-located text splices), `workspace` makes private copies of the
project (the shared tree is never written), `runner` runs each mutant against the unit tests and
a fixed harness budget (real runs, and simulator seeds: `simbudget`, the swarm's and each
targeted fault family's alone), `triage` matches mutants against the registry of triaged
survivors (`triage.toml`), `report` computes the figures and writes the stored report,
`session` ties them together for ``ukehi-jepsen mutate``.
"""

from .operators import OPERATORS, Mutant, apply, collect_mutants, find_mutants, select
from .runner import DEFAULT_HARNESS_RUNS, DEFAULT_UNIT_TESTS, BaselineFailed, Config, HarnessRun
from .session import DEFAULT_TARGETS, Outcome, list_mutants, run_mutation
from .simbudget import DEFAULT_SIM_BUDGET, SimBudget, SimSeed
from .triage import CATEGORIES, Registry, load_registry
from .workspace import WorkspaceError

__all__ = [
    "OPERATORS", "Mutant", "apply", "collect_mutants", "find_mutants", "select",
    "DEFAULT_HARNESS_RUNS", "DEFAULT_UNIT_TESTS", "BaselineFailed", "Config", "HarnessRun",
    "DEFAULT_TARGETS", "Outcome", "list_mutants", "run_mutation", "WorkspaceError", "DEFAULT_SIM_BUDGET", "SimBudget",
    "SimSeed", "CATEGORIES", "Registry", "load_registry",
]
