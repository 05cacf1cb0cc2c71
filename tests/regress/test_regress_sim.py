"""regress's simulated column (harness/regress_sim.py): the search rule on scripted seed
results, and the column for real (the simulator, a small budget, bugs it finds at once)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.ci import junit_xml, regress_sim_cases
from harness.regress import BUG_CASES, CORRECT, Case
from harness.regress_sim import SimRow, correct_workloads, format_sim_table, run_sim_column, search, summarize_sim

CLI = [sys.executable, "-m", "harness.cli"]


def scripted(failing: dict[int, list[str]]):
    """A ``run`` that answers each seed from a table instead of simulating it, recording the
    batches it was given; ``counting`` is computed as the worker does."""
    batches: list[list[int]] = []

    def run(jobs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        batches.append([j[0] for j in jobs])
        out = []
        for seed, _settings, _results, counts in jobs:
            names = failing.get(seed, [])
            out.append({"seed": seed, "valid": False if names else True, "failing": names,
                        "counting": bool(names) and (counts is None or any(n in counts for n in names)),
                        "wall": 0.1, "replay": f"ukehi-jepsen sim --seed {seed}", "run": ""})
        return out

    return run, batches


BUG = Case("stale-read", "register", ("partition",), seed=1, time_limit=10, quick_time_limit=5)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_first_failing_seed_in_seed_order_counts_whatever_the_workers(workers: int) -> None:
    run, batches = scripted({5: ["linearizable"], 6: ["linearizable"], 9: ["linearizable"]})
    row = search(BUG, "register", 30, run, workers, None)
    assert (row.outcome, row.ok, row.first_failing_seed, row.seeds_to_first_failure) == ("found", True, 5, 6)
    assert row.caught_by == ["linearizable"] and row.replay == "ukehi-jepsen sim --seed 5"
    assert all(len(b) <= workers for b in batches) and max(max(b) for b in batches) < 5 + workers  # stopped


def test_a_failure_only_by_an_unrelated_checker_is_not_the_bug_found() -> None:
    fencing = Case("no-fencing-check", "fencing", ("pause",), seed=1, time_limit=10, quick_time_limit=5,
                   expected_checkers=("fencing",), sim_workload="fencing")
    run, _ = scripted({0: ["linearizable"], 3: ["fencing", "linearizable"]})
    row = search(fencing, "fencing", 10, run, 2, None)
    assert (row.outcome, row.first_failing_seed, row.caught_by) == ("found", 3, ["fencing", "linearizable"])
    # a white-box or corruption-policy failure names the bug (as in the real suite)
    run, _ = scripted({2: ["state-machine-safety"]})
    assert search(BUG, "register", 10, run, 1, None).first_failing_seed == 2
    run, _ = scripted({1: ["linearizable"]})
    row = search(fencing, "fencing", 4, run, 1, None)
    assert (row.outcome, row.ok) == ("not found (sim)", True)
    assert "seed 1 failed only by linearizable" in row.detail


def test_not_found_within_a_budget_that_covers_the_record_is_lost() -> None:
    recorded = Case("lease-no-drift-bound", "register", ("slow-leader",), seed=0, time_limit=10,
                    quick_time_limit=5, sim_found_within=15)
    run, _ = scripted({})
    lost = search(recorded, "register", 20, run, 2, None)
    assert (lost.outcome, lost.ok, lost.seeds_run) == ("LOST", False, 20)
    assert "found within 15 seeds" in lost.detail and lost.cell == "LOST: not in 20 (was 15)"
    # a budget below the record expects nothing: an honest "not found (sim)"
    short = search(recorded, "register", 10, run, 2, None)
    assert (short.outcome, short.ok, short.cell) == ("not found (sim)", True, "not found (sim) in 10")


def test_the_correct_build_runs_its_whole_budget_and_any_failing_seed_fails_the_column() -> None:
    run, batches = scripted({})
    clean = search(None, "register", 7, run, 3, None)
    assert (clean.outcome, clean.ok, clean.seeds_run, clean.cell) == ("clean", True, 7, "0 of 7 failing")
    assert sorted(s for b in batches for s in b) == list(range(7))
    run, _ = scripted({2: ["durability"], 4: ["linearizable"]})
    alarm = search(None, "register", 7, run, 2, None)
    assert (alarm.outcome, alarm.ok, alarm.failing_seeds, alarm.first_failing_seed) == ("FALSE ALARM", False,
                                                                                          [2, 4], 2)
    assert "--seed 2" in alarm.replay and "UKEHI_I_KNOW" not in alarm.replay


def test_a_workload_the_simulator_lacks_is_not_run() -> None:
    case = Case("no-fencing-check", "fencing", ("pause",), seed=1, time_limit=10, quick_time_limit=5,
                sim_workload="no-such-workload", sim_found_within=1)
    run, batches = scripted({})
    row = search(case, "no-such-workload", 10, run, 1, None)
    assert (row.outcome, row.ok, batches) == ("not run", True, [])
    assert "no no-such-workload workload" in row.detail


def test_every_bug_case_names_a_sim_workload_and_the_correct_build_covers_them() -> None:
    from harness.registry import WORKLOADS

    assert all(c.sim_workload is None or c.sim_workload in WORKLOADS for c in BUG_CASES), \
        [(c.bug, c.sim_workload) for c in BUG_CASES]
    assert set(correct_workloads(BUG_CASES)) == {c.sim_workload for c in BUG_CASES if c.sim_workload} | {"register"}


def test_summary_table_and_junit_of_the_column() -> None:
    rows = [SimRow(CORRECT, "register", 0, 5, "clean", True, seeds_run=5),
            SimRow("stale-read", "register", 0, 5, "found", True, seeds_run=1, first_failing_seed=0,
                   seeds_to_first_failure=1, caught_by=["linearizable"]),
            SimRow("forget-vote", "register", 0, 5, "not found (sim)", True, seeds_run=5),
            SimRow("lease-no-drift-bound", "register", 0, 5, "LOST", False, seeds_run=5, found_within=3,
                   detail="recorded within 3"),
            SimRow("txn-not-atomic", "list-append", 0, 5, "not run", True, detail="no list-append")]
    s = summarize_sim(rows)
    assert (s["ok"], s["found"], s["bugs"], s["lost"], s["not_found"], s["not_run"]) == (
        False, 1, 4, ["lease-no-drift-bound"], ["forget-vote"], ["txn-not-atomic"])
    assert (s["correct_seeds"], s["correct_failures"], s["median_seeds_to_first_failure"]) == (5, 0, 1)
    table = format_sim_table(rows).splitlines()
    assert "| stale-read | register | 0..4 | found | 1 | 0 | linearizable |" in table
    assert "| (correct build) | register | 0..4 | clean (0 of 5 failing) | - | - | - |" in table
    root = ET.fromstring(junit_xml("ukehi-jepsen regress", regress_sim_cases(rows)))
    suite = root.find("testsuite")
    assert (suite.get("failures"), suite.get("skipped"), suite.get("tests")) == ("1", "1", "5")
    by_name = {c.get("name"): c for c in suite.iter("testcase")}
    assert by_name["lease-no-drift-bound (sim register)"].find("failure").get("message").startswith("LOST")
    assert by_name["txn-not-atomic (sim list-append)"].find("skipped") is not None
    assert by_name["forget-vote (sim register)"].find("failure") is None


def test_sim_options_are_checked(tmp_path: Path) -> None:
    for args, words in ((["--no-sim", "--sim-only"], "exclude each other"), (["--sim-seeds", "0"], "at least 1"),
                        (["--sim-family-seeds", "-1"], "at least 0")):
        done = subprocess.run(CLI + ["regress", *args, "--results-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 254 and words in done.stderr, done.stderr


@pytest.mark.timeout(600)
def test_the_sim_column_for_real_finds_quick_bugs_and_passes_the_correct_build(tmp_path: Path) -> None:
    # As CI runs it: --sim-only, a small budget, bugs the simulator finds on the first seeds,
    # from a relative results dir. Deterministic: the same seeds fail every time.
    done = subprocess.run(CLI + ["regress", "--sim-only", "--only", "correct,stale-read,ack-before-commit",
                                 "--sim-seeds", "2", "--sim-family-seeds", "1", "--results-dir", "results",
                                 "--junit", "regress.xml",
                                 "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    sim = doc["summary"]["sim"]
    rows = {(r["bug"], r["workload"]): r for r in sim["rows"]}
    assert rows[("stale-read", "register")]["outcome"] == "found"
    assert rows[("ack-before-commit", "register")]["outcome"] == "found"
    from harness.sim.runner import TARGETED

    # two swarm seeds, then seed 0 of each targeted family alone
    assert rows[(CORRECT, "register")]["outcome"] == "clean"
    assert rows[(CORRECT, "register")]["seeds_run"] == 2 + len(TARGETED)
    assert rows[(CORRECT, "register")]["families"] == list(TARGETED)
    # the other workloads' correct-build rows: clean, or not run while the simulator lacks them
    assert all(r["outcome"] in ("clean", "not run") for r in sim["rows"] if r["bug"] == CORRECT), sim["rows"]
    assert doc["rows"] == [] and doc["ok"] is True
    stale = rows[("stale-read", "register")]
    # the failing seed is stored as a run that analyze can re-check, and named by a replay command
    run = tmp_path / stale["run_dir"] if not Path(stale["run_dir"]).is_absolute() else Path(stale["run_dir"])
    assert run.is_relative_to(tmp_path / "results") and (run / "history.jsonl").is_file()
    assert json.loads((run / "results.json").read_text())["valid"] is False
    assert f"--seed {stale['first_failing_seed']}" in stale["replay"] and "unsafe_bug=stale-read" in stale["replay"]
    junit = ET.parse(tmp_path / "regress.xml").getroot()
    names = {c.get("name") for c in junit.iter("testcase")}
    assert {"stale-read (sim register)", "ack-before-commit (sim register)", "(correct build) (sim register)"} <= names
    stored = sorted((tmp_path / "results" / "regress").glob("*/regress.md"))
    assert stored and "Simulated column" in stored[-1].read_text()


@pytest.mark.timeout(600)
def test_a_bug_found_before_and_not_now_fails_the_column(tmp_path: Path) -> None:
    # commit-old-term is not found on seed 0: a table that claimed it was makes the column fail.
    claimed = Case("commit-old-term", "register", ("figure-8",), seed=13, time_limit=10, quick_time_limit=5,
                   sim_found_within=1)
    rows = run_sim_column(1, cases=[claimed], only=["commit-old-term"], workers=1, results_dir=None,
                          progress=lambda _: None)
    assert [(r.bug, r.outcome, r.ok) for r in rows] == [("commit-old-term", "LOST", False)]


def test_the_serve_page_shows_the_sim_column(tmp_path: Path) -> None:
    import io
    from dataclasses import asdict
    from wsgiref.util import setup_testing_defaults

    from harness.regress import Row, summarize
    from harness.serve.app import App

    sim_rows = [SimRow(CORRECT, "register", 0, 5, "clean", True, seeds_run=5),
                SimRow("stale-read", "register", 0, 5, "found", True, seeds_run=1, first_failing_seed=0,
                       seeds_to_first_failure=1, caught_by=["linearizable"], replay="ukehi-jepsen sim --seed 0"),
                SimRow("forget-vote", "register", 0, 5, "not found (sim)", True, seeds_run=5)]
    rows = [Row("stale-read", "register", "partition", 11, 20, "detected", True, ["linearizable"], 4.1, "", 30.0,
                sim=sim_rows[1].cell)]
    summary = summarize(rows) | {"sim": summarize_sim(sim_rows)}
    path = tmp_path / "regress" / "20260103T100000.000Z"
    path.mkdir(parents=True)
    (path / "regress.json").write_text(json.dumps({"quick": True, "summary": summary,
                                                   "rows": [asdict(r) for r in rows], "cases": []}))
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update({"PATH_INFO": f"/group/regress/{path.name}", "REQUEST_METHOD": "GET", "QUERY_STRING": "",
                    "wsgi.input": io.BytesIO(b""), "REMOTE_ADDR": "127.0.0.1"})
    seen: dict[str, str] = {}
    page = b"".join(App(tmp_path)(environ, lambda status, headers: seen.update(status=status))).decode()
    assert seen["status"].startswith("200"), page[:500]
    assert "<td>seed 0 (1 of 5)</td>" in page  # the main table's sim cell
    assert 'id="regress-sim"' in page and "found <b>1/2</b> (not found: forget-vote)" in page
    assert "not found (sim)" in page and "ukehi-jepsen sim --seed 0" in page


@pytest.mark.timeout(600)
def test_real_rows_carry_their_bug_s_sim_cell_and_both_tables_are_stored(tmp_path: Path) -> None:
    from harness.regress import run_suite
    from harness.run import RunOutcome
    from harness.store import new_run

    def runner(spec: Any) -> RunOutcome:  # a real run that the linearizability checker failed
        run = new_run(spec.results_dir, spec.name)
        (run.path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
            {"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "read", "key": 1},
            {"index": 1, "time": 10, "process": 0, "type": "ok", "f": "read", "key": 1, "value": 3}]))
        return RunOutcome(run, {"valid": False, "checkers": {"linearizable": {
            "valid": False, "failures": [{"blocked_index": 0}]}}})

    rows, summary, stored = run_suite(str(tmp_path / "results"), quick=True, only=["stale-read"], runner=runner,
                                      sim_seeds=1, sim_workers=1, progress=lambda _: None)
    assert [(r.bug, r.outcome, r.sim) for r in rows] == [("stale-read", "detected", "seed 0 (1 of 1)")]
    assert summary["ok"] is True and summary["sim"]["found"] == 1 and summary["sim"]["correct_seeds"] == 0
    md = (stored / "regress.md").read_text()
    assert "| sim: first failing seed (seeds run of budget) |" in md and "| seed 0 (1 of 1) |" in md
    assert "| stale-read | register | 0..0 | found | 1 | 0 | linearizable |" in md
    assert json.loads((stored / "regress.json").read_text())["summary"]["sim"]["rows"][0]["outcome"] == "found"


def scripted_probes(failing: dict[str, list[str]]):
    """As ``scripted``, keyed by probe label: ``"7"`` for swarm seed 7, ``"figure-eight@0"``
    for seed 0 of that family alone (read from the job's settings, as the worker would run it)."""
    from harness.sim.runner import NEMESES

    jobs_seen: list[str] = []

    def run(jobs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        out = []
        for seed, settings, _results, counts in jobs:
            label = str(seed) if settings.nemeses == NEMESES else f"{','.join(settings.nemeses)}@{seed}"
            jobs_seen.append(label)
            names = failing.get(label, [])
            out.append({"seed": seed, "valid": False if names else True, "failing": names,
                        "counting": bool(names) and (counts is None or any(n in counts for n in names)),
                        "wall": 0.1, "replay": f"ukehi-jepsen sim --seed {seed} --nemesis {','.join(settings.nemeses)}",
                        "run": ""})
        return out

    return run, jobs_seen


def test_each_targeted_family_runs_alone_after_the_swarm_and_a_find_there_is_named_by_it() -> None:
    from harness.regress_sim import probe_plan
    from harness.sim.runner import TARGETED

    assert "figure-eight" in TARGETED and TARGETED.index("figure-eight") == len(TARGETED) - 1
    plan = probe_plan(3, 2)
    assert plan[:3] == [(None, 0), (None, 1), (None, 2)]
    assert plan[3:] == [(f, s) for f in TARGETED for s in (0, 1)]
    case = Case("commit-old-term", "register", ("figure-8",), seed=1, time_limit=10, quick_time_limit=5)
    run, seen = scripted_probes({"figure-eight@1": ["state-machine-safety"], "vote-flip@0": ["availability"]})
    row = search(case, "register", 3, run, 2, None, family_seeds=2)
    position = 3 + 2 * (len(TARGETED) - 1) + 2
    assert (row.outcome, row.first_failing_family, row.first_failing_seed, row.seeds_to_first_failure) == \
        ("found", "figure-eight", 1, position)
    assert row.cell == f"figure-eight@1 ({position} of {3 + 2 * len(TARGETED)})"
    assert "--nemesis figure-eight" in row.replay
    assert seen[:3] == ["0", "1", "2"] and seen[-1] == "figure-eight@1"  # stopped at the find
    assert "vote-flip@0" in seen  # ran, but failed only by a checker that does not name this bug
    # without family seeds the same row is the old swarm-only search
    run, seen = scripted_probes({"figure-eight@1": ["state-machine-safety"]})
    swarm = search(case, "register", 3, run, 2, None)
    assert (swarm.outcome, swarm.cell, seen) == ("not found (sim)", "not found (sim) in 3", ["0", "1", "2"])


def test_a_family_record_not_found_when_its_probe_runs_is_lost_and_a_failing_family_seed_is_a_false_alarm() -> None:
    recorded = Case("commit-old-term", "register", ("figure-8",), seed=1, time_limit=10, quick_time_limit=5,
                    sim_found_by_family="figure-eight@0")
    run, _ = scripted_probes({})
    lost = search(recorded, "register", 2, run, 2, None, family_seeds=1)
    assert (lost.outcome, lost.ok) == ("LOST", False) and "figure-eight@0" in lost.detail
    assert lost.cell.startswith("LOST") and "was figure-eight@0" in lost.cell
    # a budget that does not run that probe expects nothing from it
    assert search(recorded, "register", 2, run, 2, None).outcome == "not found (sim)"
    run, _ = scripted_probes({"vote-flip@0": ["election-safety"]})
    alarm = search(None, "register", 2, run, 2, None, family_seeds=1)
    assert (alarm.outcome, alarm.ok, alarm.failing_seeds) == ("FALSE ALARM", False, ["vote-flip@0"])
    assert (alarm.first_failing_family, alarm.first_failing_seed) == ("vote-flip", 0)
    assert "--nemesis vote-flip" in alarm.replay and "--seed 0" in alarm.replay


@pytest.mark.timeout(600)
def test_commit_old_term_is_found_by_the_figure_eight_family_alone_for_real() -> None:
    # The swarm's seed 0 does not find commit-old-term (its record is seed 117); the
    # figure-eight family run alone does at its seed 0, as the case table records.
    case = next(c for c in BUG_CASES if c.bug == "commit-old-term")
    assert case.sim_found_by_family == "figure-eight@0"
    rows = run_sim_column(1, cases=[case], only=["commit-old-term"], workers=1, results_dir=None,
                          family_seeds=1, progress=lambda _: None)
    [row] = rows
    assert (row.outcome, row.ok, row.first_failing_family, row.first_failing_seed) == \
        ("found", True, "figure-eight", 0), (row.outcome, row.detail)
    assert "--nemesis figure-eight" in row.replay and "unsafe_bug=commit-old-term" in row.replay
    assert row.span == "0..0, then seeds 0 of each of 5 families alone"
