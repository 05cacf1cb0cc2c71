"""`ukehi-jepsen mutate`'s simulator budget: parsing, per-seed classification, kills, raises,
timeouts, and the baseline rule (the unmutated copy must pass the same seeds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.cli import EXIT_BAD_ARGUMENT, main
from harness.mutation import BaselineFailed, Config, HarnessRun, run_mutation
from harness.mutation.report import figures
from harness.mutation.runner import MutantResult, StepResult, check_baseline
from harness.mutation.simbudget import SimBudget, SimSeed, auto_timeout, classify_seed, run_seeds, step_status

NAMES = ("figure-eight", "stale-leader", "vote-flip", "partition", "kill")

# --- parsing ----------------------------------------------------------------------------


def test_sim_budget_parses_counts_ranges_lists_and_a_seed_limit():
    assert SimBudget.parse("4") == SimBudget((0, 1, 2, 3), 0.0)
    assert SimBudget.parse("0-3,10").seeds == (0, 1, 2, 3, 10)
    assert SimBudget.parse(" 100-102 : 45 ") == SimBudget((100, 101, 102), 45.0)
    assert SimBudget.parse("7-7").seeds == (7,)
    assert SimBudget.parse("3,1,3").seeds == (3, 1)  # duplicates once, order kept
    for text in ("4", "0-3,10", "100-102:45", "7-7", "0,2,4"):
        assert SimBudget.parse(SimBudget.parse(text).label) == SimBudget.parse(text)
    assert SimBudget.parse("0,1,2,5").label == "0-2,5"


@pytest.mark.parametrize("text", ["x", "0", "-1", "3-1", "5:0", "5:-3", "5:abc", "1,,2", ":10", "2-"])
def test_sim_budget_rejects_bad_specs_with_the_form_to_use(text):
    with pytest.raises(ValueError, match=r"SEEDS\[:SECONDS\]"):
        SimBudget.parse(text)


def test_mutate_rejects_a_bad_sim_budget_and_an_empty_harness():
    assert main(["mutate", "--harness-sim", "3-1"]) == EXIT_BAD_ARGUMENT
    assert main(["mutate", "--harness-sim", "none", "--harness-run", "none"]) == EXIT_BAD_ARGUMENT


def test_nodes_in_a_harness_run_is_the_node_count_not_a_node_option():
    run = HarnessRun.parse("register/membership/20/2/nodes=5,snapshot_threshold=50")
    argv = run.argv("py", Path("/r"))
    assert argv[argv.index("--nodes") + 1] == "5"
    assert argv.count("--node-option") == 1 and argv[argv.index("--node-option") + 1] == "snapshot_threshold=50"
    assert run.label == "register/membership/20/2/nodes=5,snapshot_threshold=50"


# --- one seed's outcome from its process ----------------------------------------------------

ASYNCIO_RAISE = """\
Task exception was never retrieved
future: <Task finished name='Task-7' coro=<SimWorld.request.<locals>.serve() done>
Traceback (most recent call last):
  File "/x/ukehi/node/api.py", line 120, in handle_request
    return self._get(body)
