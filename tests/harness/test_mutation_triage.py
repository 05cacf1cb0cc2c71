"""`ukehi-jepsen mutate`'s triage registry (matching that survives line moves, stale and
ambiguous entries, the score without equivalents, the report) and the family seeds of the
sim budget (``NAME@RANGE``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.cli import EXIT_BAD_ARGUMENT, EXIT_INVALID, EXIT_VALID, main
from harness.mutation import Config, find_mutants, run_mutation
from harness.mutation.report import figures
from harness.mutation.runner import MutantResult, StepResult
from harness.mutation.simbudget import DEFAULT_SIM_BUDGET, DISK_FAMILIES, TARGETED_FAMILIES, SimBudget, SimSeed
from harness.mutation.triage import DEFAULT_TRIAGE_PATH, Registry

NAMES = ("figure-eight", "stale-leader", "vote-flip", "partition", "kill")

# --- the SEEDS grammar with family parts ------------------------------------------------------


def test_family_parts_parse_into_seeds_run_with_their_nemesis_alone():
    b = SimBudget.parse("0-2,figure-eight@0-1,stale-leader@4,partition+kill@2:40", nemeses=NAMES)
    assert b.seeds == (0, 1, 2) and b.seed_timeout == 40.0
    assert [s.label for s in b.families] == ["figure-eight@0", "figure-eight@1", "stale-leader@4", "partition+kill@2"]
    assert [s.label for s in b.runs] == ["0", "1", "2", "figure-eight@0", "figure-eight@1", "stale-leader@4",
                                         "partition+kill@2"]
    assert b.argv("py", SimSeed(1, "figure-eight"))[-2:] == ["--nemesis", "figure-eight"]
    assert b.argv("py", SimSeed(4, "partition,kill"))[-2:] == ["--nemesis", "partition,kill"]
    assert "--nemesis" not in b.argv("py", SimSeed(3)) and "--nemesis" not in b.argv("py", 3)
    # Families only, no swarm seed; a lone K after NAME@ is a seed, not a count.
    only = SimBudget.parse("vote-flip@3", nemeses=NAMES)
    assert only.seeds == () and only.families == (SimSeed(3, "vote-flip"),)
    for text in ("0-2,figure-eight@0-1,stale-leader@4,partition+kill@2:40", "vote-flip@3", "5,vote-flip@0-1",
                 "figure-eight@0,stale-leader@0,figure-eight@1", "7"):
        assert SimBudget.parse(SimBudget.parse(text, nemeses=NAMES).label, nemeses=NAMES) == \
            SimBudget.parse(text, nemeses=NAMES)
    assert SimBudget.parse("figure-eight@0,figure-eight@0-1", nemeses=NAMES).label == "figure-eight@0-1"


@pytest.mark.parametrize("text", ["figure-eigth@0-2", "@1", "figure-eight@", "figure-eight@2-1", "figure-eight@x",
                                  "0-3,figure-eight@-1", "partition+nope@0"])
def test_a_bad_family_part_says_what_to_write(text):
    with pytest.raises(ValueError, match=r"SEEDS\[:SECONDS\].*NAME@RANGE") as err:
        SimBudget.parse(text, nemeses=NAMES)
    if "eigth" in text or "nope" in text:
        assert "choose from figure-eight, stale-leader" in str(err.value)


def test_the_default_budget_is_the_swarm_plus_each_targeted_family_alone():
    # The names are the simulator's own (parsing checks them against harness.sim.runner.NEMESES).
    assert SimBudget.parse(DEFAULT_SIM_BUDGET.label) == DEFAULT_SIM_BUDGET
    assert DEFAULT_SIM_BUDGET.seeds == tuple(range(16))
    assert {s.nemesis for s in DEFAULT_SIM_BUDGET.families} == set(TARGETED_FAMILIES) | set(DISK_FAMILIES)
    # disk damage alone: a repair at restart meets the WAL recovery code (durable-cut)
    assert SimSeed(1, "damage") in DEFAULT_SIM_BUDGET.families
    # figure-eight alone kills commit-old-term (core.py `_maybe_commit`) at seed 0
    assert SimSeed(0, "figure-eight") in DEFAULT_SIM_BUDGET.families
    assert main(["mutate", "--harness-sim", "0-3,figure-eigth@0", "--list"]) == EXIT_BAD_ARGUMENT


# --- the registry ------------------------------------------------------------------------------

SRC = '''\
def first(a):
    if a:
        return True
    return a < 1


def second(a):
    if a:
        return True
    return True
'''


def _write(root: Path, text: str) -> None:
    (root / "ukehi").mkdir(parents=True, exist_ok=True)
    (root / "ukehi" / "x.py").write_text(text)


def _registry(*entries: dict) -> Registry:
    base = {"file": "ukehi/x.py", "category": "equivalent", "reason": "r"}
    return Registry.from_data({"mutant": [{**base, **e} for e in entries]})


def test_an_entry_follows_its_mutant_when_the_line_moves(tmp_path):
    _write(tmp_path, SRC)
    reg = _registry({"operator": "cmp_flip", "text": "return a < 1"})
    before = reg.match(find_mutants(SRC, "ukehi/x.py"), tmp_path)
    assert list(before.by_id) == ["ukehi/x.py:4:11:cmp_flip"] and not before.problems()
    moved = "import os\n\n\n" + SRC
    _write(tmp_path, moved)
    after = reg.match(find_mutants(moved, "ukehi/x.py"), tmp_path)
    assert list(after.by_id) == ["ukehi/x.py:7:11:cmp_flip"] and not after.problems()


def test_repeated_text_is_ambiguous_until_function_and_occurrence_pin_it(tmp_path):
    _write(tmp_path, SRC)
    mutants = find_mutants(SRC, "ukehi/x.py")
    loose = _registry({"operator": "negate_return", "text": "return True"}).match(mutants, tmp_path)
    assert len(loose.ambiguous) == 1 and len(loose.ambiguous[0][1]) == 3
    assert "ambiguous" in loose.problems()[0]
    in_second = _registry({"operator": "negate_return", "text": "return True", "function": "second"})
    assert len(in_second.match(mutants, tmp_path).ambiguous[0][1]) == 2
    pinned = _registry({"operator": "negate_return", "text": "return True", "function": "second", "occurrence": 2})
    m = pinned.match(mutants, tmp_path)
    assert list(m.by_id) == ["ukehi/x.py:10:11:negate_return"] and not m.problems()
    first = _registry({"operator": "negate_return", "text": "return True", "function": "first"}).match(mutants, tmp_path)
    assert list(first.by_id) == ["ukehi/x.py:3:15:negate_return"]


def test_an_entry_whose_text_changed_is_stale_but_only_for_files_looked_at(tmp_path):
    _write(tmp_path, SRC)
    mutants = find_mutants(SRC, "ukehi/x.py")
    reg = _registry({"operator": "cmp_flip", "text": "return a <= 1"},
                    {"operator": "cmp_flip", "text": "return a < 1", "file": "ukehi/other.py"})
    m = reg.match(mutants, tmp_path)
    assert [e.text for e in m.stale] == ["return a <= 1"] and not m.by_id
    assert "stale triage entry" in m.problems()[0]
    assert len(reg.match(mutants, tmp_path, files=["ukehi/x.py", "ukehi/other.py"]).stale) == 2
    assert not reg.match(mutants, tmp_path, files=[]).hits


@pytest.mark.parametrize("entry, message", [
    ({"category": "maybe"}, "choose from equivalent, performance, limit"),
    ({"operator": "flip"}, "choose from cmp_flip"),
    ({"colour": "red"}, "unknown: colour"),
    ({"reason": "two\nlines"}, "one line"),
    ({"occurrence": 0}, "occurrence is a number from 1"),
])
def test_a_bad_registry_entry_is_refused_with_what_to_write(entry, message):
    base = {"file": "ukehi/x.py", "operator": "cmp_flip", "text": "t", "category": "limit", "reason": "r"}
    with pytest.raises(ValueError, match=message):
        Registry.from_data({"mutant": [{**base, **entry}]})
    with pytest.raises(ValueError, match="missing: reason"):
        Registry.from_data({"mutant": [{k: v for k, v in base.items() if k != "reason"}]})


def test_the_packaged_registry_has_no_stale_or_ambiguous_entry_at_head(capsys):
    # The registry cannot rot silently: a code change that moves an entry's text fails here.
    rc = main(["mutate", "--check-triage", "--paths", "ukehi/raft,ukehi/storage/wal.py,ukehi/kv.py"])
    out = capsys.readouterr().out
    assert rc == EXIT_VALID, out
    assert "0 stale, 0 ambiguous" in out and "STALE" not in out and "AMBIGUOUS" not in out
    matched = [line.split()[0] for line in out.splitlines() if line.startswith("ukehi/")]
    assert len(matched) == len(set(matched)) == len(Registry.load(DEFAULT_TRIAGE_PATH).entries)


def test_check_triage_exits_1_on_a_stale_entry(tmp_path, capsys):
    reg = tmp_path / "t.toml"
    reg.write_text('[[mutant]]\nfile = "ukehi/kv.py"\noperator = "drop_stmt"\ntext = "no such line"\n'
                   'category = "limit"\nreason = "r"\n')
    assert main(["mutate", "--check-triage", "--paths", "ukehi/kv.py", "--triage", str(reg)]) == EXIT_INVALID
    out = capsys.readouterr().out
    assert "STALE" in out and "1 stale" in out
    reg.write_text("[[mutant]]\nfile = 3\n")
    assert main(["mutate", "--check-triage", "--paths", "ukehi/kv.py", "--triage", str(reg)]) == EXIT_BAD_ARGUMENT


# --- the score without equivalents -------------------------------------------------------------


def test_the_second_score_leaves_out_only_mutants_marked_equivalent(tmp_path):
    _write(tmp_path, SRC)
    mutants = {m.id: m for m in find_mutants(SRC, "ukehi/x.py")}
    eq, perf, lim, plain = (mutants["ukehi/x.py:4:11:cmp_flip"], mutants["ukehi/x.py:3:15:negate_return"],
                            mutants["ukehi/x.py:10:11:negate_return"], mutants["ukehi/x.py:2:4:swap_if"])
    reg = _registry({"operator": "cmp_flip", "text": "return a < 1"},
                    {"operator": "negate_return", "text": "return True", "function": "first", "category": "performance"},
                    {"operator": "negate_return", "text": "return True", "function": "second", "occurrence": 2,
                     "category": "limit"})
    triage = reg.match(mutants.values(), tmp_path).by_id

    def r(m, harness: str) -> MutantResult:
        return MutantResult(m, StepResult("killed"), StepResult(harness), StepResult("skipped"))

    rs = [r(eq, "survived"), r(perf, "survived"), r(lim, "survived"), r(plain, "killed")]
    f = figures(rs, triage=triage)
    assert f["harness_score"] == 0.25                                 # the score: 1 of 4
    assert f["harness_score_without_equivalent"] == round(1 / 3, 4)   # performance and limit stay in
    assert (f["killed_without_equivalent"], f["judged_without_equivalent"], f["equivalent_left_out"]) == (1, 3, 1)
    assert f["missed_by_harness_triage"] == {"equivalent": 1, "performance": 1, "limit": 1, "untriaged": 0}
    assert f["triaged_but_killed"] == []
    # Without a registry both figures agree; a triaged mutant the harness kills is flagged.
    assert figures(rs)["harness_score_without_equivalent"] == 0.25
    assert figures([r(eq, "killed")], triage=triage)["triaged_but_killed"] == [eq.id]


# --- end to end: a tiny project, a stand-in sim that knows --nemesis ----------------------------

CALC = '''\
def votes_needed(n):
    return n // 2 + 1


def lookup(d, k):
    if k in d:
        return d[k]
    return None


def label(n):
    if n > 1:
        return "many"
    return "one"
'''
UNIT = "from ukehi.calc import votes_needed\nassert votes_needed(3) == 2\n"
# Stands in for `python -m harness.cli sim --seed K [--nemesis NAME]`: the quorum mutant is
# seen only by the figure-eight family alone (as the swarm misses commit-old-term).
SIM = '''\
import sys
from ukehi.calc import votes_needed
seed, nemesis = int(sys.argv[1]), sys.argv[2]
with open("seeds-run.txt", "a") as f:
    f.write(f"{nemesis or 'swarm'}@{seed}\\n")
if nemesis == "figure-eight" and seed == 1 and votes_needed(3) != 2:
    print(f"seed {seed}: INVALID  digest x")
    print("  failed checkers: state-machine-safety")
    sys.exit(1)
print(f"seed {seed}: VALID  digest x")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "ukehi").mkdir(parents=True)
    (root / "ukehi" / "__init__.py").write_text("")
    (root / "ukehi" / "cli.py").write_text("print('usage: ukehi')\n")
    (root / "ukehi" / "calc.py").write_text(CALC)
    (root / "unit_standin.py").write_text(UNIT)
    (root / "sim_standin.py").write_text(SIM)
    return root


def _cfg(budget: str) -> Config:
    return Config(unit_command=[sys.executable, "unit_standin.py"], harness_runs=[],
                  sim=SimBudget.parse(budget, nemeses=NAMES),
                  sim_command=[sys.executable, "sim_standin.py", "{seed}", "{nemesis}"], unit_timeout=20, jobs=1)


def test_family_seeds_kill_what_the_swarm_seeds_miss_and_the_report_shows_triage(project, tmp_path):
    quorum, swap, label = ("ukehi/calc.py:2:11:floordiv_plus1", "ukehi/calc.py:6:4:swap_if",
                           "ukehi/calc.py:12:7:cmp_flip")
    reg = Registry.from_data({"mutant": [
        {"file": "ukehi/calc.py", "operator": "swap_if", "text": "if k in d:", "category": "limit",
         "reason": "lookups of missing keys never happen here"},
        {"file": "ukehi/calc.py", "operator": "cmp_flip", "text": "if n > 1:", "category": "equivalent",
         "reason": "label is only printed"},
        {"file": "ukehi/calc.py", "operator": "drop_stmt", "text": "return 'gone'", "category": "equivalent",
         "reason": "stale"}]})
    lines: list[str] = []

    swarm = run_mutation(root=project, results_dir=str(tmp_path / "r1"), cfg=_cfg("0-2"), targets=["ukehi/calc.py"],
                         ids=[quorum], rev=None, say=lines.append, triage=Registry(()))
    assert swarm.results[0].sim.status == "survived"

    cfg = _cfg("0-2,stale-leader@0,figure-eight@0-2")
    outcome = run_mutation(root=project, results_dir=str(tmp_path / "r2"), cfg=cfg, targets=["ukehi/calc.py"],
                           ids=[quorum, swap, label], rev=None, say=lines.append, triage=reg)
    # the baseline's time per seed, the hung rule's reference, is kept per seed and nemesis
    assert set(cfg.sim_clean_seconds) == {"0", "1", "2", "stale-leader@0", "figure-eight@0", "figure-eight@1",
                                          "figure-eight@2"}
    by = {r.mutant.id: r for r in outcome.results}
    killed = by[quorum]
    assert killed.sim.status == "killed" and killed.sim.detail.startswith("sim seed figure-eight@1: killed")
    assert [(s["seed"], s.get("nemesis", "")) for s in killed.sim.runs][-2:] == [(0, "figure-eight"),
                                                                                (1, "figure-eight")]
    stored = json.loads((outcome.report_dir / "mutation.json").read_text())
    base_runs = stored["baseline"]["sim"]["runs"]
    assert len(base_runs) == 7 and [r.get("nemesis", "") for r in base_runs].count("figure-eight") == 3
    assert stored["sim"].endswith("for seeds 0-2,stale-leader@0,figure-eight@0-2")
    assert stored["triage"]["stale"] == ["ukehi/calc.py drop_stmt: \"return 'gone'\""]
    triage = {m["id"]: m["triage"] for m in stored["mutants"]}
    assert triage[swap] == {"category": "limit", "reason": "lookups of missing keys never happen here"}
    assert triage[quorum] is None
    figs = outcome.figures
    assert figs["harness_score"] == 1.0 and figs["survived"] == 2
    assert figs["survivors_triage"] == {"equivalent": 1, "performance": 0, "limit": 1, "untriaged": 0}
    md = (outcome.report_dir / "mutation.md").read_text()
    assert "| triage |" in md and "limit: lookups of missing keys never happen here" in md
    assert "stale (matches no mutant)" in md
    assert any(line.strip() == f"{label}  [equivalent: label is only printed]" for line in lines)
    assert any("stale triage entry" in line for line in lines)
    assert any("Without the 0 triaged equivalent: 100%" in line for line in lines)
    assert (project / "seeds-run.txt").exists() is False  # everything ran in copies


def test_the_default_budget_names_every_targeted_family_of_the_simulator():
    # simbudget restates the names (import cost at CLI start): a family added to the
    # simulator must join mutate's default budget too
    from harness.sim.runner import TARGETED

    assert set(TARGETED_FAMILIES) == set(TARGETED) and len(TARGETED_FAMILIES) == len(TARGETED)
