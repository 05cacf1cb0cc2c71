"""The simulator part of a mutant's harness budget: a fixed set of `ukehi-jepsen sim` seeds.

Each seed runs as its own ``python -m harness.cli sim --seed K --no-store --shrink-budget 0``
(the swarm: every fault family may be drawn), or, for a ``NAME@K`` seed, ``... --nemesis NAME``
(one fault family alone: the simulator's targeted families each come up with probability 1/2
per swarm seed and the moments they aim at rarely line up, so a family alone finds at seed 0
what the swarm first finds at seed 117), from the mutant's copy (the same PYTHONPATH isolation as the real runs), so a seed that
hangs the simulated cluster is cut off by its own time limit and the others still run.
What a seed's process printed decides its outcome:

- ``killed``: ``seed K: INVALID`` (exit 1): a checker (linearizability, white-box,
  corruption-policy) found the build wrong. The same verdict a real run would give.
- ``raised``: a Python exception escaped node code (a traceback, asyncio's "Exception in
  callback" / "Task exception was never retrieved", or a node's "fatal error" line) and no
  checker failed. A real node would log an error or exit there, so it is a failure of the
  build, but the simulator is not a real process: it counts as a kill only when the
  unmutated copy raised on none of the same seeds (decided by the baseline), and it is
  reported as its own category ("sim: node raised") either way.
- ``hung``: the seed's process outlived its time limit, and that limit is at least
  ``TIMEOUT_KILL_FACTOR`` (10) times what the unmutated copy took on the *same* seed in the
  baseline: a kill (mutmut's rule: a mutant that hangs code which is fast unmutated is
  killed). The margin is per seed, so a seed that is slow unmutated never turns a loaded
  machine's slowness into a kill; this machine's load varies a run's wall time by about
  3-5x (1-3 s quiet, ~15 s loaded), well under 10x.
- ``timeout``: the seed's process outlived its time limit where that margin does not hold
  (no baseline time for the seed, or a limit under 10x it). Reported apart, never a kill,
  like ``unknown``.
- ``unknown``: ``seed K: UNKNOWN`` (a checker could not decide).
- ``crashed``: anything else (no verdict, no traceback: e.g. a bad argument).
- ``survived``: ``seed K: VALID`` and nothing raised.

Seeds run in order and the step stops at the first seed that kills (or raises, when a raise
counts, or hangs or times out: the next seed would most likely hang too). The seed set is fixed and
never depends on results, so two measurements on the same commit run the same schedules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# One seed of the unmutated copy takes 1-3 s on a quiet machine, up to ~15 s on this loaded
# one; the baseline (which sets the automatic limit) gets a generous fixed one.
BASELINE_SEED_TIMEOUT = 300.0
MIN_SEED_TIMEOUT = 30.0
SEED_TIMEOUT_FACTOR = 5.0
# A timeout is a kill ("hung") only when the limit is at least this many times the
# unmutated copy's own time on the same seed (or the same real run): see the docstring.
TIMEOUT_KILL_FACTOR = 10.0

_RAISE_MARKERS = ("Traceback (most recent call last)", "Exception in callback", "Task exception was never retrieved",
                  "ukehi node: fatal error")
# The simulator stops a powered-off node's disk work with this OSError; the dead node's
# driver then prints its "fatal error" line on the simulator's stderr, which a real
# powered-off process never could. Not a raise of the build (seen on a mutant that
# compacts at every Ready: seed 7 valid, only this line).
_DEAD_PROCESS = "simulated process is dead"
_EXC_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Violation|Interrupt|Exit)\b.*$")
# A request or admin call still pending when the seed ends is a coroutine the finished
# simulated loop can no longer run; Python closes it at garbage collection and prints
# "Exception ignored in: <coroutine ...>" with a traceback ending in "RuntimeError: Event loop
# is closed". That is the simulator's teardown, not a raise of the build (seen on mutants
# that leave the cluster unable to answer, so calls are still waiting at the end).
_LOOP_CLOSED = "RuntimeError: Event loop is closed"


def _without_teardown_noise(lines: list[str]) -> list[str]:
    """LINES without the "Exception ignored in" blocks whose exception is _LOOP_CLOSED."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Exception ignored in:"):
            j = i + 1
            # The block: indented frames, Traceback headers, chained-exception notes, and
            # exception lines, up to the last exception line before other output.
            end = None
            while j < len(lines):
                ln = lines[j]
                if ln.startswith((" ", "\t", "Traceback (most recent call last)", "During handling", "The above")) \
                        or not ln.strip() or _EXC_LINE.match(ln.strip()):
                    if _EXC_LINE.match(ln.strip()) and not ln.startswith((" ", "\t")):
                        end = j
                    j += 1
                    continue
                break
            if end is not None and lines[end].strip() == _LOOP_CLOSED:
                i = end + 1
                continue
        out.append(lines[i])
        i += 1
    return out


