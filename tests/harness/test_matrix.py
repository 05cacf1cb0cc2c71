"""The CorruptionPolicy matrix: outcome rules on crafted results, and real cells per policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from checkers.history import Op
from harness.matrix import (Cell, availability, classify, markdown, parse_choices, plain_table, run_matrix,
                            write_matrix)


def op(index: int, process: Any, type_: str, f: str, value: Any = None) -> Op:
    return Op(index=index, time=index, process=process, type=type_, f=f, value=value)


def history(final: list[str], after_damage: list[str] = ("ok",)) -> list[Op]:
    """Some main-phase ops, one damage round, then the heal and final reads with the given results."""
    ops = [op(0, 0, "invoke", "write"), op(1, 0, "ok", "write"),
           op(2, "nemesis", "invoke", "corrupt-wal"), op(3, "nemesis", "info", "corrupt-wal", {"victims": ["n2"]})]
    i = 4
    for result in after_damage:
        ops += [op(i, 1, "invoke", "read"), op(i + 1, 1, result, "read")]
        i += 2
    ops += [op(i, "nemesis", "invoke", "disk-heal"), op(i + 1, "nemesis", "info", "disk-heal")]
    i += 2
    for result in final:
        ops += [op(i, 2, "invoke", "read"), op(i + 1, 2, result, "read")]
        i += 2
    return ops


def verdict(**valid: Any) -> dict[str, Any]:
    return {"valid": "unknown", "checkers": {n: {"valid": v, "explanation": f"{n} says {v}"}
                                             for n, v in valid.items()}}


def test_availability_counts_final_reads_after_the_heal_and_results_after_the_damage() -> None:
    avail = availability(history(["ok", "fail", "fail"], ["fail", "ok"]))
    assert avail == {"final_ok": 1, "final_total": 3, "after_damage_ok": 2, "after_damage_total": 5,
                     "damage_ops": 1}


@pytest.mark.parametrize("checks, final, expected", [
    ({"linearizable": True, "corruption-policy": True}, ["ok", "ok"], ("valid", ["corruption-policy", "linearizable"])),
    ({"linearizable": False, "corruption-policy": True}, ["ok"], ("invalid", ["linearizable"])),
    # lost data beats "could not serve": a wrong answer is worse than no answer
    ({"linearizable": True, "corruption-policy": False}, ["fail"], ("invalid", ["corruption-policy"])),
    ({"linearizable": True, "corruption-policy": True}, ["fail", "info"], ("unavailable", ["availability"])),
    ({"linearizable": "unknown", "corruption-policy": True}, ["ok"], ("unknown", ["linearizable"])),
])
def test_classify_orders_invalid_unavailable_unknown_valid(checks: dict[str, Any], final: list[str],
                                                           expected: tuple[str, list[str]]) -> None:
    result = verdict(**checks)
    result["valid"] = False if False in checks.values() else ("unknown" if "unknown" in checks.values() else True)
    assert classify(result, availability(history(final))) == expected


def test_without_final_reads_the_results_after_the_damage_decide_availability() -> None:
    ok = verdict(linearizable=True)
    ok["valid"] = True
    assert classify(ok, availability(history([], ["fail", "info"])))[0] == "unavailable"
    assert classify(ok, availability(history([], ["fail", "ok"])))[0] == "valid"


def test_a_crashing_cell_is_an_error_and_the_others_still_run() -> None:
    seen: list[str] = []

    def run_cell(policy: str, target: str, repeat: int) -> Cell:
        if (policy, target) == ("refuse-start", "one"):
            raise RuntimeError("backend exploded")
        return Cell(policy, target, "valid", ["linearizable"], "fine")

    cells = run_matrix(["refuse-start", "alert-and-continue"], ["one", "majority"], run_cell,
                       lambda c: seen.append(c.outcome))
    assert [(c.policy, c.target, c.outcome) for c in cells] == [
        ("refuse-start", "one", "error"), ("refuse-start", "majority", "valid"),
        ("alert-and-continue", "one", "valid"), ("alert-and-continue", "majority", "valid")]
    assert "backend exploded" in cells[0].summary and seen == ["error", "valid", "valid", "valid"]


def test_repeated_cells_show_the_worst_outcome_and_how_often_it_happened() -> None:
    outcomes = {0: "valid", 1: "invalid", 2: "valid"}

    def run_cell(policy: str, target: str, repeat: int) -> Cell:
        if target == "one" and repeat == 2:
            raise RuntimeError("backend exploded")
        return Cell(policy, target, outcomes[repeat], ["linearizable"], f"run {repeat}", f"/r/{repeat}")

    one, majority = run_matrix(["alert-and-continue"], ["one", "majority"], run_cell, repeats=3)
    assert majority.outcome == "invalid" and majority.label == "invalid (1 of 3)"
    assert majority.counts == {"valid": 2, "invalid": 1} and majority.run_dir == "/r/1"
    assert majority.summary.startswith("3 runs: 1 invalid, 2 valid; worst: run 1")
    assert [r["run_dir"] for r in majority.runs] == ["/r/0", "/r/1", "/r/2"]
    # A run the harness could not finish outranks any finding: that cell was not fully measured.
    assert one.label == "error (1 of 3)" and "backend exploded" in one.summary
    assert "| alert-and-continue | error (1 of 3) | invalid (1 of 3) |" in markdown([one, majority], "c", 5)
    with pytest.raises(ValueError, match="at least once"):
        run_matrix(["refuse-start"], ["one"], run_cell, repeats=0)


def test_tables_and_store(tmp_path: Path) -> None:
    cells = [Cell("refuse-start", "one", "valid", ["linearizable"], "refused to start: n2", "/r/1", ["n2"]),
             Cell("refuse-start", "majority", "unavailable", ["availability"], "final reads 0/8 ok | x", "/r/2",
                  ["n1", "n2"])]
    md = markdown(cells, "ukehi-jepsen matrix --policies refuse-start", 3)
    assert "| refuse-start | valid | unavailable |" in md
    assert "| refuse-start | majority | n1,n2 | unavailable | availability | final reads 0/8 ok \\| x |" in md
    assert "`ukehi-jepsen matrix --policies refuse-start`" in md
    crashed = Cell("alert-and-continue", "one", "error", ["harness"], "DBError: n1 exited\n  Traceback\n" + "x" * 900)
    rows = [r for r in markdown([crashed], "cmd", 3).splitlines() if r.startswith("| alert-and-continue | one")]
    assert len(rows) == 1 and "DBError: n1 exited Traceback" in rows[0] and len(rows[0]) < 600
    assert plain_table(cells).splitlines()[2].split()[:3] == ["refuse-start", "majority", "unavailable"]
    where = write_matrix(str(tmp_path), cells, "cmd", 3)
    data = json.loads((where / "matrix.json").read_text())
    assert [c["outcome"] for c in data["cells"]] == ["valid", "unavailable"]
    assert (tmp_path / "matrix" / "latest").resolve() == where.resolve()
    assert parse_choices("all", ("a", "b"), "--x") == ["a", "b"]
    with pytest.raises(ValueError, match="--targets 'one,leader'"):
        parse_choices("one,leader", ("one", "minority"), "--targets")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bad_matrix_arguments_exit_254_with_the_fix(tmp_path: Path) -> None:
    done = cli("matrix", "--policies", "refuse-start,yolo", "--results-dir", str(tmp_path))
    assert done.returncode == 254 and "--policies" in done.stderr and "refuse-start" in done.stderr


@pytest.mark.slow
def test_one_real_cell_per_policy_with_one_damaged_node(tmp_path: Path) -> None:
    done = cli("matrix", "--targets", "one", "--node-count", "3", "--time-limit", "8",
               "--nemesis-interval", "3", "--rate", "30", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "matrix" / "latest" / "matrix.json").read_text())
    cells = {c["policy"]: c for c in data["cells"]}
    assert set(cells) == {"refuse-start", "truncate-to-last-good", "alert-and-continue"}
    for policy, cell in cells.items():
        assert cell["availability"]["damage_ops"] >= 1, cell
        # Every node kept its policy's promise; the run is stored and re-checkable.
        assert cell["checkers"]["corruption-policy"] is True, (policy, cell)
        assert (Path(cell["run_dir"]) / "history.jsonl").is_file()
        assert len(cell["victims"]) == 1
    # RefuseStart on one node: the node stays down, the other two serve, nothing is lost.
    refuse = cells["refuse-start"]
    assert refuse["outcome"] == "valid" and "refused to start" in refuse["summary"], refuse
    results = json.loads((Path(refuse["run_dir"]) / "results.json").read_text())
    (victim,) = refuse["victims"]
    faults = results["checkers"]["corruption-policy"]["nodes"][victim]["faults"]
    assert faults[0]["observed"]["exit_code"] == 4
    # TruncateToLastGood on one node: cut, recovering, caught up from the leader; nothing lost.
    truncate = cells["truncate-to-last-good"]
    assert truncate["outcome"] == "valid" and "cut and recovering" in truncate["summary"], truncate
    # AlertAndContinue on one node: skipped and reported. Whether the hole costs acknowledged data
    # depends on which nodes held the entry: if it does, only the linearizability checker may say so.
    alert = cells["alert-and-continue"]
    assert "skipped bad entries" in alert["summary"], alert
    assert alert["outcome"] in ("valid", "invalid") and alert["decided_by"] != ["corruption-policy"]
    assert "| refuse-start | valid |" in (tmp_path / "matrix" / "latest" / "matrix.md").read_text()