KeyError: 'register/3'
seed 4: VALID  digest abc  virtual 20.0 s in 1.00 s wall, 100 ops
"""


def test_classify_seed_tells_kills_raises_timeouts_unknowns_and_crashes_apart():
    invalid = "seed 3: INVALID  digest d  virtual 1 s\n  failed checkers: linearizable, durability\n"
    out = classify_seed(3, 1, invalid, 2.0)
    assert (out.status, out.failed_checkers) == ("killed", ["linearizable", "durability"])
    assert classify_seed(3, 0, "seed 3: VALID  digest d\n").status == "survived"
    assert classify_seed(3, 0, "seed 3: UNKNOWN  digest d\n").status == "unknown"
    assert classify_seed(3, None, "seed 3: VA").status == "timeout"
    assert classify_seed(3, 254, "ukehi-jepsen: error: --nemesis 'x'\n").status == "crashed"
    # Another seed's verdict line is not this seed's.
    assert classify_seed(3, 0, "seed 30: VALID\n").status == "crashed"
    # Swallowed by asyncio, verdict valid: node code raised.
    raised = classify_seed(4, 0, ASYNCIO_RAISE)
    assert raised.status == "raised" and raised.raised == "KeyError: 'register/3'"
    # Escaped the simulation: no verdict at all.
    escaped = classify_seed(5, 1, "Traceback (most recent call last):\n  File ...\nZeroDivisionError: division by zero\n")
    assert escaped.status == "raised" and "ZeroDivisionError" in escaped.raised
    # A checker verdict wins over a raise: the seed is killed (and says what raised).
    both = classify_seed(4, 1, ASYNCIO_RAISE.replace("VALID", "INVALID") + "  failed checkers: node-health\n")
    assert both.status == "killed" and both.raised.startswith("KeyError")
    # A node the simulator had powered off prints its fatal line: not a raise of the build.
    dead = "ukehi node: fatal error in ready: OSError(5, 'simulated process is dead')\nseed 7: VALID  digest x\n"
    assert classify_seed(7, 0, dead).status == "survived"
    assert classify_seed(7, 0, dead.replace("simulated process is dead", "disk full")).status == "raised"


def _outcomes(*statuses: str):
    return [classify_seed(i, *{"killed": (1, f"seed {i}: INVALID\n"), "survived": (0, f"seed {i}: VALID\n"),
                                "raised": (1, "Traceback (most recent call last):\nKeyError: 1\n"),
                                "timeout": (None, ""), "unknown": (0, f"seed {i}: UNKNOWN\n")}[s], 1.0)
            for i, s in enumerate(statuses)]


def test_step_status_counts_a_raise_as_a_kill_only_when_the_baseline_allows_it():
    seeds = _outcomes("survived", "raised", "unknown")
    assert step_status(seeds, raise_kills=True)[:2] == ("raised", True)
    assert step_status(seeds, raise_kills=False)[:2] == ("raised", False)
    assert step_status(_outcomes("raised", "timeout"), raise_kills=False)[:2] == ("timeout", False)
    assert step_status(_outcomes("raised", "killed"), raise_kills=False)[:2] == ("killed", True)
    assert step_status(_outcomes("survived", "survived"), raise_kills=True) == ("survived", False, "")


def test_seeds_stop_at_the_first_kill_or_timeout_except_in_the_baseline():
    plan = {0: "survived", 1: "killed", 2: "survived"}

    def one(seed: SimSeed, limit: float):
        return _outcomes(*[plan[s] for s in range(seed.seed + 1)])[seed.seed]

    budget = SimBudget((0, 1, 2))
    assert [o.seed for o in run_seeds(budget, one, timeout=9, raise_kills=True)] == [0, 1]
    assert len(run_seeds(budget, one, timeout=9, raise_kills=True, stop_early=False)) == 3


def test_family_seeds_run_after_the_swarm_seeds_and_the_first_kill_stops_them():
    ran: list[str] = []

    def one(seed: SimSeed, limit: float):
        ran.append(seed.label)
        killed = seed.nemesis == "figure-eight" and seed.seed == 1
        return classify_seed(seed.seed, 1 if killed else 0,
                             f"seed {seed.seed}: {'INVALID' if killed else 'VALID'}\n", 1.0, seed.nemesis)

    budget = SimBudget.parse("0-1,stale-leader@0,figure-eight@0-2,vote-flip@0", nemeses=NAMES)
    outcomes = run_seeds(budget, one, timeout=9, raise_kills=True)
    assert ran == ["0", "1", "stale-leader@0", "figure-eight@0", "figure-eight@1"]
    status, kill, detail = step_status(outcomes, raise_kills=True)
    assert (status, kill) == ("killed", True) and detail.startswith("sim seed figure-eight@1: killed")
    assert outcomes[-1].to_json()["nemesis"] == "figure-eight" and "nemesis" not in outcomes[0].to_json()


def test_automatic_seed_limit_is_five_times_the_slowest_clean_seed():
    clean = [classify_seed(0, 0, "seed 0: VALID\n", 4.0), classify_seed(1, 0, "seed 1: VALID\n", 12.0)]
    assert auto_timeout(SimBudget((0, 1)), clean) == 60
    assert auto_timeout(SimBudget((0, 1)), clean[:1]) == 30  # at least 30 s
    assert auto_timeout(SimBudget((0, 1), 7.0), clean) == 7.0


# --- end to end on a tiny project with a stand-in sim command --------------------------------

CALC = '''\
def votes_needed(n):
    return n // 2 + 1


def spin(n):
    while n > 0:
        n -= 1
    return n


def lookup(d, k):
    if k in d:
        return d[k]
    return None

'''
UNIT = "from ukehi.calc import votes_needed\nassert votes_needed(3) == 2\n"
# Stands in for `python -m harness.cli sim --seed K`: prints what the real command prints.
SIM = '''\
import sys
from ukehi.calc import lookup, spin, votes_needed
seed = int(sys.argv[1])
with open("seeds-run.txt", "a") as f:
    f.write(f"{seed}\\n")
spin(3)                                   # the loop mutant hangs here: a timeout
if seed >= 1 and votes_needed(3) != 2:    # a quorum off by one: seed 1 sees it
    print(f"seed {seed}: INVALID  digest x")
    print("  failed checkers: linearizable")
    sys.exit(1)
if seed == 2:
    lookup({}, "k")                       # the swapped branch raises KeyError here
print(f"seed {seed}: VALID  digest x")
'''


@pytest.fixture
def sim_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "ukehi").mkdir(parents=True)
    (root / "ukehi" / "__init__.py").write_text("")
    (root / "ukehi" / "cli.py").write_text("print('usage: ukehi')\n")
    (root / "ukehi" / "calc.py").write_text(CALC)
    (root / "unit_standin.py").write_text(UNIT)
    (root / "sim_standin.py").write_text(SIM)
    return root


def _cfg(**kw) -> Config:
    base = dict(unit_command=[sys.executable, "unit_standin.py"], harness_runs=[],
                sim=SimBudget((0, 1, 2, 3), 0.0), sim_command=[sys.executable, "sim_standin.py", "{seed}"],
                unit_timeout=20, jobs=2)
    base.update(kw)
    return Config(**base)


def test_sim_budget_kills_a_quorum_mutant_and_reports_a_node_raise_apart(sim_project, tmp_path):
    ids = {
        "quorum": "ukehi/calc.py:2:11:floordiv_plus1",   # unit tests and sim seed 1 kill it
        "raise": "ukehi/calc.py:12:4:swap_if",           # lookup raises KeyError on seed 2
    }
    lines: list[str] = []
    outcome = run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=_cfg(), targets=["ukehi/calc.py"],
                           ids=list(ids.values()), rev=None, say=lines.append)
    by = {r.mutant.id: r for r in outcome.results}
    quorum, raised = by[ids["quorum"]], by[ids["raise"]]

    assert quorum.unit.status == "killed" and quorum.sim.status == "killed" and quorum.harness_killed
    assert [s["seed"] for s in quorum.sim.runs] == [0, 1]  # stopped at the first killing seed
    assert "linearizable" in quorum.sim.detail and quorum.harness.status == "skipped"  # no real runs given

    assert raised.sim.status == "raised" and raised.sim.counts_as_kill  # the baseline never raised
    assert "KeyError" in raised.sim.detail and [s["seed"] for s in raised.sim.runs] == [0, 1, 2]
    assert raised.unit.status == "survived" and raised.killed

    figs = outcome.figures
    assert figs["sim_killed"] == 1 and figs["sim_raised"] == 1 and figs["sim_raised_killed"] == 1
    assert figs["harness_killed"] == 2 and figs["killed_by_harness_only"] == 1
    assert any("node raises count as kills" in line for line in lines)
    md = (outcome.report_dir / "mutation.md").read_text()
    assert "sim: node raised" in md and "by sim (checker)" in md
    stored = json.loads((outcome.report_dir / "mutation.json").read_text())
    assert stored["sim_raise_kills"] is True and stored["baseline"]["sim"]["status"] == "survived"
    assert len(stored["baseline"]["sim"]["runs"]) == 4  # the baseline runs every seed


def test_a_mutant_that_hangs_a_fast_seed_is_killed_as_hung(sim_project, tmp_path):
    # Each clean seed takes a fraction of a second (under 2 s even on a loaded machine: one
    # small Python process); the limit (20 s) is over 10x that: a kill.
    cfg = _cfg(unit_command=[sys.executable, "-c", "pass"], sim=SimBudget((0, 1, 2), 20.0))
    outcome = run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=cfg, targets=["ukehi/calc.py"],
                           ids=["ukehi/calc.py:7:8:drop_stmt"], rev=None, say=lambda _: None)
    hang = outcome.results[0]
    assert hang.sim.status == "hung" and hang.sim.counts_as_kill and hang.killed, (hang.sim.detail, hang.sim.runs)
    assert "limit 20 s >= 10x the clean run" in hang.sim.detail
    assert len(hang.sim.runs) == 1  # the next seed would hang too: not run
    assert outcome.figures["sim_hung"] == 1 and outcome.figures["sim_timeout"] == 0
    assert outcome.figures["harness_killed"] == 1 and outcome.figures["harness_crashed"] == 0
    md = (outcome.report_dir / "mutation.md").read_text()
    assert "hung (killed)" in md and "at least 10x the unmutated" in md


def test_a_hang_where_the_clean_seed_is_slow_stays_a_timeout_not_a_kill(sim_project, tmp_path):
    # Every clean seed takes over 2.1 s: a 20 s limit is under 10x that, so the hang could be load.
    (sim_project / "sim_standin.py").write_text(SIM.replace("spin(3)", "import time; time.sleep(2.1); spin(3)"))
    cfg = _cfg(unit_command=[sys.executable, "-c", "pass"], sim=SimBudget((0, 1), 20.0))
    outcome = run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=cfg, targets=["ukehi/calc.py"],
                           ids=["ukehi/calc.py:7:8:drop_stmt"], rev=None, say=lambda _: None)
    hang = outcome.results[0]
    assert hang.sim.status == "timeout" and not hang.sim.counts_as_kill and not hang.killed
    assert "not a kill" in hang.sim.detail
    assert outcome.figures["sim_timeout"] == 1 and outcome.figures["harness_crashed"] == 1
    assert outcome.figures["sim_hung"] == 0


def test_timeout_kill_rule_is_per_seed_against_the_clean_run():
    from harness.mutation.simbudget import SeedOutcome, judge_timeout, timeout_is_kill

    # the recorded clean time is rounded to 0.1 s: its upper bound (+0.05 s) must fit 10 times
    assert timeout_is_kill(60, 5.9) and timeout_is_kill(60, 5.94) and not timeout_is_kill(60, 6.0)
    assert not timeout_is_kill(60, None)  # no clean time: never
    assert timeout_is_kill(60, 0.0) and not timeout_is_kill(0.4, 0.0)  # a fast seed recorded as 0 s
    hung = judge_timeout(SeedOutcome(4, "timeout", None, 60.0, []), 60.0, 2.0)
    assert hung.status == "hung" and hung.to_json()["hung_margin"].startswith("limit 60 s >= 10x")
    slow = judge_timeout(SeedOutcome(4, "timeout", None, 60.0, []), 60.0, 12.0)
    assert slow.status == "timeout" and "not a kill" in slow.hung_margin
    # other outcomes are left alone, however fast the clean run was
    assert judge_timeout(SeedOutcome(4, "survived", 0, 1.0, []), 60.0, 0.1).status == "survived"
    # a hang names the step above a raise that does not count, below a checker's kill
    assert step_status([hung], raise_kills=False)[:2] == ("hung", True)
    killed = SeedOutcome(5, "killed", 1, 1.0, ["linearizable"])
    assert step_status([hung, killed], raise_kills=True)[0] == "killed"


def test_raises_are_not_kills_when_the_unmutated_copy_raises_too(sim_project, tmp_path):
    # The correct build itself raises on seed 3 (and is valid there): raises then prove nothing.
    (sim_project / "sim_standin.py").write_text(SIM.replace('print(f"seed {seed}: VALID',
                                                            'seed == 3 and {}["boom"]\nprint(f"seed {seed}: VALID'))
    lines: list[str] = []
    outcome = run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=_cfg(),
                           targets=["ukehi/calc.py"], ids=["ukehi/calc.py:12:4:swap_if"], rev=None, say=lines.append)
    r = outcome.results[0]
    assert r.sim.status == "raised" and not r.sim.counts_as_kill and not r.killed
    assert any("are NOT kills" in line and "3" in line for line in lines)
    assert outcome.figures["sim_raised"] == 1 and outcome.figures["sim_raised_killed"] == 0


def test_baseline_refuses_to_measure_when_the_clean_copy_fails_a_seed(sim_project, tmp_path):
    (sim_project / "sim_standin.py").write_text(SIM.replace("if seed >= 1 and votes_needed(3) != 2",
                                                            "if seed == 2 or votes_needed(3) != 2"))
    with pytest.raises(BaselineFailed, match=r"sim seeds are not valid on the unmutated code \(2 killed \(linearizable\)\)"):
        run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=_cfg(), targets=["ukehi/calc.py"],
                     sample=1, rev=None, say=lambda _: None)
    stored = json.loads(next((tmp_path / "results" / "mutation").glob("*/baseline.json")).read_text())
    assert [s["status"] for s in stored["sim"]["runs"]] == ["survived", "survived", "killed", "survived"]


def test_baseline_check_reads_every_seed_not_only_the_step_status():
    # A raise names the step, but an unknown seed behind it must still stop the run.
    runs = [o.to_json() for o in _outcomes("raised", "unknown")]
    base = MutantResult(None, StepResult("survived"), StepResult("skipped"), StepResult("raised", runs=runs, kill=False))
    with pytest.raises(BaselineFailed, match="1 unknown"):
        check_baseline(base)
    ok = MutantResult(None, StepResult("survived"), StepResult("skipped"),
                      StepResult("raised", runs=[o.to_json() for o in _outcomes("raised", "survived")], kill=False))
    check_baseline(ok)


def test_figures_split_the_harness_into_real_runs_and_sim():
    from harness.mutation import find_mutants

    m = find_mutants("def f(a):\n    return a < 1\n", "ukehi/raft/x.py", ["cmp_flip"])[0]

    def r(unit: str, runs: str, sim: str, kill: bool | None = None) -> MutantResult:
        return MutantResult(m, StepResult(unit), StepResult(runs), StepResult(sim, kill=kill))

    rs = [r("killed", "killed", "survived"), r("killed", "survived", "killed"), r("killed", "killed", "killed"),
          r("killed", "survived", "raised", True), r("killed", "survived", "raised", False),
          r("killed", "unknown", "survived"), r("survived", "survived", "timeout")]
    f = figures(rs)
    assert f["harness_killed"] == 4 and f["runs_killed"] == 2 and f["sim_killed"] == 2
    assert f["sim_raised"] == 2 and f["sim_raised_killed"] == 1
    assert f["killed_by_sim_not_runs"] == 2 and f["killed_by_runs_not_sim"] == 1
    assert f["harness_score"] == round(4 / 6, 4) and f["harness_noticed"] == 1.0
    assert f["harness_crashed"] == 2 and f["harness_unknown"] == 1 and f["survived"] == 1


def test_unit_tests_about_the_mutated_module_run_first_and_none_is_dropped():
    from harness.mutation.runner import DEFAULT_UNIT_TESTS, tests_nearest_first

    tests = [*DEFAULT_UNIT_TESTS, "--deselect=tests/raft/test_x.py::t"]
    raft = tests_nearest_first(tests, "ukehi/raft/core.py")
    assert raft[0] == "tests/raft" and sorted(raft) == sorted(tests)
    assert tests_nearest_first(tests, "ukehi/kv.py")[0] == "tests/test_kv.py"
    assert tests_nearest_first(tests, "ukehi/storage/wal.py")[0] == "tests/storage"
    assert tests_nearest_first(tests, None) == tests  # the baseline keeps the given order


@pytest.mark.parametrize("after_kill", [True, False])
def test_real_runs_after_a_sim_kill_only_when_asked(sim_project, tmp_path, after_kill):
    cfg = _cfg(harness_runs=[HarnessRun("register", "none", 1, 0)], harness_command=[sys.executable, "-c", "pass"],
               runs_after_sim_kill=after_kill, sim=SimBudget((0, 1), 0.0))
    outcome = run_mutation(root=sim_project, results_dir=str(tmp_path / "results"), cfg=cfg, targets=["ukehi/calc.py"],
                           ids=["ukehi/calc.py:2:11:floordiv_plus1"], rev=None, say=lambda _: None)
    r = outcome.results[0]
    assert r.sim.status == "killed"
    assert r.harness.status == ("survived" if after_kill else "skipped")
    assert outcome.figures["killed_by_sim_not_runs"] == (1 if after_kill else 0)


_PENDING_AT_END = """seed 3: VALID  digest d  virtual 16.5 s in 1.61 s wall, 229 ops
Task was destroyed but it is pending!
task: <Task pending name='Task-106' coro=<SimWorld.request.<locals>.serve() running at ukehi/sim/world.py:494>>
Exception ignored in: <coroutine object SimWorld.request.<locals>.serve at 0x7fcc77ad3240>
Traceback (most recent call last):
  File "ukehi/sim/world.py", line 494, in serve
    reply = await inc.node.handle_request(wire.Frame(msg_type, 1, body, 0))
  File "ukehi/sim/loop.py", line 135, in call_soon
    raise RuntimeError("Event loop is closed")
RuntimeError: Event loop is closed
Task was destroyed but it is pending!
"""


def test_a_call_still_pending_when_the_seed_ends_is_the_simulators_teardown_not_a_raise():
    # Python closes the pending coroutine after the simulated loop finished: "Event loop is
    # closed". Counted as a node raise, it made a mutant that leaves calls waiting a kill.
    assert classify_seed(3, 0, _PENDING_AT_END).status == "survived"
    # Any other exception in such a block, or a traceback of its own after it, still counts.
    other = _PENDING_AT_END.replace("RuntimeError: Event loop is closed", "KeyError: 'planted'")
    assert classify_seed(3, 0, other).raised == "KeyError: 'planted'"
    after = _PENDING_AT_END + "Exception in callback f()\nTraceback (most recent call last):\nValueError: x\n"
    assert classify_seed(3, 0, after).raised == "ValueError: x"