@dataclass(frozen=True)
class SimSeed:
    """One seed of the budget: ``K`` (the swarm) or ``NAME@K`` (the sim's --nemesis NAME alone)."""

    seed: int
    nemesis: str = ""    # "" = the swarm; else a --nemesis value ("+" in the spec joins several)

    @property
    def label(self) -> str:
        return f"{self.nemesis.replace(',', '+')}@{self.seed}" if self.nemesis else str(self.seed)


# The default: the swarm's seeds 0-15 (every fault family may be drawn), then each targeted
# fault family of the simulator (harness/sim/targeted.py) alone on a few seeds. Measured on
# the unmutated build at e899b9e: each family valid alone on seeds 0-7 (no raise); the
# commit-old-term mutant (core.py `_maybe_commit` without its current-term check) is
# killed by figure-eight@0, which the swarm draw first reaches at seed 117.
# The names restate harness.sim.runner.TARGETED (figure-eight and stale-leader first) rather
# than import it: that import costs ~140 ms at every CLI start, where `mutate --help` reads
# this default. tests/harness/test_mutation_triage.py holds the two lists to the same set.
TARGETED_FAMILIES: tuple[str, ...] = ("figure-eight", "stale-leader", "fall-after-append", "vote-flip",
                                      "slow-leader-clock")
#: Disk damage alone, after the targeted families: the swarm draws damage among many faults
#: and seldom lines up a damaged segment, its repair at restart and a second restart, where
#: WAL recovery (in mutate's paths) shows its bugs. Measured on d599bd9: the unmutated build
#: valid on damage@0-2 (damage 0-39: 0 failing); wal.py's `apply_actions(...)` dropped (a
#: planned cut never made) survives 0-15 and every targeted family and dies at damage@0
#: (node-health) and damage@1 (durable-cut).
DISK_FAMILIES: tuple[str, ...] = ("damage",)
DEFAULT_SWARM_SEEDS = 16
DEFAULT_FAMILY_SEEDS = 3


def _nemesis_names() -> tuple[str, ...]:
    from harness.sim.runner import NEMESES  # the sim's own list (imported late: it pulls in the node)

    return tuple(NEMESES)


@dataclass(frozen=True)
class SimBudget:
    """``SEEDS[:SECONDS]``: which seeds, and the wall-clock limit of each (0 = automatic).

    SEEDS is a count ``N`` (swarm seeds 0..N-1), or a comma list whose parts are a swarm seed
    ``K`` or range ``A-B`` (inclusive), or ``NAME@K`` / ``NAME@A-B``: seeds of the sim's
    ``--nemesis NAME`` alone (``NAME`` a sim nemesis, several joined with ``+``), e.g.
    ``0-15,figure-eight@0-2``. Swarm seeds run first, then the family seeds in the order
    given. SECONDS bounds each seed's process; without it the limit is 5x the slowest seed of
    the unmutated copy, at least 30 s.
    """

    seeds: tuple[int, ...]
    seed_timeout: float = 0.0
    families: tuple[SimSeed, ...] = ()

    @property
    def runs(self) -> tuple[SimSeed, ...]:
        """Every seed in run order: the swarm's, then the families'."""
        return tuple(SimSeed(k) for k in self.seeds) + self.families

    @classmethod
    def parse(cls, text: str, nemeses: Sequence[str] | None = None) -> "SimBudget":
        """NEMESES: the names a NAME may be (default: the simulator's own list)."""
        spec, sep, secs = text.strip().partition(":")
        hint = (f"--harness-sim {text!r}: write SEEDS[:SECONDS], SEEDS a count (20 = swarm seeds 0-19) or a comma "
                "list of swarm seeds and ranges (0-9,100,101) and NAME@RANGE parts for one sim nemesis alone "
                "(0-15,figure-eight@0-2,stale-leader@4), SECONDS the wall limit of each seed")
        seeds: list[int] = []
        families: list[SimSeed] = []

        def span(part: str) -> range:
            lo, dash, hi = part.partition("-")
            a, b = int(lo), int(hi) if dash else int(lo)
            if a < 0 or b < a:
                raise ValueError
            return range(a, b + 1)

        try:
            items = [s.strip() for s in spec.split(",")]
            if len(items) == 1 and "-" not in items[0] and "@" not in items[0]:
                count = int(items[0])
                if count < 1:
                    raise ValueError
                seeds = list(range(count))
            else:
                for item in items:
                    name, at, rest = item.rpartition("@")
                    if not at:
                        seeds.extend(span(item))
                        continue
                    names = [n.strip() for n in name.split("+")]
                    known = tuple(nemeses) if nemeses is not None else _nemesis_names()
                    bad = [n for n in names if n not in known]
                    if bad:
                        raise ValueError(f"{hint}; {'+'.join(bad) or repr(name)} before @ is not a sim nemesis: "
                                         f"choose from {', '.join(known)} (e.g. figure-eight@0-2)")
                    families.extend(SimSeed(k, ",".join(names)) for k in span(rest.strip()))
            timeout = float(secs) if sep else 0.0
        except ValueError as err:
            raise ValueError(str(err) if str(err).startswith(hint) else hint) from None
        if timeout < 0 or (sep and timeout == 0):
            raise ValueError(hint)
        return cls(tuple(dict.fromkeys(seeds)), timeout, tuple(dict.fromkeys(families)))

    @property
    def label(self) -> str:
        parts = [_ranges(self.seeds)] if self.seeds else []
        i = 0
        fams = self.families
        while i < len(fams):  # consecutive seeds of one nemesis share a part: figure-eight@0-2
            j = i
            while j + 1 < len(fams) and fams[j + 1].nemesis == fams[i].nemesis:
                j += 1
            name = fams[i].nemesis.replace(",", "+")
            parts += [f"{name}@{r}" for r in _ranges([s.seed for s in fams[i:j + 1]], keep_range=True).split(",")]
            i = j + 1
        return ",".join(parts) + (f":{self.seed_timeout:g}" if self.seed_timeout else "")

    def argv(self, python: str, seed: "SimSeed | int") -> list[str]:
        run = seed if isinstance(seed, SimSeed) else SimSeed(seed)
        # Shrinking would spend minutes re-running a failing seed; only the verdict matters here.
        return [python, "-m", "harness.cli", "sim", "--seed", str(run.seed), "--no-store", "--shrink-budget", "0",
                *(["--nemesis", run.nemesis] if run.nemesis else [])]


