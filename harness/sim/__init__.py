"""Deterministic simulation runs: the real Ukehi (``ukehi.sim``) driven by seeded clients
and faults, judged by the same checkers as real runs. See :mod:`harness.sim.runner`."""

from .runner import SimResult, SimSettings, run_seed, swarm

__all__ = ["SimResult", "SimSettings", "run_seed", "swarm"]
