"""`ukehi-jepsen mutate`: operators, private copies, classification and the stored report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import EXIT_BAD_ARGUMENT, EXIT_VALID, main
from harness.mutation import (BaselineFailed, Config, HarnessRun, apply, find_mutants, run_mutation, select)
from harness.mutation.report import figures
from harness.mutation.runner import MutantResult, StepResult
from harness.mutation.workspace import child_env, git_commit, make_copy, preflight, snapshot

REPO = Path(__file__).resolve().parents[2]


def mutated(source: str, operator: str, line: int | None = None) -> list[str]:
    """Every mutated source that `operator` makes of `source` (optionally only at `line`)."""
    src = textwrap.dedent(source)
    return [apply(src, m) for m in find_mutants(src, "snippet.py", [operator]) if line is None or m.line == line]


# --- operators -------------------------------------------------------------------------

def test_cmp_flip_turns_each_comparison_into_its_boundary_or_negated_twin():
    out = mutated("""
        def f(a, b):
            return a < b
        def g(a, b):
            return a == b and a is not None
    """, "cmp_flip")
    assert "    return a <= b\n" in out[0]
    assert "    return a != b and a is not None\n" in out[1]
    assert "    return a == b and a is None\n" in out[2]
    assert len(out) == 3


def test_chained_comparison_gets_one_mutant_per_operator_with_distinct_ids():
    src = "def f(a, b, c):\n    return a < b <= c\n"
    ms = find_mutants(src, "s.py", ["cmp_flip"])
    assert [apply(src, m).splitlines()[1] for m in ms] == ["    return a <= b <= c", "    return a < b < c"]
    assert len({m.id for m in ms}) == 2


def test_int_literals_move_by_one_and_quorum_sizes_by_one():
    out = mutated("""
        def last(xs):
            return xs[0]
    """, "int_plus1")
    assert out == ["\ndef last(xs):\n    return xs[1]\n"]
    assert mutated("def q(v):\n    return len(v) // 2 + 1\n", "floordiv_plus1") == [
        "def q(v):\n    return (len(v) // 2 + 1) + 1\n"]
    assert mutated("def m(vals, n):\n    return vals[n // 2]\n", "floordiv_minus1") == [
        "def m(vals, n):\n    return vals[(n // 2 - 1)]\n"]
    # Big literals (timeouts, sizes, magic numbers) are left alone.
    assert mutated("def t():\n    return 1000\n", "int_minus1") == []


def test_drop_stmt_replaces_one_statement_and_keeps_the_rest_of_the_line():
    out = mutated("""
        def f(x):
            x.append(1)  # keep me
            return x
    """, "drop_stmt")
    assert out[0] == "\ndef f(x):\n    pass  # keep me\n    return x\n"
    assert out[1] == "\ndef f(x):\n    x.append(1)  # keep me\n    pass\n"
    assert len(out) == 2


def test_swap_if_swaps_branches_and_negates_an_if_without_else():
    with_else = mutated("""
        def f(x):
            if x > 1:
                return 'a'
            else:
                return 'b'
    """, "swap_if")
    assert with_else == ["\ndef f(x):\n    if x > 1:\n        return 'b'\n    else:\n        return 'a'\n"]
    no_else = mutated("def f(x):\n    if x:\n        x.go()\n    return x\n", "swap_if")
    assert no_else == ["def f(x):\n    if not x:\n        x.go()\n    return x\n"]


def test_and_or_and_negate_return():
    assert mutated("def f(a, b):\n    return a and b\n", "and_or") == ["def f(a, b):\n    return a or b\n"]
    assert mutated("def ok(x) -> bool:\n    return x.ready\n", "negate_return") == [
        "def ok(x) -> bool:\n    return not (x.ready)\n"]
    assert mutated("def ok(x):\n    return False\n", "negate_return") == ["def ok(x):\n    return True\n"]
    # An int-returning function's value is not negated.
    assert mutated("def n(x):\n    return x.count\n", "negate_return") == []


def test_nothing_is_mutated_where_a_mutant_would_be_equivalent_or_meaningless():
    src = textwrap.dedent('''
        """Module doc."""
        import os
        __all__ = ["f"]
        MAGIC = 0x57414C32

        def f(x: int = 3) -> int:
            """Doc."""
            log.info("event", n=1)
            assert x < 2
            return f"{x + 1}"
    ''')
    found = {(m.line, m.operator) for m in find_mutants(src, "s.py")}
    # Only the default value 3 (line 7) and the return statement (line 11) are candidates.
    assert {line for line, _ in found} == {7, 11}, found


def test_ids_count_characters_not_bytes_and_every_mutant_compiles():
    src = "def f(a):\n    s = 'é→'; return a < 1\n"
    ms = find_mutants(src, "p/q.py")
    flip = next(m for m in ms if m.operator == "cmp_flip")
    assert flip.id == f"p/q.py:2:{src.splitlines()[1].index('a < 1')}:cmp_flip"
    assert "return a <= 1" in apply(src, flip)
    for m in ms:
        compile(apply(src, m), "q.py", "exec")


def test_selection_is_seeded_and_ordered():
    src = (REPO / "ukehi" / "raft" / "quorum.py").read_text(encoding="utf-8")
    ms = find_mutants(src, "ukehi/raft/quorum.py")
    a, b = select(ms, sample=5, seed=7), select(ms, sample=5, seed=7)
    assert [m.id for m in a] == [m.id for m in b] and len(a) == 5
    assert [m.id for m in a] != [m.id for m in select(ms, sample=5, seed=8)]
    assert [m.id for m in a] == [m.id for m in ms if m in a]  # id order, not draw order
    assert [m.id for m in select(ms, ids=[ms[3].id])] == [ms[3].id]
    with pytest.raises(ValueError, match="no such mutant"):
        select(ms, ids=["nope.py:1:0:cmp_flip"])


# --- private copies ---------------------------------------------------------------------

def _digest(root: Path, rel: str) -> tuple[str, int]:
    path = root / rel
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_a_mutant_applied_in_a_copy_leaves_the_project_untouched_and_is_what_gets_imported(tmp_path):
    rel = "ukehi/raft/quorum.py"
    before = _digest(REPO, rel)
    pristine = tmp_path / "pristine"
    snapshot(REPO, pristine, "HEAD" if git_commit(REPO) else None)
    src = (pristine / rel).read_text(encoding="utf-8")
    mutant = next(m for m in find_mutants(src, rel, ["floordiv_plus1"]) if "n // 2" in m.original)
    # the snapshot is byte-compiled once (PYTHONDONTWRITEBYTECODE holds in every child)
    assert list((pristine / "ukehi/raft/__pycache__").glob("quorum.*.pyc"))
    copy = make_copy(pristine, tmp_path / "copy", mutant)
    # The unmutated module's bytecode is gone from the copy (a mutant of the same size written
    # in the same second would pass Python's mtime-and-size check); the others' stays.
    assert not list((copy / "ukehi/raft/__pycache__").glob("quorum.*.pyc"))
    assert list((copy / "ukehi/raft/__pycache__").glob("core.*.pyc"))

    assert _digest(REPO, rel) == before
    assert (copy / rel).read_text(encoding="utf-8") != src
    # Run from outside both trees: only PYTHONPATH can point the import at the copy.
    probe = ("import ukehi.raft.quorum as q; print(q.__file__); "
             "print(q.majority_index(['a', 'b', 'c'], {'a': 3, 'b': 2, 'c': 1}.get))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=child_env(copy),
                         capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]).resolve() == (copy / rel).resolve()
    assert out[1] == "1"  # the unmutated majority index of (3, 2, 1) is 2
    checks = preflight(pristine, tmp_path)
    assert any("fatal mutant" in c for c in checks)


# --- classification end to end, on a tiny project with stand-in commands --------------

CALC = '''\
def majority(n: int) -> int:
    return n // 2 + 1


def countdown(n):
    while n > 0:
        n -= 1
    return n


def unused(x):
    return x + 1


def label(x):
    if x:
        return "yes"
    return "no"
'''
UNIT = '''\
from ukehi.calc import countdown, majority
assert majority(3) == 2 and majority(4) == 3
assert countdown(3) == 0
'''
HARNESS = '''\
import sys
from ukehi.calc import label, majority, unused
if majority(5) != 3:
    print("ukehi-jepsen: error: the cluster did not come up: no leader after 30 s")
    sys.exit(255)    # the harness could not run: crashed, not a kill
if unused(1) != 2:
    sys.exit(1)      # invalid: a kill
if label(1) != "yes":
    sys.exit(2)      # unknown: not a kill
sys.exit(0)
'''


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "ukehi").mkdir(parents=True)
    (root / "ukehi" / "__init__.py").write_text("")
    (root / "ukehi" / "cli.py").write_text("print('usage: ukehi')\n")
    (root / "ukehi" / "calc.py").write_text(CALC)
    (root / "unit_standin.py").write_text(UNIT)
    (root / "harness_standin.py").write_text(HARNESS)
    return root


def test_mini_run_classifies_kills_survivors_timeouts_and_unknowns(tiny_project, tmp_path):
    ids = {
        "floordiv": "ukehi/calc.py:2:11:floordiv_plus1",  # unit tests kill, the stand-in harness crashes
        "loop": "ukehi/calc.py:7:8:drop_stmt",            # infinite loop: unit timeout = killed
        "unused": "ukehi/calc.py:12:15:int_plus1",        # unit tests miss, the harness kills
        "label": "ukehi/calc.py:16:4:swap_if",            # harness exits 2: unknown, not a kill
        "nobody": "ukehi/calc.py:18:4:drop_stmt",         # `return "no"` dropped: nobody checks it
    }
    before = {p: _digest(tiny_project, p) for p in ("ukehi/calc.py", "unit_standin.py")}
    cfg = Config(unit_command=[sys.executable, "unit_standin.py"], harness_command=[sys.executable, "harness_standin.py"],
                 harness_runs=[HarnessRun("register", "none", 1, 0)], unit_timeout=8, jobs=2)
    lines: list[str] = []
    outcome = run_mutation(root=tiny_project, results_dir=str(tmp_path / "results"), cfg=cfg,
                           targets=["ukehi/calc.py"], ids=list(ids.values()), rev=None, say=lines.append)
    by_id = {r.mutant.id: r for r in outcome.results}
    assert set(by_id) == set(ids.values())
    assert (by_id[ids["floordiv"]].unit.status, by_id[ids["floordiv"]].harness.status) == ("killed", "crashed")
    assert "did not come up" in by_id[ids["floordiv"]].harness.detail
    assert by_id[ids["loop"]].unit.status == "killed" and "timeout" in by_id[ids["loop"]].unit.detail
    assert (by_id[ids["unused"]].unit.status, by_id[ids["unused"]].harness.status) == ("survived", "killed")
    assert (by_id[ids["label"]].unit.status, by_id[ids["label"]].harness.status) == ("survived", "unknown")
    assert not by_id[ids["nobody"]].killed and not by_id[ids["label"]].killed

    figs = outcome.figures
    assert figs["mutants"] == 5 and figs["unit_killed"] == 2 and figs["harness_killed"] == 1
    assert figs["harness_unknown"] == 1 and figs["survived"] == 2 and figs["killed_by_harness_only"] == 1
    assert figs["harness_score"] == 0.0  # of the 2 the unit tests kill, the harness kills none
    assert figs["harness_crashed"] == 1 and figs["harness_noticed"] == 0.5
    # The shared tree (here the tiny project) is untouched.
    assert {p: _digest(tiny_project, p) for p in before} == before

    stored = json.loads((outcome.report_dir / "mutation.json").read_text())
    assert stored["figures"] == figs and stored["baseline"]["unit"]["status"] == "survived"
    md = (outcome.report_dir / "mutation.md").read_text()
    survivors = md.split("## Survivors")[1].split("## ")[0]
    assert ids["nobody"] in survivors and ids["label"] in survivors and ids["floordiv"] not in survivors
    assert len((outcome.report_dir / "progress.jsonl").read_text().splitlines()) == 5
    assert (outcome.report_dir.parent / "latest").resolve() == outcome.report_dir.resolve()
    assert any("preflight" in line for line in lines)


def test_a_failing_baseline_stops_the_run(tiny_project, tmp_path):
    cfg = Config(unit_command=[sys.executable, "-c", "raise SystemExit(1)"], harness=False)
    with pytest.raises(BaselineFailed, match="unit tests fail on the unmutated code"):
        run_mutation(root=tiny_project, results_dir=str(tmp_path / "r"), cfg=cfg, targets=["ukehi/calc.py"],
                     sample=1, rev=None, say=lambda _: None)


def test_score_counts_only_mutants_both_judged():
    def result(unit: str, harness: str) -> MutantResult:
        m = find_mutants("def f(a):\n    return a < 1\n", "ukehi/raft/x.py", ["cmp_flip"])[0]
        return MutantResult(m, StepResult(unit), StepResult(harness))
    rs = [result("killed", "killed"), result("killed", "survived"), result("killed", "crashed"),
          result("survived", "killed"), result("killed", "skipped"), result("survived", "survived")]
    figs = figures(rs)
    assert figs["unit_killed"] == 4 and figs["killed_by_both"] == 1
    assert figs["harness_score"] == round(1 / 3, 4) and figs["harness_noticed"] == round(2 / 3, 4)
    assert figs["harness_crashed"] == 1 and figs["survived"] == 1 and figs["killed_by_harness_only"] == 1


# --- the command ------------------------------------------------------------------------

def test_mutate_lists_mutants_and_rejects_contradictory_options(capsys):
    assert main(["mutate", "--list", "--paths", "ukehi/raft/quorum.py", "--sample", "3", "--seed", "1"]) == EXIT_VALID
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("3 of ") and all(l.startswith("ukehi/raft/quorum.py:") for l in out[:3])
    assert main(["mutate", "--unit-only", "--harness-only"]) == EXIT_BAD_ARGUMENT
    assert main(["mutate", "--list", "--paths", "no/such/dir"]) == EXIT_BAD_ARGUMENT
    assert main(["mutate", "--harness-run", "register/kill"]) == EXIT_BAD_ARGUMENT


def test_harness_runs_parse_into_the_run_command():
    run = HarnessRun.parse("register/partition,kill/15/1")
    argv = run.argv("py", Path("/r"))
    assert argv[:4] == ["py", "-m", "harness.cli", "run"]
    assert argv[argv.index("--nemesis") + 1] == "partition,kill" and argv[argv.index("--seed") + 1] == "1"
    assert "--nemesis" not in HarnessRun.parse("register/default/20/2").argv("py", Path("/r"))
    with pytest.raises(ValueError, match="SEED"):
        HarnessRun.parse("register/kill/15/x")
    snap = HarnessRun.parse("register/kill/15/4/snapshot_threshold=100,max_inflight=1")
    assert snap.label == "register/kill/15/4/snapshot_threshold=100,max_inflight=1"
    assert snap.argv("py", Path("/r"))[-4:] == ["--node-option", "snapshot_threshold=100",
                                                "--node-option", "max_inflight=1"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        HarnessRun.parse("register/kill/15/4/snapshots")


@pytest.mark.parametrize("clean_seconds,status", [(0.2, "hung"), (0.5, "timeout"), (None, "timeout")])
def test_a_real_run_over_its_limit_is_hung_only_with_10x_margin_over_its_clean_run(tmp_path, monkeypatch,
                                                                                    clean_seconds, status):
    # Same rule as a sim seed: limit (1 s run + 2 s overhead here) >= 10x the clean run of that run.
    from harness.mutation import runner

    monkeypatch.setattr(runner, "HARNESS_OVERHEAD_S", 2.0)
    spec = HarnessRun("register", "none", 1, 0)
    cfg = Config(harness_runs=[spec], harness_command=[sys.executable, "-c", "import time; time.sleep(30)"],
                 run_clean_seconds={} if clean_seconds is None else {spec.label: clean_seconds})
    (tmp_path / "logs").mkdir()
    step = runner.run_harness(tmp_path, cfg, tmp_path / "logs")
    assert step.status == status and step.counts_as_kill == (status == "hung")
    assert "outlived its 3 s limit" in step.runs[0]["error"]
    assert ("a kill" if status == "hung" else "not a kill") in step.runs[0]["error"]