DEFAULT_SIM_BUDGET = SimBudget(tuple(range(DEFAULT_SWARM_SEEDS)), 0.0,
                               tuple(SimSeed(k, name) for name in TARGETED_FAMILIES + DISK_FAMILIES
                                     for k in range(DEFAULT_FAMILY_SEEDS)))


def _ranges(seeds: Sequence[int], keep_range: bool = False) -> str:
    """0,1,2,3,7 -> '0-3,7' (a single run of seeds keeps the range form, so it parses back;
    KEEP_RANGE: a lone seed too, as 'K', which after NAME@ is a seed, not a count)."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(f"{seeds[i]}-{seeds[j]}" if j > i or (len(seeds) == 1 and not keep_range) else str(seeds[i]))
        i = j + 1
    return ",".join(parts)


@dataclass
class SeedOutcome:
    seed: int
    status: str                       # killed | hung | raised | timeout | unknown | crashed | survived
    exit: int | None
    seconds: float
    failed_checkers: list[str]
    raised: str = ""                  # the exception line, when node code raised
    hung_margin: str = ""             # why a timeout is (or is not) a kill: limit vs the clean run
    nemesis: str = ""                 # "" = a swarm seed; else the --nemesis it ran with alone

    @property
    def key(self) -> str:
        """The seed as the budget writes it: ``K`` or ``NAME@K`` (baseline times are per key)."""
        return SimSeed(self.seed, self.nemesis).label

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seed": self.seed, "status": self.status, "exit": self.exit,
                                "seconds": round(self.seconds, 1), "failed_checkers": self.failed_checkers}
        if self.nemesis:
            data["nemesis"] = self.nemesis
        if self.raised:
            data["raised"] = self.raised
        if self.hung_margin:
            data["hung_margin"] = self.hung_margin
        return data


def classify_seed(seed: int, rc: int | None, output: str, seconds: float = 0.0, nemesis: str = "") -> SeedOutcome:
    """One seed's outcome from its process's exit code (None = timed out) and output
    (NEMESIS: the --nemesis it ran with alone, "" for the swarm)."""
    verdict = re.search(rf"^seed {seed}: (VALID|INVALID|UNKNOWN)\b", output, re.M)
    failed_line = re.search(r"^\s+failed checkers: (.+)$", output, re.M)
    failed = [c.strip() for c in failed_line.group(1).split(",")] if failed_line else []
    raised = ""
    lines = [ln for ln in _without_teardown_noise(output.splitlines())
             if not (ln.startswith("ukehi node: fatal error") and _DEAD_PROCESS in ln)]
    if any(marker in ln for ln in lines for marker in _RAISE_MARKERS):
        fatal = [ln.strip() for ln in lines if ln.startswith("ukehi node: fatal error")]
        exc = [ln.strip() for ln in lines if _EXC_LINE.match(ln.strip())]
        raised = ((exc[-1] if exc else "") or (fatal[-1] if fatal else "") or "exception")[:200]
    if rc is None:
        status = "timeout"
    elif verdict and verdict.group(1) == "INVALID" and rc == 1:
        status = "killed"
    elif raised:
        status = "raised"
    elif verdict and verdict.group(1) == "UNKNOWN":
        status = "unknown"
    elif verdict and verdict.group(1) == "VALID" and rc == 0:
        status = "survived"
    else:
        status = "crashed"
    return SeedOutcome(seed, status, rc, seconds, failed, raised, nemesis=nemesis)


#: the baseline stores each run's seconds rounded to 0.1 s: a recorded time may be this much short
CLEAN_SECONDS_ROUNDING = 0.05


def timeout_is_kill(limit: float, clean_seconds: float | None) -> bool:
    """A run that outlived ``limit`` is killed when the unmutated copy's run of the same seed
    (or the same real run) took ``clean_seconds`` (as recorded, rounded to 0.1 s: its upper
    bound is used, so a fast seed recorded as 0 s still has a margin) and ``limit >=
    TIMEOUT_KILL_FACTOR`` times that. No clean time (the baseline itself, or a seed it did not
    run): never a kill."""
    return clean_seconds is not None and limit >= TIMEOUT_KILL_FACTOR * (clean_seconds + CLEAN_SECONDS_ROUNDING)


def judge_timeout(outcome: SeedOutcome, limit: float, clean_seconds: float | None) -> SeedOutcome:
    """``outcome`` with a ``timeout`` turned into ``hung`` (a kill) when :func:`timeout_is_kill`."""
    if outcome.status != "timeout":
        return outcome
    clean = "no clean time for this seed" if clean_seconds is None else f"clean run {clean_seconds:g} s"
    if timeout_is_kill(limit, clean_seconds):
        outcome.status = "hung"
        outcome.hung_margin = f"limit {limit:g} s >= {TIMEOUT_KILL_FACTOR:g}x the {clean}"
    else:
        outcome.hung_margin = f"limit {limit:g} s < {TIMEOUT_KILL_FACTOR:g}x the {clean}: not a kill"
    return outcome


# Which seed outcome names the whole step, strongest first. A raise that does not count
# (the baseline raised too) is still reported, below timeouts and above unknowns.
_ORDER = ("killed", "hung", "raised", "timeout", "unknown", "crashed")


def step_status(outcomes: Sequence[SeedOutcome], raise_kills: bool) -> tuple[str, bool, str]:
    """(status, counts as a kill, detail) of the sim step over its seeds."""
    order = _ORDER if raise_kills else ("killed", "hung", "timeout", "raised", "unknown", "crashed")
    for status in order:
        hit = next((o for o in outcomes if o.status == status), None)
        if hit is None:
            continue
        detail = f"sim seed {hit.key}: {status}"
        if hit.failed_checkers:
            detail += f" ({', '.join(hit.failed_checkers)})"
        if hit.raised:
            detail += f": {hit.raised}"
        if hit.hung_margin:
            detail += f" ({hit.hung_margin})"
        kill = status in ("killed", "hung") or (status == "raised" and raise_kills)
        return status, kill, detail
    return "survived", False, ""


def run_seeds(budget: SimBudget, run_one: Callable[[SimSeed, float], SeedOutcome], *, timeout: float,
              raise_kills: bool, stop_early: bool = True) -> list[SeedOutcome]:
    """Run the budget's seeds in order (`budget.runs`) with `run_one(seed, timeout)`; stop at the first
    kill (a raise too, when raises count) or timeout unless `stop_early` is off (the baseline)."""
    outcomes: list[SeedOutcome] = []
    for seed in budget.runs:
        out = run_one(seed, timeout)
        outcomes.append(out)
        if stop_early and (out.status in ("killed", "hung", "timeout") or (out.status == "raised" and raise_kills)):
            break
    return outcomes


def auto_timeout(budget: SimBudget, baseline: Sequence[SeedOutcome]) -> float:
    """The per-seed limit for mutants: the one given, else 5x the slowest clean seed (>= 30 s)."""
    if budget.seed_timeout:
        return budget.seed_timeout
    slowest = max((o.seconds for o in baseline), default=0.0)
    return max(MIN_SEED_TIMEOUT, round(SEED_TIMEOUT_FACTOR * slowest))


def seed_log(logdir: Path, seed: "SimSeed | int") -> Path:
    label = seed.label.replace("@", "-").replace("+", "-") if isinstance(seed, SimSeed) else str(seed)
    return logdir / f"sim-seed-{label}.log"
