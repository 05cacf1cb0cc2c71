"""`ukehi-jepsen regress`: the judging logic on crafted verdicts, and the quick suite for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.net import netns_support
from harness.regress import (BUG_CASES, CORRECT, NOT_REACHED, SUITE, Case, Row, escape_notes, format_table, judge,
                             known_findings, summarize, targeted_reached, violation_indexes)
from ukehi.bugs import KNOWN_BUGS

CLI = [sys.executable, "-m", "harness.cli"]


def _history(path: Path, events: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


EVENTS = [
    {"index": 0, "time": 1_000_000_000, "process": 0, "type": "invoke", "f": "write", "key": 0, "value": 1},
    {"index": 1, "time": 1_500_000_000, "process": 0, "type": "ok", "f": "write", "key": 0, "value": 1},
    {"index": 2, "time": 4_000_000_000, "process": 1, "type": "invoke", "f": "read", "key": 0},
    {"index": 3, "time": 4_200_000_000, "process": 1, "type": "ok", "f": "read", "key": 0, "value": 7},
]
LINEAR_FAIL = {"valid": False, "failures": [{"blocked_index": 2, "candidates": [{"index": 2}]}]}
CASE = Case("stale-read", "register", ("partition",), seed=1, time_limit=10, quick_time_limit=5)


def test_every_planted_bug_has_a_case_and_the_suite_has_correct_runs() -> None:
    assert sorted(c.bug for c in BUG_CASES) == sorted(KNOWN_BUGS)
    assert sum(1 for c in SUITE if c.bug is None) >= 3
    assert len({(c.bug, c.seed) for c in SUITE}) == len(SUITE)  # fixed, distinct settings


def test_a_bug_caught_by_the_expected_checker_is_detected_at_the_blocked_ops_completion(tmp_path: Path) -> None:
    run = _history(tmp_path, EVENTS)
    verdict = {"valid": False, "checkers": {"linearizable": LINEAR_FAIL, "stats": {"valid": True}}}
    outcome, ok, caught, seconds, _ = judge(CASE, verdict, run)
    assert (outcome, ok, caught, seconds) == ("detected", True, ["linearizable"], 4.2)


def test_a_bug_caught_only_by_an_unrelated_checker_or_not_at_all_escaped(tmp_path: Path) -> None:
    run = _history(tmp_path, EVENTS)
    other = {"valid": False, "checkers": {"stats": {"valid": False}, "linearizable": {"valid": True}}}
    assert judge(CASE, other, run)[:2] == ("escaped", False)
    assert judge(CASE, {"valid": True, "checkers": {}}, run)[:2] == ("escaped", False)
    assert judge(CASE, {"valid": "unknown", "checkers": {}}, run)[:2] == ("escaped", False)


def test_a_bug_caught_by_a_white_box_checker_is_detected(tmp_path: Path) -> None:
    # forget-vote: two leaders in one term seen in the node logs, before any client saw harm.
    run = _history(tmp_path, EVENTS)
    verdict = {"valid": False, "checkers": {"linearizable": {"valid": True},
                                            "election-safety": {"valid": False, "terms": [2]}}}
    outcome, ok, caught, _, _ = judge(CASE, verdict, run)
    assert (outcome, ok, caught) == ("detected", True, ["election-safety"])


def test_the_correct_build_must_be_valid(tmp_path: Path) -> None:
    run = _history(tmp_path, EVENTS)
    correct = Case(None, "register", ("kill",), seed=1, time_limit=10, quick_time_limit=5)
    assert judge(correct, {"valid": True, "checkers": {}}, run)[:2] == ("valid", True)
    alarm = judge(correct, {"valid": False, "checkers": {"linearizable": LINEAR_FAIL}}, run)
    assert alarm[:2] == ("FALSE ALARM", False) and alarm[3] == 4.2
    assert judge(correct, {"valid": "unknown", "checkers": {}}, run)[:2] == ("unknown", False)


def test_violation_indexes_of_fencing_and_policy_results() -> None:
    fencing = {"valid": False, "stale_writes": [{"index": 9}], "token_order": [], "duplicate_tokens": [],
               "linearizability": {"valid": False, "failures": [{"blocked_index": 12}]}}
    assert sorted(violation_indexes("fencing", fencing)) == [9, 12]
    policy = {"valid": False, "nodes": {"n1": {"faults": [{"op": 5, "valid": True}, {"op": 8, "valid": False}]}}}
    assert violation_indexes("corruption-policy", policy) == [8]


def test_summary_and_table() -> None:
    rows = [Row(CORRECT, "register", "kill", 1, 10, "valid", True, [], None, "r0", 1.0),
            Row("stale-read", "register", "partition", 2, 10, "detected", True, ["linearizable"], 3.0, "r1", 1.0),
            Row("forget-vote", "register", "kill", 3, 10, "escaped", False, [], None, "r2", 1.0)]
    summary = summarize(rows)
    assert summary["ok"] is False and summary["escaped"] == ["forget-vote"] and summary["detected"] == 1
    assert summary["median_first_violation_s"] == 3.0 and summary["false_alarms"] == 0
    table = format_table(rows).splitlines()
    assert table[0].startswith("| bug | workload | nemeses |") and len(table) == 2 + len(rows)
    assert "| stale-read | register | partition | 2 | 10 | detected | 3.0 | linearizable |" in table


def test_a_missed_bug_is_run_again_with_the_next_seed_and_the_table_says_which_run_caught_it(
        tmp_path: Path) -> None:
    from types import SimpleNamespace

    from harness.regress import ATTEMPT_SEED_STEP, escape_notes, run_suite

    bug = Case("stale-read", "register", ("partition",), seed=11, time_limit=10, quick_time_limit=5)
    never = Case("ack-before-commit", "register", ("partition",), seed=12, time_limit=10, quick_time_limit=5)
    correct = Case(None, "register", ("kill",), seed=1, time_limit=10, quick_time_limit=5)
    seeds: list[tuple[str, int]] = []

    def runner(spec):  # stale-read is caught from its second seed on, ack-before-commit never
        seeds.append((spec.name, spec.seed))
        run = _history(tmp_path / f"{spec.name}-{spec.seed}", EVENTS)
        caught = spec.name == "regress-stale-read" and spec.seed != 11
        verdict = ({"valid": False, "checkers": {"linearizable": LINEAR_FAIL}} if caught
                   else {"valid": True, "checkers": {}})
        return SimpleNamespace(verdict=verdict, run=SimpleNamespace(path=run))

    rows, summary, _ = run_suite(str(tmp_path / "results"), quick=True, cases=(correct, bug, never),
                                 runner=runner, attempts=3, progress=lambda line: None)
    step = ATTEMPT_SEED_STEP
    assert seeds == [("regress-correct", 1), ("regress-stale-read", 11), ("regress-stale-read", 11 + step),
                     ("regress-ack-before-commit", 12), ("regress-ack-before-commit", 12 + step),
                     ("regress-ack-before-commit", 12 + 2 * step)]
    by_bug = {r.bug: r for r in rows}
    assert (by_bug["stale-read"].outcome, by_bug["stale-read"].runs, by_bug["stale-read"].seed) == (
        "detected", 2, 11 + step)
    assert by_bug["stale-read"].result == "detected (run 2)" and len(by_bug["stale-read"].earlier) == 1
    assert (by_bug["ack-before-commit"].outcome, by_bug["ack-before-commit"].runs) == ("escaped", 3)
    assert by_bug["ack-before-commit"].result == "escaped (3 runs)"
    assert summary["ok"] is False and summary["escaped"] == ["ack-before-commit"]
    assert (summary["detected"], summary["detected_first_run"], summary["bug_runs"]) == (1, 0, 5)
    notes = escape_notes(rows)
    assert any(n.startswith("stale-read detected on run 2 of 2; before it: run 1 (seed 11) escaped") for n in notes)
    assert any(n.startswith("ack-before-commit escaped in all 3 runs") for n in notes)
    assert "| stale-read | register | partition | 1011 | 5 | detected (run 2) |" in format_table(rows)


def test_unknown_bug_name_is_a_bad_argument(tmp_path: Path) -> None:
    done = subprocess.run(CLI + ["regress", "--only", "no-such-bug", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 254 and "choose from correct" in done.stderr
    done = subprocess.run(CLI + ["regress", "--attempts", "0", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 254 and "--attempts 0: give at least 1" in done.stderr


_ok, _why = netns_support()



def _run_path(cwd: Path, run_dir: str) -> Path:
    return Path(run_dir) if Path(run_dir).is_absolute() else cwd / run_dir


def test_a_targeted_schedule_that_never_reached_its_interleaving_is_told_apart(tmp_path: Path) -> None:
    def run_with(*values: dict) -> Path:
        run = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        ops = [{"process": 0, "type": "ok", "f": "read"}]
        for v in values:
            ops += [{"process": "nemesis", "type": "invoke", "f": "double-vote", "value": {}},
                    {"process": "nemesis", "type": "info", "f": "double-vote", "value": v}]
        (run / "history.jsonl").write_text("\n".join(json.dumps({"index": i, "time": i * 1000, **o})
                                                     for i, o in enumerate(ops)) + "\n")
        return run

    unreached = run_with({"skipped": "no leader"}, {"missed": "x"})
    reached = run_with({"missed": "x"}, {"voted_term": 2, "killed_pid": 7})
    assert targeted_reached(unreached) is False
    assert targeted_reached(reached) is True
    assert targeted_reached(run_with()) is True  # no targeted nemesis at all: nothing to excuse
    assert targeted_reached(tmp_path / "no-such-run") is True  # no history: nothing to excuse
    # judge() tells the two apart: a bug whose schedule never reached it is not "escaped".
    case = next(c for c in BUG_CASES if "double-vote" in c.nemeses)
    word, ok, _, _, detail = judge(case, {"valid": True, "checkers": {}}, unreached)
    assert (word, ok) == (NOT_REACHED, False) and "never exercised" in detail
    assert judge(case, {"valid": True, "checkers": {}}, reached)[:2] == ("escaped", False)
    row = Row(case.bug, case.workload, "double-vote", 1, 10.0, word, ok, [], None, str(unreached), 1.0, detail)
    assert summarize([row])["not_reached"] == [case.bug] and summarize([row])["escaped"] == [case.bug]
    assert escape_notes([row])[0].startswith(f"{case.bug} was not reached: ")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not (os.geteuid() == 0 and _ok), reason=f"needs root and `ip netns`: {_why}")
@pytest.mark.timeout(1600)  # ~19 short runs: past the suite's 600 s default on a busy machine
def test_the_quick_suite_detects_the_planted_bugs_without_false_alarms(tmp_path: Path) -> None:
    # As a user runs it: from some directory (with a space in its name), with the default
    # relative `--results-dir results`. Absolute temporary paths once hid that node data
    # landed outside the run, so the disk and LazyFS bugs escaped (issue 12).
    cwd = tmp_path / "a dir with spaces"
    cwd.mkdir()
    # --no-sim: the simulated column has its own test (tests/regress/test_regress_sim.py).
    # The default --attempts 3: a real cluster reaches a bug's interleaving by chance, so a
    # bug is re-run with the next seed until caught; each bug's one-shot escape rate (a few
    # per cent) made a single-run suite fail CI on a different bug each time.
    done = subprocess.run(CLI + ["regress", "--quick", "--no-sim"], cwd=cwd,
                          capture_output=True, text=True, timeout=1500)
    store = cwd / "results"
    stored = sorted(store.glob("regress/*/regress.json"))
    assert stored, f"no table stored: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    table = json.loads(stored[-1].read_text())
    outcomes = {}
    for row in table["rows"]:
        outcomes.setdefault(row["bug"], []).append(row["outcome"])
    correct = outcomes.pop(CORRECT, [])
    assert len(correct) >= 3 and all(o == "valid" for o in correct), correct
    assert set(outcomes) == set(KNOWN_BUGS)
    # Every bug must be detected, except those with a documented finding (harness/regress.py:
    # schedules that do not reach the bug in a short run); those are reported, never hidden.
    findings = known_findings()
    # A targeted schedule (double-vote, figure-8, stale-append) that never reached its
    # interleaving in a short run (every op 'missed' or 'skipped', recorded in the history)
    # is no evidence either way: the bug was never exercised. An escape after the schedule
    # did reach it fails the test.
    unreached = {row["bug"] for row in table["rows"] if row["outcome"] == "not reached"}
    assert sorted(unreached) == table["summary"]["not_reached"]
    missed = {b: o for b, o in outcomes.items() if o != ["detected"] and b not in findings and b not in unreached}
    assert missed == {}, done.stdout[-4000:]
    escaped = sorted(b for b, o in outcomes.items() if o != ["detected"])
    assert table["summary"]["escaped"] == escaped
    for bug in escaped:
        if bug in findings:
            assert f"{bug} escaped: known finding:" in done.stdout or f"{bug} was not reached" in done.stdout
    # Each node's log and WAL sit in its run's directory, where the faults and checkers look.
    for row in table["rows"]:
        run = _run_path(cwd, row["run_dir"])
        assert run.is_relative_to(store), row
        spec = json.loads((run / "test.json").read_text())
        sharded = "shards" in (spec.get("node_options") or {})
        wals = 0
        for node in spec["nodes"]:
            home = run / "nodes" / node
            assert (home / "node.log").stat().st_size > 0, home
            data = home / ("data.lazyfs-backing" if any(n.startswith("lazyfs") for n in spec["nemeses"]) else "data")
            segments = list(data.glob("group-*/wal/wal-*.seg"))
            wals += bool(segments)
            if list(data.glob("group-*")) or not sharded:
                assert segments, f"no WAL under {data}"
            # else: a sharded node that hosts no Raft group: a spare the rebalance nemesis
            # started with --join and never added (its data dir holds the map it learned), or
            # a node it removed and restarted fresh just before the run ended (empty).
            assert not list(home.glob("**/results")), f"node data nested under {home}"
        assert wals, f"no node of {run} has a WAL there"  # the data landed in the run
    # The exit code is strict: any escape (known or not) fails the suite.
    assert done.returncode == (1 if escaped else 0), done.stdout[-4000:] + done.stderr[-2000:]
